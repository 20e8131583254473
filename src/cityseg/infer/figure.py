"""The results figure: rows of input / ground truth / prediction / errors for the first N frames of a split.

The seed's V3 notebook drew input, mask and prediction for the first N frames of the split in sorted
order; this figure keeps those rows and adds the error map a reader looks for first: the input in grey,
wrong pixels in red, pixels the benchmark does not score (void) in black. labelIds are coloured with the
official palette (ids >= 34 black) and a legend names the 19 evaluated classes. Predictions use the
full-resolution protocol of evaluation (logits upsampled bilinearly to the frame's size, argmax).
On a CamVid root the figure is drawn in CamVid's 11 classes and colours, as CamVid is scored: a Cityscapes
model runs at the CamVid size and its prediction goes through the one mapping table (``infer.camvid``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cityseg import labels
from cityseg.data.layout import is_camvid, require_samples, resolve_root
from cityseg.data.readers import read_frame
from cityseg.errors import CitysegError
from cityseg.infer.camvid import camvid_ids, predictor_for
from cityseg.io import atomic_path

TITLES = ("Input", "Ground truth", "Prediction", "Errors (red), void (black)")
#: inches of one panel's width; rows take the frames' aspect, so no whitespace is left between them
_PANEL_IN = 3.0
_LEGEND_IN = 0.55
ERROR_COLOR = np.array([230, 25, 25], np.uint8)
#: widest image drawn (pixels); a 300-pixel-wide panel never shows more, and it keeps savefig fast
DISPLAY_WIDTH = 512


def shrink(array: np.ndarray, nearest: bool, width: int = DISPLAY_WIDTH) -> np.ndarray:
    """``array`` resized to at most ``width`` pixels wide, aspect kept: nearest for label maps, area for images."""
    h, w = array.shape[:2]
    if w <= width:
        return array
    size = (width, max(1, round(h * width / w)))
    return cv2.resize(array, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def error_map(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, scored: np.ndarray | None = None) -> np.ndarray:
    """RGB panel: the image in dimmed grey where the prediction is right, ``ERROR_COLOR`` where it is
    wrong, black where the ground truth is not scored. ``scored`` defaults to the benchmark's evaluated
    labelIds (labelIds in, as the benchmark scores)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None].repeat(3, axis=2) // 2 + 40
    if scored is None:
        scored = labels.to_train_ids(gt) != labels.IGNORE_INDEX
    out = np.where(scored[..., None], grey, 0).astype(np.uint8)
    out[scored & (pred != gt)] = ERROR_COLOR
    return out


@dataclass(frozen=True)
class FigureLabels:
    """How one dataset's frames are drawn: the palette of the label panels (``mode``), the prediction in
    the dataset's own ids, which ground-truth pixels are scored, and the legend's classes."""

    mode: str  # "labelIds" for a Cityscapes-layout root, "camvid" for a CamVid one

    @classmethod
    def of(cls, root: str | os.PathLike) -> FigureLabels:
        return cls("camvid" if is_camvid(root) else "labelIds")

    def shown(self, pred: np.ndarray, label_mode: str) -> np.ndarray:
        return camvid_ids(pred, label_mode) if self.mode == "camvid" else pred

    def scored(self, gt: np.ndarray) -> np.ndarray:
        if self.mode == "camvid":
            return gt != labels.CAMVID_VOID
        return labels.to_train_ids(gt) != labels.IGNORE_INDEX

    def legend(self) -> list[tuple[str, np.ndarray]]:
        if self.mode == "camvid":
            return [(name, labels.CAMVID_PALETTE[i]) for i, name in enumerate(labels.CAMVID_NAMES)]
        return [(name, labels.TRAINID_PALETTE[t]) for t, name in enumerate(labels.TRAINID_NAMES)]


def _legend(fig: Any, shown: FigureLabels) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=color / 255.0, label=name) for name, color in shown.legend()]
    fig.legend(handles=handles, loc="lower center", ncol=10, fontsize=7, frameon=False, handlelength=1.2, columnspacing=0.8, borderaxespad=0.2)


def _panels(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, shown: FigureLabels) -> tuple[np.ndarray, ...]:
    """One row's four panels at display size: input, ground truth, prediction, errors."""
    small_gt, small_pred = shrink(gt, nearest=True), shrink(pred, nearest=True)
    small_image = shrink(image, nearest=False)
    return (
        small_image,
        labels.colorize(small_gt, shown.mode),
        labels.colorize(small_pred, shown.mode),
        error_map(small_image, small_gt, small_pred, shown.scored(small_gt)),
    )


def results_figure(
    model: Any,
    data: str | os.PathLike | None,
    out: str | os.PathLike,
    split: str = "val",
    n: int = 32,
    dpi: int = 100,
    progress: Callable[[Iterable], Iterable] | None = None,
    device: str = "cpu",
) -> Path:
    """Draw the figure for ``model`` (a ``Predictor``, checkpoint dict or path) and write it atomically to
    ``out``. A checkpoint runs on ``device`` at the size the dataset asks for (``predictor_for``); a
    Predictor as it is."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if n < 1:
        raise CitysegError(f"--n must be at least 1, got {n}")
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".") or "png"
    if fmt not in ("png", "jpg", "jpeg", "pdf", "svg"):
        raise CitysegError(f"{out}: unsupported figure format {fmt!r} (use .png, .jpg, .pdf or .svg)")
    root = resolve_root(data)
    predictor = model if hasattr(model, "predict") else predictor_for(root, model, device=device)
    shown = FigureLabels.of(root)
    samples = require_samples(root, split)[:n]
    rows, cols = len(samples), len(TITLES)
    first, _, _ = read_frame(samples[0])
    row_in = _PANEL_IN * first.shape[0] / first.shape[1]
    title_in = 0.25
    height = rows * row_in + title_in + _LEGEND_IN
    fig, axes = plt.subplots(rows, cols, figsize=(cols * _PANEL_IN, height), dpi=dpi, squeeze=False)
    fig.subplots_adjust(left=0.005, right=0.995, top=1 - title_in / height, bottom=_LEGEND_IN / height, wspace=0.02, hspace=0.02)
    try:
        for r, sample in enumerate(progress(samples) if progress else samples):
            image, gt, _ = read_frame(sample)
            panels = _panels(image, gt, shown.shown(predictor.predict(image), predictor.label_mode), shown)
            for c, (ax, panel) in enumerate(zip(axes[r], panels)):
                ax.imshow(panel, interpolation="nearest" if c else "antialiased", aspect="auto")
                if r == 0:
                    ax.set_title(TITLES[c], fontsize=9)
                ax.axis("off")
        _legend(fig, shown)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="jpeg" if fmt == "jpg" else fmt, dpi=dpi)
    finally:
        plt.close(fig)
    return out
