"""``write_report``: score a run's checkpoint on a split, draw its worst frames, write the page.

The page, its JSON and its pictures are replaced as a whole: pictures take content-derived names in
``<name>_files/`` and are written before the page (each through ``io.atomic_path``), the page is renamed
into place last, and only then are pictures no page refers to removed. A reader of the old page keeps
seeing a complete page until the new one replaces it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cityseg.checkpoint import load_checkpoint
from cityseg.data.layout import require_samples, resolve_root
from cityseg.errors import CitysegError
from cityseg.eval.evaluate import score_checkpoint
from cityseg.eval.metrics import CityscapesEvaluator
from cityseg.io import atomic_write_bytes, atomic_write_json, atomic_write_text, prepare_target
from cityseg.runtime import environment as current_environment
from cityseg.tools.report.frames import FrameCollector, content_name, frame_panels, worst_first
from cityseg.tools.report.gather import report_data
from cityseg.tools.report.page import render_page
from cityseg.tools.report.run_files import RunFiles, read_run

DEFAULT_FRAMES = 48
PAGE = Path("report") / "index.html"


def report_path(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Where the page goes: ``out`` (a ``.html`` file, or a folder for its ``index.html``), by default
    ``RUN_DIR/report/index.html``."""
    if out is None:
        return Path(run_dir) / PAGE
    out = Path(out)
    return out if out.suffix.lower() in (".html", ".htm") else out / "index.html"


def dataset_root(run: RunFiles, data: str | os.PathLike | None) -> Path:
    """``data`` if given, else the dataset the run recorded (the demo's summary, the training environment),
    else ``$CITYSCAPES_DATASET`` / ``./data/cityscapes``."""
    if data is None and run.summary:
        data = (run.summary.get("data") or {}).get("root")
    if data is None and run.environment:
        data = run.environment.get("data_root")
    return resolve_root(data)


def write_report(
    run_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    split: str = "val",
    out: str | os.PathLike | None = None,
    n: int = DEFAULT_FRAMES,
    checkpoint: str | os.PathLike | None = None,
    predictor: Any = None,
    scored: tuple[CityscapesEvaluator, FrameCollector] | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Write the report of ``run_dir`` and return the page's path.

    The checkpoint (``best.pt``, else ``last.pt``, or ``checkpoint``) is scored on ``split`` of ``data`` with
    the official protocol, unless ``scored`` passes an evaluation already made with a ``FrameCollector`` as
    its ``on_frame`` (the demo and ``cityseg evaluate`` do). ``n`` worst frames go into the gallery.
    """
    if not isinstance(n, int) or n < 1:
        raise CitysegError(f"--n must be a positive integer, got {n}")
    page = prepare_target(report_path(run_dir, out), "the report page")
    run = read_run(run_dir, checkpoint)
    root = dataset_root(run, data)
    require_samples(root, split)  # a missing split or frame fails here, before any scoring
    ckpt = load_checkpoint(run.checkpoint)
    if scored is None:
        from cityseg.infer.predictor import Predictor

        predictor = predictor if predictor is not None else Predictor.from_checkpoint(ckpt)
        collector = FrameCollector()
        log(f"scoring {run.checkpoint} on {root} {split} for the report")
        full, _, _ = score_checkpoint(root, split, None, predictor=predictor, on_frame=collector, progress=progress)
    else:
        full, collector = scored
    shown = worst_first(collector.frames)[:n]

    files_dir = page.parent / f"{page.stem}_files"
    pictures: dict[str, dict[str, str]] = {}
    keep: set[str] = set()
    for frame in shown:
        pictures[frame.stem] = {}
        for panel, (blob, suffix) in frame_panels(frame).items():
            name = content_name(blob, suffix)
            if not (files_dir / name).is_file():
                atomic_write_bytes(files_dir / name, blob)
            keep.add(name)
            pictures[frame.stem][panel] = f"{files_dir.name}/{name}"

    env = run.environment or {**current_environment(), "note": "the run recorded no environment.json; this is the machine that wrote the report"}
    info = report_data(run, ckpt, root, split, full, collector.frames, shown, pictures, env)
    atomic_write_json(page.with_suffix(".json"), info)
    atomic_write_text(page, render_page(info))
    if files_dir.is_dir():
        for old in files_dir.iterdir():
            if old.is_file() and old.name not in keep:
                old.unlink(missing_ok=True)
    return page
