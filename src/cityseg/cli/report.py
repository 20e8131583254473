"""``cityseg report RUN_DIR``: one static page that shows a training run: scores, curves, per-class charts,
the worst frames, the config. Opens from disk, offline; re-running replaces it whole."""

from __future__ import annotations

import argparse
import sys

from cityseg.cli.args import add_data_argument
from cityseg.tools.report import DEFAULT_FRAMES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `cityseg train` or `cityseg demo` (metrics.csv, config.toml, best.pt)")
    add_data_argument(parser)
    parser.epilog = "--data defaults to the dataset the run recorded (its environment.json, or the demo's summary.json)."
    parser.add_argument("--split", default="val", help="split to score and show (default: val)")
    parser.add_argument(
        "--out", metavar="FILE.html", default=None, help="the page (default: RUN_DIR/report/index.html; pictures go to <name>_files/ beside it)"
    )
    parser.add_argument("--n", type=int, default=DEFAULT_FRAMES, metavar="N", help=f"frames in the gallery, worst first (default: {DEFAULT_FRAMES})")
    parser.add_argument("--checkpoint", metavar="CKPT", default=None, help="checkpoint to score (default: RUN_DIR/best.pt, else last.pt)")


def run(args: argparse.Namespace) -> int:
    from cityseg.tools.report import write_report

    progress = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    page = write_report(
        args.run_dir,
        data=args.data,
        split=args.split,
        out=args.out,
        n=args.n,
        checkpoint=args.checkpoint,
        progress=progress,
        log=lambda s: print(s, file=sys.stderr),
    )
    print(page)
    return 0
