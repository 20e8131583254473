"""``cityseg benchmark``: train / inference / loading throughput against the machine's matmul roof."""

from __future__ import annotations

import argparse
import sys

from cityseg.cli.args import size_arg
from cityseg.errors import CitysegError


def _csv(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cityseg.tools.benchmark import DEFAULT_MODELS, SKIPPABLE

    parser.add_argument(
        "--models", type=_csv, default=list(DEFAULT_MODELS), metavar="A,B", help=f"comma-separated model names (default: {','.join(DEFAULT_MODELS)})"
    )
    parser.add_argument("--size", type=size_arg, default=(128, 256), metavar="HxW", help="input size (default 128x256)")
    parser.add_argument("--batch", type=int, default=16, help="training batch and loader batch (default 16)")
    parser.add_argument("--infer-batch", type=int, default=None, help="inference batch (default: 4 on CPU, where small batches are faster; --batch on CUDA)")
    parser.add_argument("--iters", type=int, default=5, help="timed repetitions; the median is reported (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repetitions first (default 2)")
    parser.add_argument("--skip", type=_csv, default=[], metavar="A,B", help=f"measurements to skip: {','.join(SKIPPABLE)}")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--data", metavar="ROOT", default=None, help="dataset for the loader and full-res figures (default: generate full-size SynthCity)")
    parser.add_argument("--loader-images", type=int, default=6, help="images for the loader figures (default 6)")
    parser.add_argument(
        "--eval-images",
        type=int,
        default=12,
        help="full-size SynthCity val frames for timing `cityseg evaluate --pred-dir` against the "
        "official cityscapesScripts evaluator (default 12; --skip eval to leave it out)",
    )
    parser.add_argument("--roof-size", type=int, default=None, metavar="N", help="largest square matmul side for the roof (default 4096 on CPU, 8192 on CUDA)")
    parser.add_argument("--work-dir", default=None, help="keep synthetic data, caches and ONNX files here")
    parser.add_argument("--no-isolate", dest="isolate", action="store_false", help="measure every model in this process (peak RSS is then cumulative)")
    parser.add_argument("--json", metavar="FILE", default=None, help="write the results as JSON")
    parser.add_argument(
        "--markdown", metavar="FILE", default=None, help="write the table + targets into FILE (between the benchmark markers; the rest is kept)"
    )
    parser.add_argument("--plot", metavar="FILE.png", default=None, help="bar chart: img/s per model, baseline vs fast")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also split a fast-path train step's time by operator type (torch.profiler) for each "
        "model; models with multi-branch blocks are profiled fused and per-branch",
    )
    parser.add_argument(
        "--int8-checkpoints",
        type=_csv,
        default=[],
        metavar="A.pt,B.pt",
        help="trained checkpoints whose int8 export is scored against fp32 onnxruntime (val mIoU change, img/s) on --int8-data",
    )
    parser.add_argument(
        "--int8-data", metavar="ROOT", default=None, help="dataset for --int8-checkpoints: train calibrates, val scores (default: $CITYSCAPES_DATASET)"
    )
    parser.add_argument("--int8-limit", type=int, default=None, metavar="N", help="val frames scored for --int8-checkpoints (default: all)")
    parser.add_argument(
        "--roofline",
        action="store_true",
        help="also place each model's inference on the roofline at --roofline-size, batch 1: FLOPs, bytes moved, "
        "FLOP/byte, achieved vs attainable GFLOP/s, time per layer type (a few forward passes per model)",
    )
    parser.add_argument("--roofline-size", type=size_arg, default=(1024, 2048), metavar="HxW", help="input size of the roofline section (default 1024x2048)")
    parser.add_argument(
        "--augment-crop",
        type=size_arg,
        default=(1024, 1024),
        metavar="HxW",
        help="crop of the training data-path section (the real-time recipes' 1024x1024 by default; --skip augment to leave it out)",
    )
    parser.add_argument(
        "--augment-workers", type=lambda t: [int(v) for v in _csv(t)], default=[0, 1, 2], metavar="0,1,2", help="DataLoader worker counts timed (default 0,1,2)"
    )
    parser.add_argument("--augment-images", type=int, default=16, help="samples per timed pass of the data-path section (default 16)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from cityseg.io import atomic_write_json
    from cityseg.tools import benchmark as B

    cfg = B.BenchConfig(
        models=args.models,
        size=tuple(args.size),
        batch=args.batch,
        infer_batch=args.infer_batch,
        iters=args.iters,
        warmup=args.warmup,
        skip=frozenset(args.skip),
        device=args.device,
        threads=args.threads,
        data_root=args.data,
        loader_images=args.loader_images,
        eval_images=args.eval_images,
        isolate=args.isolate,
        work_dir=args.work_dir,
        roof_max_n=args.roof_size,
        int8_checkpoints=args.int8_checkpoints,
        int8_data=args.int8_data,
        int8_limit=args.int8_limit,
        roofline=args.roofline,
        roofline_size=tuple(args.roofline_size),
        augment_crop=tuple(args.augment_crop),
        augment_workers=args.augment_workers,
        augment_images=args.augment_images,
    )
    if args.roof_size is not None and args.roof_size < 64:
        raise CitysegError(f"--roof-size must be >= 64; got {args.roof_size}")
    if args.plot and not str(args.plot).lower().endswith(".png"):
        raise CitysegError(f"{args.plot}: --plot writes a PNG file; name it *.png")

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
        profiles = []
        device = str(B.resolve_device(cfg.device))
        for name in cfg.models:
            log(f"profiling {name} ...")
            try:
                variants = (True, False) if B.has_fused_path(B.build(name, cfg.size)) else (None,)
                for fused in variants:
                    profiles.append(B.profile_model(name, cfg.size, cfg.batch, fast=True, fused=fused, steps=max(1, min(args.iters, 3)), device=device))
            except CitysegError as e:
                log(f"  {name}: {e}")
        if profiles:
            text += "\n" + B.profile_markdown(profiles)
    if args.markdown:
        B.write_markdown(args.markdown, text)
    print(text, end="")
    return 0
