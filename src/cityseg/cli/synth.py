"""``cityseg synth OUT``: generate the SynthCity dataset in the official Cityscapes layout."""

from __future__ import annotations

import argparse
import time

from cityseg.cli.args import size_arg
from cityseg.data import synth
from cityseg.runtime import default_workers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = synth.DEFAULT_COUNTS
    parser.add_argument("out", metavar="OUT", help="output folder (new, empty, or an earlier SynthCity folder)")
    parser.add_argument("--train", type=int, default=d["train"], metavar="N", help=f"train frames (default {d['train']})")
    parser.add_argument("--val", type=int, default=d["val"], metavar="N", help=f"val frames (default {d['val']})")
    parser.add_argument("--test", type=int, default=d["test"], metavar="N", help=f"test frames (default {d['test']})")
    h, w = synth.DEFAULT_SIZE
    parser.add_argument("--size", type=size_arg, default=synth.DEFAULT_SIZE, metavar="HxW", help=f"frame size (default {h}x{w}, the official resolution)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    parser.add_argument(
        "--randomize", action="store_true", help="domain randomisation: random material colours, textures and exposure instead of real-looking ones"
    )
    parser.add_argument(
        "--workers", type=int, default=None, metavar="W", help="worker processes (default: up to 4, one per CPU core; output does not depend on it)"
    )


def run(args: argparse.Namespace) -> int:
    workers = args.workers if args.workers is not None else default_workers()
    start = {"t": time.perf_counter()}

    def progress(split: str, done: int, total: int) -> None:
        if done == total:
            dt = time.perf_counter() - start["t"]
            print(
                f"{split}: {total} frames ({len({synth.frame_stem(split, i, total).split('_')[0] for i in range(total)})} "
                f"cities) written to {args.out} in {dt:.1f}s",
                flush=True,
            )
            start["t"] = time.perf_counter()

    h, w = args.size
    counts = synth.generate(
        args.out, train=args.train, val=args.val, test=args.test, size=(h, w), seed=args.seed, workers=workers, progress=progress, randomize=args.randomize
    )
    for split, n in counts.items():
        if n == 0:
            print(f"{split}: 0 frames", flush=True)
    return 0
