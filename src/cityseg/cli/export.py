"""``cityseg export``: checkpoint -> ONNX (dynamic batch), checked against PyTorch on onnxruntime."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cityseg.cli.args import size_arg

    parser.add_argument("--checkpoint", metavar="CKPT", required=True, help="cityseg checkpoint (.pt)")
    parser.add_argument("--out", metavar="FILE", required=True, help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18, the dynamo exporter's own)")
    parser.add_argument("--size", type=size_arg, default=None, metavar="HxW", help="input size (default: the checkpoint's training size)")
    parser.add_argument(
        "--exporter", choices=("auto", "dynamo", "torchscript"), default="auto", help="auto: dynamo, falling back to the TorchScript exporter if it fails"
    )
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime vs PyTorch comparison")


def run(args: argparse.Namespace) -> int:
    from cityseg.infer.onnx import compare_onnx, export_onnx
    from cityseg.models import model_from_checkpoint

    model, ckpt = model_from_checkpoint(args.checkpoint)  # from the path, so every error names the file
    info = export_onnx(ckpt, args.out, opset=args.opset, size=args.size, exporter=args.exporter)
    h, w = info["input_size"]
    how = info["exporter"]
    if info["fallback_reason"]:
        how += f" (dynamo exporter failed: {info['fallback_reason']})"
    print(f"wrote {info['path']}: {ckpt['model_name']}, input Bx3x{h}x{w}, opset {info['opset']}, exporter {how}")
    if not args.no_check:
        for batch, r in compare_onnx(model, info["path"], (h, w), batches=(1, 3)).items():
            print(f"check batch {batch}: max |logit diff| {r['max_abs_diff']:.3g}, argmax agreement {100 * r['argmax_agreement']:.4f}%")
    return 0
