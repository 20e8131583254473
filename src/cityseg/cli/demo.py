"""``cityseg demo [--out DIR] [--minutes N] [--json FILE]``: the main job, end to end, in a time budget.

SynthCity into OUT/data (reused when already there), cache, training (lite0_fpn, ImageNet-pretrained, with the cpu-fast-real recipe
by default; ``--model residual_unet --config seed`` is the seed's Model A and recipe) in a fresh run folder
OUT/runs/NNN (every invocation gets a new one; earlier runs are kept), official full-resolution evaluation on
val, labelId + colour predictions, the results figure, a summary and the run report (its path printed last).
"""

from __future__ import annotations

import argparse

from cityseg.cli.args import size_arg
from cityseg.tools import demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", metavar="DIR", default=str(demo.DEFAULT_OUT), help=f"demo folder: DIR/data (SynthCity) and DIR/runs/NNN (default ./{demo.DEFAULT_OUT})"
    )
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the summary (mIoU, pixel_acc, run_dir, figure, ...) to FILE")
    parser.add_argument("--data", metavar="ROOT", default=None, help="use this Cityscapes-layout dataset instead of generating SynthCity into DIR/data")
    parser.add_argument("--model", default=demo.DEFAULT_MODEL, metavar="NAME", help=f"model to train (`cityseg models`; default {demo.DEFAULT_MODEL})")
    parser.add_argument(
        "--config",
        metavar="RECIPE",
        default=demo.DEFAULT_RECIPE,
        help=f"shipped recipe name or a TOML file (default {demo.DEFAULT_RECIPE}; seed = the seed's recipe)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of SynthCity and of training (default 0)")
    parser.add_argument(
        "--batch-size", type=int, default=None, help=f"training batch (default: the recipe's; {demo.DEMO_BATCH_SIZE} with the seed recipe, whose own is 16)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="cap on the epochs (default: none; the time budget decides)")
    parser.add_argument("--train-minutes", type=float, default=None, metavar="N", help="fixed training time instead of what the budget leaves")
    parser.add_argument("--size", type=size_arg, default=None, metavar="HxW", help="training size (default: the recipe's)")
    h, w = demo.DEFAULT_FRAME_SIZE
    for flag, kind, default, metavar, text in (
        ("--minutes", float, demo.DEFAULT_MINUTES, "N", f"wall-clock budget of the whole demo; training gets the rest (default {demo.DEFAULT_MINUTES:g})"),
        ("--grad-clip", float, None, "NORM", "max global gradient norm (default: the recipe's; 0 = off)"),
        ("--train-frames", int, None, "N", "SynthCity train frames when generating (default: scaled to the budget)"),
        ("--val-frames", int, None, "N", "SynthCity val frames when generating (default: scaled to the budget, 20 to 50)"),
        ("--frame-size", size_arg, demo.DEFAULT_FRAME_SIZE, "HxW", f"SynthCity val frame size when generating (default {h}x{w}, the official one)"),
        ("--figure-rows", int, demo.FIGURE_ROWS, "N", f"val frames in the results figure (default {demo.FIGURE_ROWS})"),
        ("--report-frames", int, demo.REPORT_FRAMES, "N", f"worst val frames in the report's gallery (default {demo.REPORT_FRAMES})"),
    ):
        parser.add_argument(flag, type=kind, default=default, metavar=metavar, help=text)
    parser.add_argument("--workers", type=int, default=None, help="processes for generation, checks and cache")
    parser.add_argument(
        "--since",
        type=float,
        default=None,
        metavar="T",
        help="the budget started at T (seconds since the epoch, as `date +%%s`), not now: `make demo` passes its own start, so setup counts",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    options = demo.DemoOptions(
        out=args.out,
        minutes=args.minutes,
        data=args.data,
        model=args.model,
        recipe=args.config,
        seed=args.seed,
        train_frames=args.train_frames,
        val_frames=args.val_frames,
        frame_size=args.frame_size,
        batch_size=args.batch_size,
        grad_clip=args.grad_clip,
        size=args.size,
        epochs=args.epochs,
        train_minutes=args.train_minutes,
        figure_rows=args.figure_rows,
        report_frames=args.report_frames,
        json_path=args.json,
        workers=args.workers,
        progress=not args.quiet,
        started_at=args.since,
    )
    from cityseg.tools.demo.run import run_options

    run_options(options, log=lambda line: print(line, flush=True))
    return 0
