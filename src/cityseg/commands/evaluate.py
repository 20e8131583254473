"""``cityseg evaluate``: official Cityscapes scores of a checkpoint or of a folder of labelId PNGs.

Prints a table (per-class IoU/iIoU, categories, means, the seed's 34-labelId numbers), writes the stable
JSON (``--json``) and ``confusion.png`` (row-normalised heatmap) next to it, both atomically.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from cityseg import io, labels
from cityseg.commands import add_data_argument
from cityseg.errors import CitysegError

SEED_NOTE = (
    "The seed's README reports 83% accuracy / 25% MeanIoU: Keras pixel accuracy and MeanIoU over all 34\n"
    "labelIds (void classes and pixels included, classes with an empty union skipped), i.e. the *_34 numbers\n"
    "above. They are inflated by void pixels and not comparable to the benchmark mIoU over 19 classes."
)


def _scales(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid scales {text!r}: expected e.g. 0.75,1,1.25") from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"invalid scales {text!r}: need positive numbers")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_argument(parser)
    parser.add_argument("--split", default="val", help="split to score (default: val)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", metavar="CKPT", help="predict every frame with this checkpoint (or .onnx)")
    src.add_argument("--pred-dir", metavar="DIR",
                     help="score existing labelId PNGs found by <city>_<seq>_<frame> stem (default: $CITYSCAPES_RESULTS)")
    parser.add_argument("--json", metavar="FILE", help="write the scores as JSON (confusion.png goes next to it)")
    parser.add_argument("--out", metavar="DIR", help="folder for confusion.png when --json is not given (default: cwd)")
    parser.add_argument("--at-model-size", action="store_true",
                        help="also score at the model's resolution against nearest-downsampled labels")
    parser.add_argument("--flip", action="store_true", help="test-time augmentation: horizontal flip")
    parser.add_argument("--scales", type=_scales, default=(1.0,), metavar="S1,S2,...",
                        help="test-time augmentation: input scales, e.g. 0.75,1,1.25 (default: 1)")
    parser.add_argument("--mode", choices=("whole", "slide"), default="whole", help="inference mode (default: whole)")
    parser.add_argument("--device", default="cpu", help="torch device for --checkpoint (default: cpu)")
    parser.add_argument("--workers", type=int, default=None, help="PNG decoding threads (default: up to 4)")
    parser.add_argument("--no-confusion", action="store_true", help="do not draw confusion.png")


def _pct(x: Any) -> str:
    return "    -" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * float(x):5.1f}"


def format_table(scores: dict[str, Any], title: str = "") -> str:
    """The readable report: classes, categories, means and the seed's 34-labelId numbers (percent)."""
    lines = [title] if title else []
    lines += [f"{'class':<15} {'IoU':>6} {'iIoU':>6}", "-" * 29]
    for name in labels.TRAINID_NAMES:
        lines.append(f"{name:<15} {_pct(scores['class_iou'][name]):>6} {_pct(scores['class_iiou'][name]):>6}")
    lines += ["-" * 29, f"{'mean (19)':<15} {_pct(scores['mIoU']):>6} {_pct(scores['iIoU']):>6}", ""]
    lines += [f"{'category':<15} {'IoU':>6} {'iIoU':>6}", "-" * 29]
    for cat in labels.CATEGORY_NAMES:
        lines.append(f"{cat:<15} {_pct(scores['category_iou'][cat]):>6} {_pct(scores['category_iiou'][cat]):>6}")
    lines += ["-" * 29, f"{'mean (7)':<15} {_pct(scores['mIoU_categories']):>6} {_pct(scores['iIoU_categories']):>6}", ""]
    lines.append(f"pixel accuracy (evaluated pixels): {_pct(scores['pixel_acc']).strip()}%   images: {scores['n_images']}")
    lines.append(f"seed-style, all 34 labelIds: mIoU_34 {_pct(scores['mIoU_34']).strip()}%,"
                 f" pixel_acc_34 {_pct(scores['pixel_acc_34']).strip()}%")
    return "\n".join(lines)


def confusion_figure(mat34: np.ndarray, path: str | os.PathLike, title: str = "") -> None:
    """Row-normalised confusion heatmap of the 19 evaluated classes (+ a 'void' column for predictions of
    ignored labelIds), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cityseg.metrics import EVAL_IDS, EVALUATED

    m = np.asarray(mat34, dtype=np.float64)
    rows = m[EVAL_IDS]
    mat = np.concatenate([rows[:, EVAL_IDS], rows[:, ~EVALUATED].sum(1, keepdims=True)], axis=1)
    total = mat.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(total > 0, mat / np.where(total > 0, total, 1), np.nan)
    names = list(labels.TRAINID_NAMES)
    fig, ax = plt.subplots(figsize=(10, 8.5), dpi=100)
    im = ax.imshow(norm, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(names) + 1), names + ["void"], rotation=90)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(title or "confusion matrix (rows normalised)")
    for i in range(norm.shape[0]):
        for j in range(norm.shape[1]):
            v = norm[i, j]
            if not np.isnan(v) and v >= 0.01:
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=6,
                        color="black" if v > 0.6 else "white")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from cityseg import evaluation

    pred_dir = args.pred_dir
    if args.checkpoint is None and pred_dir is None:
        pred_dir = os.environ.get("CITYSCAPES_RESULTS") or None
        if pred_dir is None:
            raise CitysegError("nothing to evaluate: pass --checkpoint CKPT or --pred-dir DIR (or set $CITYSCAPES_RESULTS)")
    if args.checkpoint is None and (args.at_model_size or args.flip or args.scales != (1.0,) or args.mode != "whole"):
        raise CitysegError("--at-model-size, --flip, --scales and --mode need --checkpoint (a model to run)")
    progress = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()

    small = None
    if args.checkpoint is not None:
        full, small, predictor = evaluation.score_checkpoint(
            args.data, args.split, args.checkpoint, at_model_size=args.at_model_size, flip=args.flip,
            scales=args.scales, mode=args.mode, device=args.device, workers=args.workers, progress=progress,
        )
        source = f"{args.checkpoint} ({predictor!r})"
    else:
        full = evaluation.score_pred_dir(args.data, args.split, pred_dir, workers=args.workers, progress=progress)
        source = str(pred_dir)

    scores = full.scores()
    print(format_table(scores, f"Cityscapes {args.split}, {source}: full size, official protocol"))
    if small is not None:
        print()
        print(format_table(small.scores(), "at model size (labels nearest-downsampled)"))
    print()
    print(SEED_NOTE)

    json_path = Path(args.json) if args.json else None
    folder = json_path.parent if json_path else Path(args.out or ".")
    if not args.no_confusion:
        confusion_figure(full.mat, folder / "confusion.png", f"{args.split}: confusion (rows normalised), mIoU"
                         f" {_pct(scores['mIoU']).strip()}%")
    if json_path is not None:
        io.atomic_write_json(json_path, _strict(full.results()))
        written = [str(json_path)]
        if small is not None:
            extra = json_path.with_name(f"{json_path.stem}_model_size.json")
            io.atomic_write_json(extra, _strict(small.results()))
            written.append(str(extra))
        print(f"wrote {', '.join(written)}", file=sys.stderr)
    return 0


def _strict(obj: Any) -> Any:
    """NaN / inf -> None recursively, so the JSON is valid (``results()`` already does this; belt and braces)."""
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
