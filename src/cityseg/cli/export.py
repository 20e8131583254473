"""``cityseg export``: checkpoint -> ONNX (dynamic batch; ``--int8``: statically quantised), checked against PyTorch on onnxruntime."""

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
    parser.add_argument("--no-fold-bn", dest="fold_bn", action="store_false", help="keep BatchNorm layers that follow a convolution (default: folded)")
    parser.add_argument("--int8", action="store_true", help="write a statically quantised int8 model (QDQ, per-channel weights) calibrated on --calib-data")
    parser.add_argument("--calib-data", metavar="ROOT", default=None, help="dataset whose frames calibrate --int8 (default: $CITYSCAPES_DATASET)")
    parser.add_argument("--calib-split", default="train", help="split the calibration frames come from (default train)")
    parser.add_argument("--calib-frames", type=int, default=16, help="calibration frames, spread over the split (default 16)")


def run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from cityseg.infer.onnx import compare_onnx, export_onnx
    from cityseg.models import model_from_checkpoint

    model, ckpt = model_from_checkpoint(args.checkpoint)  # from the path, so every error names the file
    if args.int8:
        from cityseg.data import layout
        from cityseg.infer.quantize import calibration_frames, quantize_onnx

        calibration_frames(layout.resolve_root(args.calib_data), args.calib_split, args.calib_frames)  # a bad folder fails before the export
        with tempfile.TemporaryDirectory(prefix="cityseg-export-") as tmp:
            info = export_onnx(ckpt, Path(tmp) / "fp32.onnx", opset=args.opset, size=args.size, exporter=args.exporter, fold_bn=args.fold_bn)
            q = quantize_onnx(info["path"], args.out, args.calib_data, args.calib_split, args.calib_frames)
        info["path"] = q["path"]
    else:
        info = export_onnx(ckpt, args.out, opset=args.opset, size=args.size, exporter=args.exporter, fold_bn=args.fold_bn)
    h, w = info["input_size"]
    how = info["exporter"]
    if info["fallback_reason"]:
        how += f" (dynamo exporter failed: {info['fallback_reason']})"
    kind = f", int8 calibrated on {q['frames']} {args.calib_split} frame(s)" if args.int8 else ""
    print(f"wrote {info['path']}: {ckpt['model_name']}, input Bx3x{h}x{w}, opset {info['opset']}, exporter {how}{kind}")
    if not args.no_check:
        for batch, r in compare_onnx(model, info["path"], (h, w), batches=(1, 3)).items():
            print(f"check batch {batch}: max |logit diff| {r['max_abs_diff']:.3g}, argmax agreement {100 * r['argmax_agreement']:.4f}%")
    return 0
