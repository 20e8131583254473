"""Running a model on CamVid frames: the input size (``camvid_size``), the Predictor at that size
(``camvid_predictor``) and its output as CamVid ids (``camvid_ids``: a CamVid model's as it is, a Cityscapes
model's through the one mapping table ``labels.LABELID_TO_CAMVID``).

Here, below ``eval``, because scoring (``eval/camvid.py``), the results figure and ``cityseg adapt`` all
run a model on CamVid the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from cityseg import labels
from cityseg.checkpoint import load_checkpoint
from cityseg.data import layout
from cityseg.infer.predictor import Predictor

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


def predictor_for(root: str | os.PathLike, checkpoint: str | os.PathLike | dict, device: str = "cpu", **options: Any) -> Predictor:
    """The checkpoint's Predictor for the frames of dataset ``root``: at the CamVid size on a CamVid root,
    at its own size on a Cityscapes-layout one."""
    if layout.is_camvid(layout.resolve_root(root)):
        return camvid_predictor(checkpoint, device=device, **options)
    return Predictor.from_checkpoint(checkpoint, device=device, **options)


def camvid_ids(pred: np.ndarray, label_mode: str) -> np.ndarray:
    """A Predictor's output as CamVid ids: a CamVid model's as it is, a Cityscapes model's labelIds mapped
    through the one table (``labels.LABELID_TO_CAMVID``; 11 = no CamVid class)."""
    return pred if label_mode == "camvid" else labels.LABELID_TO_CAMVID[pred]
