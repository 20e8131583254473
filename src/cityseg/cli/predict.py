"""``cityseg predict``: labelId PNGs for the test server, colour maps and overlays."""

from __future__ import annotations

import argparse
from pathlib import Path

from cityseg.errors import CitysegError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cityseg.cli.args import scales_arg

    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="CKPT", help="cityseg checkpoint (.pt)")
    src.add_argument("--onnx", metavar="MODEL", help="ONNX file written by `cityseg export` (runs on onnxruntime)")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive) or globs")
    parser.add_argument("--out", metavar="DIR", default=None, help="folder for the labelId PNGs (default: $CITYSCAPES_RESULTS); holds nothing else")
    parser.add_argument("--format", default="labelIds", metavar="LIST", help="comma-separated: labelIds, color, overlay (default: labelIds)")
    parser.add_argument("--vis-dir", metavar="DIR", default=None, help="folder for colour maps and overlays (default: OUT_vis beside --out)")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the colours (default 0.5)")
    parser.add_argument("--flip", action="store_true", help="horizontal-flip test-time augmentation")
    parser.add_argument(
        "--scales", type=scales_arg, default=(1.0,), metavar="S1,S2,...", help="multi-scale test-time augmentation, e.g. 0.75,1,1.25 (default: 1)"
    )
    parser.add_argument(
        "--mode",
        choices=("whole", "slide"),
        default=None,
        help="whole image at the model's input size, or sliding windows at full resolution (default: the model's own; whole for all but residual_unet_attn)",
    )
    parser.add_argument("--window", default=None, metavar="HxW", help="slide window (default: the input size)")
    parser.add_argument("--stride", default=None, metavar="HxW", help="slide stride (default: 2/3 of the window)")
    parser.add_argument("--batch-size", type=int, default=1, help="windows per forward pass in slide mode")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast + channels_last (CPU)")
    parser.add_argument(
        "--fast", choices=("auto", "off"), default="off", help="auto: the variant a short timed trial picks for this model and CPU (cached; BN folded)"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--expect-model", default=None, metavar="NAME", help="fail unless the checkpoint holds this model")
    parser.add_argument("--expect-label-mode", choices=("labelIds", "trainIds"), default=None, help="fail unless the checkpoint was trained on this label mode")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from cityseg.cli.args import parse_size
    from cityseg.infer.outputs import check_formats, default_out, predict_files
    from cityseg.infer.predictor import Predictor

    formats = check_formats(args.format)
    out = Path(args.out) if args.out else default_out()
    if out is None:
        raise CitysegError("no output folder: pass --out DIR or set $CITYSCAPES_RESULTS")
    options = dict(
        flip=args.flip,
        scales=tuple(args.scales),
        mode=args.mode,
        batch_size=args.batch_size,
        window=parse_size(args.window) if args.window else None,
        stride=parse_size(args.stride) if args.stride else None,
        expect_model=args.expect_model,
        expect_label_mode=args.expect_label_mode,
    )
    if args.onnx:
        predictor = Predictor.from_onnx(args.onnx, **options)
    else:
        fast = "auto" if args.fast == "auto" else None
        predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, bf16=args.bf16, channels_last=args.bf16, fast=fast, **options)
    progress = None
    if not args.quiet:
        from tqdm import tqdm

        progress = lambda items: tqdm(items, desc="predict", unit="img")  # noqa: E731
    written = predict_files(predictor, args.inputs, out, formats, vis_dir=args.vis_dir, alpha=args.alpha, progress=progress)
    kinds = sorted({k for w in written for k in w})
    folders = sorted({str(p.parent) for w in written for p in w.values()})
    print(f"wrote {len(written)} image(s) x {', '.join(kinds)} to {', '.join(folders)}")
    return 0
