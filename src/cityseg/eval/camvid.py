"""Scoring a model on CamVid: ``score_camvid`` (``CamVidEvaluator``), a CamVid model as it is, a Cityscapes
model through the one mapping table (``labels.LABELID_TO_CAMVID``), at the size ``infer.camvid.camvid_size``
gives.

Kept apart from ``evaluate.py``, whose ``--pred-dir`` scoring never imports torch.
"""

from __future__ import annotations

import os

from cityseg.data import layout
from cityseg.data.readers import read_frame
from cityseg.errors import CitysegError
from cityseg.eval.evaluate import prefetch, progress_bar
from cityseg.eval.metrics import CamVidEvaluator
from cityseg.infer.camvid import camvid_ids
from cityseg.infer.predictor import Predictor
from cityseg.runtime import default_workers


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
