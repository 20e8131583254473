"""``cityseg benchmark``: train / inference / loading throughput against the machine's matmul roof."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable

from cityseg.cli.args import size_arg
from cityseg.errors import CitysegError

#: options whose destination differs from the ``BenchConfig`` field they set
CONFIG_FIELDS = {"data": "data_root", "roof_size": "roof_max_n"}


def _csv(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in _csv(text)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_measurement_options(parser)
    _add_section_options(parser)
    _add_output_options(parser)


def _add_measurement_options(parser: argparse.ArgumentParser) -> None:
    """What is measured, at which size, how often and where."""
    from cityseg.tools.benchmark import DEFAULT_MODELS, SKIPPABLE

    add = parser.add_argument
    add("--models", type=_csv, default=list(DEFAULT_MODELS), metavar="A,B", help=f"comma-separated model names (default: {','.join(DEFAULT_MODELS)})")
    add("--size", type=size_arg, default=(128, 256), metavar="HxW", help="input size (default 128x256)")
    add("--batch", type=int, default=16, help="training batch and loader batch (default 16)")
    add("--infer-batch", type=int, default=None, help="inference batch (default: 4 on CPU, where small batches are faster; --batch on CUDA)")
    add("--iters", type=int, default=5, help="timed repetitions; the median is reported (default 5)")
    add("--warmup", type=int, default=2, help="untimed repetitions first (default 2)")
    add("--skip", type=_csv, default=[], metavar="A,B", help=f"measurements to skip: {','.join(SKIPPABLE)}")
    add("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    add("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    add("--data", metavar="ROOT", default=None, help="dataset for the loader and full-res figures (default: generate full-size SynthCity)")
    add("--loader-images", type=int, default=6, help="images for the loader figures (default 6)")
    add("--roof-size", type=int, default=None, metavar="N", help="largest square matmul side for the roof (default 4096 on CPU, 8192 on CUDA)")
    add("--work-dir", default=None, help="keep synthetic data, caches and ONNX files here")
    add("--no-isolate", dest="isolate", action="store_false", help="measure every model in this process (peak RSS is then cumulative)")


def _add_section_options(parser: argparse.ArgumentParser) -> None:
    """The sections beyond the main table: evaluation speed, int8 quality, roofline, the training data path."""
    add = parser.add_argument
    add(
        "--eval-images",
        type=int,
        default=12,
        help="full-size SynthCity val frames for timing `cityseg evaluate --pred-dir` against the "
        "official cityscapesScripts evaluator (default 12; --skip eval to leave it out)",
    )
    add(
        "--int8-checkpoints",
        type=_csv,
        default=[],
        metavar="A.pt,B.pt",
        help="trained checkpoints whose int8 export is scored against fp32 onnxruntime (val mIoU change, img/s) on --int8-data",
    )
    add("--int8-data", metavar="ROOT", default=None, help="dataset for --int8-checkpoints: train calibrates, val scores (default: $CITYSCAPES_DATASET)")
    add("--int8-limit", type=int, default=None, metavar="N", help="val frames scored for --int8-checkpoints (default: all)")
    add(
        "--roofline",
        action="store_true",
        help="also place each model's inference on the roofline at --roofline-size, batch 1: FLOPs, bytes moved, "
        "FLOP/byte, achieved vs attainable GFLOP/s, time per layer type (a few forward passes per model)",
    )
    add("--roofline-size", type=size_arg, default=(1024, 2048), metavar="HxW", help="input size of the roofline section (default 1024x2048)")
    add(
        "--augment-crop",
        type=size_arg,
        default=(1024, 1024),
        metavar="HxW",
        help="crop of the training data-path section (the real-time recipes' 1024x1024 by default; --skip augment to leave it out)",
    )
    add("--augment-workers", type=_ints, default=[0, 1, 2], metavar="0,1,2", help="DataLoader worker counts timed (default 0,1,2)")
    add("--augment-images", type=int, default=16, help="samples per timed pass of the data-path section (default 16)")


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    """Where the results go."""
    add = parser.add_argument
    add("--json", metavar="FILE", default=None, help="write the results as JSON")
    add("--markdown", metavar="FILE", default=None, help="write the table + targets into FILE (between the benchmark markers; the rest is kept)")
    add("--plot", metavar="FILE.png", default=None, help="bar chart: img/s per model, baseline vs fast")
    add(
        "--profile",
        action="store_true",
        help="also split a fast-path train step's time by operator type (torch.profiler) for each "
        "model; models with multi-branch blocks are profiled fused and per-branch",
    )
    add("--quiet", action="store_true", help="no progress lines")


def config_from_args(args: argparse.Namespace):
    """The ``BenchConfig`` the options describe (every config field has an option of the same name)."""
    from cityseg.tools.benchmark import BenchConfig

    names = {CONFIG_FIELDS.get(k, k): k for k in vars(args)}
    values = {f.name: getattr(args, names[f.name]) for f in dataclasses.fields(BenchConfig)}
    values.update(size=tuple(args.size), skip=frozenset(args.skip), roofline_size=tuple(args.roofline_size), augment_crop=tuple(args.augment_crop))
    if args.roof_size is not None and args.roof_size < 64:
        raise CitysegError(f"--roof-size must be >= 64; got {args.roof_size}")
    if args.plot and not str(args.plot).lower().endswith(".png"):
        raise CitysegError(f"{args.plot}: --plot writes a PNG file; name it *.png")
    return BenchConfig(**values)


def profiles_markdown(cfg, iters: int, log: Callable[[str], None]) -> str:
    """``--profile``: a fast-path train step's time by operator type for each model (fused and per-branch)."""
    from cityseg.tools import benchmark as B

    profiles = []
    device = str(B.resolve_device(cfg.device))
    for name in cfg.models:
        log(f"profiling {name} ...")
        try:
            variants = (True, False) if B.has_fused_path(B.build(name, cfg.size)) else (None,)
            for fused in variants:
                profiles.append(B.profile_model(name, cfg.size, cfg.batch, fast=True, fused=fused, steps=max(1, min(iters, 3)), device=device))
        except CitysegError as e:
            log(f"  {name}: {e}")
    return "\n" + B.profile_markdown(profiles) if profiles else ""


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from cityseg.io import atomic_write_json
    from cityseg.tools import benchmark as B

    cfg = config_from_args(args)

    def log(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    result = B.run_benchmark(cfg, log=log)
    if args.json:
        atomic_write_json(args.json, B.result_json(result))
    plot_ref = None
    if args.plot:
        B.plot(result, args.plot)
        if args.markdown:
            plot_ref = os.path.relpath(Path(args.plot).resolve(), Path(args.markdown).resolve().parent)
    text = B.markdown(result, plot=plot_ref)
    if args.profile:
        text += profiles_markdown(cfg, args.iters, log)
    if args.markdown:
        B.write_markdown(args.markdown, text)
    print(text, end="")
    return 0
