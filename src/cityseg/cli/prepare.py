"""``cityseg prepare --data ROOT --size HxW``: decode each split once into the memory-mapped cache."""

from __future__ import annotations

import argparse
import sys

from cityseg.cli.args import add_data_argument, size_arg
from cityseg.data import layout


def _size(text: str):
    return None if str(text).lower() == "full" else size_arg(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_argument(parser)
    parser.add_argument("--size", type=_size, default=(128, 256), metavar="HxW", help="training resolution, or 'full' (default 128x256)")
    parser.add_argument(
        "--split", action="append", choices=layout.SPLITS, default=None, help="split to prepare (repeatable; default: every labelled split present)"
    )
    parser.add_argument(
        "--interpolation", choices=("area", "bilinear"), default="area", help="image resize: area (seed README, default) or bilinear (seed code)"
    )
    parser.add_argument("--annotation", choices=layout.ANNOTATIONS, default="gtFine", help="fine or coarse annotations (default gtFine)")
    parser.add_argument("--cache-dir", metavar="DIR", default=None, help="cache location (default ROOT/.cityseg_cache, or the user cache if ROOT is read-only)")
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="decoding processes (default 2)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache is up to date")


def run(args: argparse.Namespace) -> int:
    from cityseg.data import cache
    from cityseg.errors import CitysegError

    root = layout.check_root(layout.resolve_root(args.data))
    splits = args.split or [s for s in layout.available_splits(root, args.annotation) if s != "test"]
    if not splits:
        raise CitysegError(f"{root}: no labelled splits found under {args.annotation}/")
    for split in splits:
        entry = cache.prepare(
            root, split, args.size, args.interpolation, args.annotation, args.cache_dir, workers=args.workers, force=args.force, progress=sys.stderr.isatty()
        )
        h, w = entry.shape
        mb = (entry.images_path.stat().st_size + entry.labels_path.stat().st_size) / 2**20
        print(f"{split}: {len(entry)} frames at {h}x{w} ({args.interpolation}) -> {entry.folder} ({mb:.1f} MB)")
    return 0
