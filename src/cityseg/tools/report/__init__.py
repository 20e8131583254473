"""The run report: one static page that shows a whole training run (``cityseg report RUN_DIR``).

``run_files`` reads the run folder, ``frames`` scores and draws single frames, ``gather`` turns the scores
into the page's data, ``charts`` and ``page`` render it (inline SVG, CSS and JS), ``build`` writes it all
atomically. The page opens from disk, offline.
"""

from cityseg.tools.report.build import DEFAULT_FRAMES, report_path, write_report
from cityseg.tools.report.frames import FrameCollector

__all__ = ["DEFAULT_FRAMES", "FrameCollector", "report_path", "write_report"]
