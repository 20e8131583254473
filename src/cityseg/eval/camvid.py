"""Scoring a model on CamVid: ``score_camvid`` (``CamVidEvaluator``), a CamVid model as it is, a Cityscapes
model through the one mapping table (``labels.LABELID_TO_CAMVID``), at the size ``camvid_size`` gives.

Kept apart from ``evaluate.py``, whose ``--pred-dir`` scoring never imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from cityseg import labels
from cityseg.checkpoint import load_checkpoint
from cityseg.data import layout
from cityseg.data.readers import read_frame
from cityseg.errors import CitysegError
from cityseg.eval.evaluate import prefetch, progress_bar
from cityseg.eval.metrics import CamVidEvaluator
from cityseg.infer.predictor import Predictor
from cityseg.runtime import default_workers

# ---- the size rule -------------------------------------------------------------------------------------
#: CamVid frames are 480x360: height = width * 3 / 4
CAMVID_ASPECT = 3 / 4


def camvid_size(predictor: Predictor) -> tuple[int, int]:
    """The input size a model runs at on CamVid: a CamVid model its own; any other keeps its width and takes
    the height of CamVid's 4:3 aspect, rounded up to a size the model accepts (``valid_size``)."""
    h, w = predictor.input_size
    if predictor.label_mode == "camvid":
        return h, w
    want = (max(1, round(w * CAMVID_ASPECT)), w)
    valid = getattr(predictor.model, "valid_size", None)  # an ONNX model runs what it is given
    return tuple(valid(*want)) if valid is not None else want


def camvid_predictor(checkpoint: str | os.PathLike | dict, size: Sequence[int] | None = None, device: str = "cpu", **options: Any) -> Predictor:
    """The checkpoint's Predictor at ``size``, else at ``camvid_size``; ``options`` go to the Predictor."""
    if not isinstance(checkpoint, dict) and not str(checkpoint).lower().endswith(".onnx"):
        checkpoint = load_checkpoint(checkpoint)  # read once, built twice when the size changes
    predictor = Predictor.from_checkpoint(checkpoint, device=device, **options)
    size = tuple(int(v) for v in size) if size is not None else camvid_size(predictor)
    if size == predictor.input_size:
        return predictor
    return Predictor.from_checkpoint(checkpoint, device=device, input_size=size, **options)


def camvid_ids(pred: np.ndarray, label_mode: str) -> np.ndarray:
    """A Predictor's output as CamVid ids: a CamVid model's as it is, a Cityscapes model's labelIds mapped
    through the one table (``labels.LABELID_TO_CAMVID``; 11 = no CamVid class)."""
    return pred if label_mode == "camvid" else labels.LABELID_TO_CAMVID[pred]


def score_camvid(
    root: str | os.PathLike, split: str, predictor: Predictor, workers: int | None = None, progress: bool = False, limit: int | None = None
) -> CamVidEvaluator:
    """Predict every frame of a CamVid split with ``predictor`` (upsampled to the frame's full size as the
    Predictor does) and score it against the full-resolution annotation."""
    root = layout.check_root(layout.resolve_root(root))
    if not layout.is_camvid(root):
        raise CitysegError(f"{root}: not a CamVid root (train/ beside trainannot/)")
    samples = layout.require_samples(root, split)[: None if limit is None else int(limit)]
    workers = default_workers() if workers is None else max(1, int(workers))
    total = CamVidEvaluator()
    frames = prefetch(samples, read_frame, workers)
    for image, gt, _ in progress_bar(frames, len(samples), "evaluate", progress):
        total.add(camvid_ids(predictor.predict(image), predictor.label_mode), gt)
    return total
