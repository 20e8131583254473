"""The seed's results figure: rows of input / ground truth / prediction for the first N val frames.

As in the seed's V3 notebook: the first N images of the split in sorted order, labelIds coloured with
the official 34-entry palette (ids >= 34 black), titles "Original image / Original mask / Predicted
mask", figsize (9, 3*N) at 100 dpi. Predictions use the full-resolution protocol of evaluation
(logits upsampled bilinearly to the frame's size, argmax).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cityseg import labels
from cityseg.data.layout import require_samples, resolve_root
from cityseg.data.readers import read_frame
from cityseg.errors import CitysegError
from cityseg.io import atomic_path

TITLES = ("Original image", "Original mask", "Predicted mask")
#: widest image drawn (pixels); a 300-pixel-wide panel never shows more, and it keeps savefig fast
_DISPLAY_WIDTH = 512


def _shrink(array: np.ndarray, nearest: bool) -> np.ndarray:
    h, w = array.shape[:2]
    if w <= _DISPLAY_WIDTH:
        return array
    size = (_DISPLAY_WIDTH, max(1, round(h * _DISPLAY_WIDTH / w)))
    return cv2.resize(array, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def results_figure(
    model: Any,
    data: str | os.PathLike | None,
    out: str | os.PathLike,
    split: str = "val",
    n: int = 32,
    dpi: int = 100,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> Path:
    """Draw the figure for ``model`` (a ``Predictor``, checkpoint dict or path) and write it atomically to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cityseg.infer.predictor import Predictor

    if n < 1:
        raise CitysegError(f"--n must be at least 1, got {n}")
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".") or "png"
    if fmt not in ("png", "jpg", "jpeg", "pdf", "svg"):
        raise CitysegError(f"{out}: unsupported figure format {fmt!r} (use .png, .jpg, .pdf or .svg)")
    predictor = model if hasattr(model, "predict") else Predictor.from_checkpoint(model)
    samples = require_samples(resolve_root(data), split)[:n]
    rows = len(samples)
    fig, axes = plt.subplots(rows, 3, figsize=(9, 3 * rows), dpi=dpi, squeeze=False)
    try:
        for r, sample in enumerate(progress(samples) if progress else samples):
            image, gt, _ = read_frame(sample)
            pred = predictor.predict(image)
            panels = (
                _shrink(image, nearest=False),
                labels.colorize(_shrink(gt, nearest=True), "labelIds"),
                labels.colorize(_shrink(pred, nearest=True), "labelIds"),
            )
            for c, (ax, panel) in enumerate(zip(axes[r], panels)):
                ax.imshow(panel, interpolation="nearest" if c else "antialiased")
                ax.set_title(TITLES[c])
                ax.axis("off")
        fig.tight_layout()
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="jpeg" if fmt == "jpg" else fmt, dpi=dpi)
    finally:
        plt.close(fig)
    return out
