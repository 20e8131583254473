"""How scores are shown: the per-class table printed by ``cityseg evaluate`` and the confusion heatmap."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from cityseg import io, labels

SEED_NOTE = (
    "The seed's README reports 83% accuracy / 25% MeanIoU: Keras pixel accuracy and MeanIoU over all 34\n"
    "labelIds (void classes and pixels included, classes with an empty union skipped), i.e. the *_34 numbers\n"
    "above. They are inflated by void pixels and not comparable to the benchmark mIoU over 19 classes."
)


def percent(x: Any) -> str:
    return "    -" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * float(x):5.1f}"


def format_table(scores: dict[str, Any], title: str = "") -> str:
    """The readable report: classes, categories, means and the seed's 34-labelId numbers (percent)."""
    lines = [title] if title else []
    lines += [f"{'class':<15} {'IoU':>6} {'iIoU':>6}", "-" * 29]
    for name in labels.TRAINID_NAMES:
        lines.append(f"{name:<15} {percent(scores['class_iou'][name]):>6} {percent(scores['class_iiou'][name]):>6}")
    lines += ["-" * 29, f"{'mean (19)':<15} {percent(scores['mIoU']):>6} {percent(scores['iIoU']):>6}", ""]
    lines += [f"{'category':<15} {'IoU':>6} {'iIoU':>6}", "-" * 29]
    for cat in labels.CATEGORY_NAMES:
        lines.append(f"{cat:<15} {percent(scores['category_iou'][cat]):>6} {percent(scores['category_iiou'][cat]):>6}")
    lines += ["-" * 29, f"{'mean (7)':<15} {percent(scores['mIoU_categories']):>6} {percent(scores['iIoU_categories']):>6}", ""]
    lines.append(f"pixel accuracy (evaluated pixels): {percent(scores['pixel_acc']).strip()}%   images: {scores['n_images']}")
    lines.append(f"seed-style, all 34 labelIds: mIoU_34 {percent(scores['mIoU_34']).strip()}%, pixel_acc_34 {percent(scores['pixel_acc_34']).strip()}%")
    return "\n".join(lines)


def format_camvid_table(scores: dict[str, Any], title: str = "") -> str:
    """The CamVid report: IoU of the 11 classes, their mean and the pixel accuracy (percent)."""
    lines = [title] if title else []
    lines += [f"{'class':<15} {'IoU':>6}", "-" * 22]
    lines += [f"{name:<15} {percent(scores['class_iou'][name]):>6}" for name in labels.CAMVID_NAMES]
    lines += ["-" * 22, f"{'mean (11)':<15} {percent(scores['mIoU']):>6}", ""]
    lines.append(f"pixel accuracy (non-void pixels): {percent(scores['pixel_acc']).strip()}%   images: {scores['n_images']}")
    return "\n".join(lines)


def confusion_rows(mat34: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 19 evaluated classes' rows of a 34x34 labelId confusion matrix, with one last "void" column for
    predictions of ignored labelIds: (counts 19x20 int64, row-normalised float64 with NaN for empty rows)."""
    from cityseg.eval.metrics import EVAL_IDS, EVALUATED

    m = np.asarray(mat34, dtype=np.int64)
    rows = m[EVAL_IDS]
    counts = np.concatenate([rows[:, EVAL_IDS], rows[:, ~EVALUATED].sum(1, keepdims=True)], axis=1)
    return counts, row_normalised(counts)


def camvid_confusion_rows(mat12: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 11 CamVid classes' rows of a 12x12 CamVid confusion matrix (column 11: no CamVid class), as
    ``confusion_rows``: (counts 11x12, row-normalised)."""
    counts = np.asarray(mat12, dtype=np.int64)[: labels.NUM_CAMVID]
    return counts, row_normalised(counts)


def row_normalised(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its sum; NaN for empty rows."""
    total = counts.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, counts / np.where(total > 0, total, 1), np.nan)


def confusion_figure(mat: np.ndarray, path: str | os.PathLike, title: str = "", camvid: bool = False) -> None:
    """Row-normalised confusion heatmap of the 19 evaluated classes of a 34x34 labelId matrix (the 11
    CamVid classes of a 12x12 CamVid one with ``camvid``), with a 'void' column for predictions of no
    evaluated class, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, norm = camvid_confusion_rows(mat) if camvid else confusion_rows(mat)
    names = list(labels.CAMVID_NAMES if camvid else labels.TRAINID_NAMES)
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
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=6, color="black" if v > 0.6 else "white")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def json_safe(obj: Any) -> Any:
    """NaN / inf -> None recursively, so the JSON is valid (``results()`` already does this; belt and braces)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
