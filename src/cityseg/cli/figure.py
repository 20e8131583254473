"""``cityseg figure``: the seed's results figure (input / ground truth / prediction rows); on a CamVid root in
CamVid's classes, as CamVid is scored."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cityseg.cli.args import add_data_argument

    parser.add_argument("--checkpoint", metavar="CKPT", required=True, help="cityseg checkpoint (.pt) or .onnx")
    add_data_argument(parser)
    parser.add_argument("--split", default="val", help="split to draw (default: val)")
    parser.add_argument("--n", type=int, default=32, help="number of frames, first in sorted order (default 32)")
    parser.add_argument("--out", metavar="FILE", required=True, help="image to write (.png, .jpg, .pdf, .svg)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")


def run(args: argparse.Namespace) -> int:
    from cityseg.infer.figure import results_figure

    path = results_figure(args.checkpoint, args.data, args.out, split=args.split, n=args.n, device=args.device)
    print(f"wrote {path}")
    return 0
