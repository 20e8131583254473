"""``cityseg check --data ROOT [--split S ...]``: validate a dataset, print pair counts and class shares."""

from __future__ import annotations

import argparse
import sys

from cityseg.cli.args import add_data_argument
from cityseg.data import layout


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_argument(parser)
    parser.add_argument("--split", action="append", choices=layout.SPLITS, default=None, help="split to check (repeatable; default: every split present)")
    parser.add_argument("--annotation", choices=layout.ANNOTATIONS, default="gtFine", help="fine or coarse annotations (default gtFine)")
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="decoding processes (default 2)")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the statistics as JSON")


def run(args: argparse.Namespace) -> int:
    from cityseg import io
    from cityseg.data.check import check_dataset

    stats = check_dataset(args.data, args.split, args.annotation, workers=args.workers, fail_fast=False, progress=sys.stderr.isatty())
    print(stats.format())
    if args.json:
        io.atomic_write_json(args.json, stats.to_dict())
    for problem in stats.problems:
        print(f"cityseg check: error: {problem}", file=sys.stderr)
    return 2 if stats.problems else 0
