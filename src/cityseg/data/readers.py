"""Validated reads of one frame: image + labels, ground truth, a prediction, with one size check.

Every reader goes through ``cityseg.io`` (header checks, one-line ``CitysegError`` naming the file) and
``check_same_size`` is the only place that compares an annotation's size with its image's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cityseg import io, labels
from cityseg.data import layout
from cityseg.data.transforms import resize_image, resize_label
from cityseg.errors import CitysegError

#: largest valid labelId in a ``_labelIds.png`` (33)
MAX_LABEL_ID = labels.NUM_LABEL_IDS - 1
#: largest valid annotation value per dataset kind (``layout.Sample.dataset``): CamVid's is its void id, 11
MAX_LABEL = {"cityscapes": MAX_LABEL_ID, "camvid": labels.CAMVID_VOID}


def check_same_size(
    path: str | os.PathLike, array: np.ndarray, reference: np.ndarray, image_path: str | os.PathLike | None = None, what: str = "label"
) -> None:
    """``array`` (read from ``path``) must have the height and width of ``reference``, its image."""
    h, w = array.shape[:2]
    rh, rw = reference.shape[:2]
    if (h, w) != (rh, rw):
        source = f" ({image_path})" if image_path is not None else ""
        raise CitysegError(f"{path}: {what} size {w}x{h} differs from its image {rw}x{rh}{source}")


def read_pair(
    image_path: str | os.PathLike, label_path: str | os.PathLike, size: Sequence[int] | None = None, interpolation: str = "area", max_label: int = MAX_LABEL_ID
) -> tuple[np.ndarray, np.ndarray]:
    """One image and its annotation (labelIds, or CamVid ids with ``max_label`` 11), checked, then resized
    as the seed does: (HxWx3 uint8 RGB, HxW uint8)."""
    image = io.read_image(image_path)
    label = io.read_label(label_path, max_value=max_label)
    check_same_size(label_path, label, image, image_path)
    return resize_image(image, size, interpolation), resize_label(label, size)


def read_ground_truth(sample: layout.Sample, image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """labelIds (uint8, checked 0..33; CamVid ids 0..11 for a CamVid sample) and instanceIds (int32, or
    None when the file is absent) of ``sample``.

    The instanceIds must match the labelIds' size, and both must match ``image`` when it is given.
    """
    gt = io.read_label(sample.label, max_value=MAX_LABEL[sample.dataset])
    if image is not None:
        check_same_size(sample.label, gt, image, sample.image)
    inst = None
    if sample.instance is not None:
        inst = io.read_instance(sample.instance)
        check_same_size(sample.instance, inst, gt, sample.image, what="instanceIds")
    return gt, inst


def read_frame(sample: layout.Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Full-resolution image, annotation (as ``read_ground_truth``) and instanceIds (or None) of a labelled ``sample``."""
    image = io.read_image(sample.image)
    gt, inst = read_ground_truth(sample, image)
    return image, gt, inst


def read_prediction(path: str | os.PathLike, shape: tuple[int, int], gt_path: str | os.PathLike) -> np.ndarray:
    """A single-channel labelId PNG of exactly ``shape`` (HxW) as uint8; anything else is a one-line error."""
    path = Path(path)
    h, w, mode = io.probe_image(path)
    if (h, w) != tuple(shape):
        raise CitysegError(
            f"{path}: prediction is {w}x{h} but its ground truth {Path(gt_path).name} is {shape[1]}x{shape[0]} (predictions must be at full size)"
        )
    if mode in ("I;16", "I;16B", "I"):  # a 16-bit single-channel labelId map is accepted, as officially
        pred = io.read_instance(path)
    elif mode in ("L", "P"):
        pred = io.read_label(path)
    else:
        channels = {"RGB": 3, "RGBA": 4, "LA": 2}.get(mode)
        what = f"{channels} channels" if channels else f"PIL mode {mode}"
        raise CitysegError(f"{path}: prediction has {what}; expected a single-channel labelId PNG")
    top, low = int(pred.max()), int(pred.min())
    if top > MAX_LABEL_ID or low < 0:
        bad = top if top > MAX_LABEL_ID else low
        hint = " (trainIds? map them with cityseg.labels.TRAINID_TO_LABELID)" if bad == 255 else ""
        raise CitysegError(f"{path}: value {bad} is not a labelId (0..{MAX_LABEL_ID}){hint}")
    return pred.astype(np.uint8, copy=False)
