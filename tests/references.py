"""Independent references the tests hold cityseg to, written without cityseg's own code paths.

PIL decodes, NumPy resizes, cityscapesScripts' table colours, and inference is written out the plain way
(one window and one pass at a time, ``F.interpolate`` then argmax), so that a test comparing cityseg with
these does not compare a routine with itself.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


# ---- decoding and resizing --------------------------------------------------------------------------
def decode(path) -> np.ndarray:
    """A PNG as PIL decodes it: HxWx3 uint8 for RGB, HxW for labelIds and instanceIds."""
    with Image.open(path) as im:
        return np.asarray(im).copy()


def _bilinear_index(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source rows of each output row for align_corners=False bilinear: (i0, i1, weight of i1)."""
    src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, None)
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    return i0, np.minimum(i0 + 1, n_in - 1), src - i0


def resize_image(image: np.ndarray, size, interpolation: str) -> np.ndarray:
    """HxWx3 uint8 -> ``size``: "area" is the mean of each (integer-factor) block, "bilinear" blends the two
    nearest source pixels per axis (align_corners=False, no antialiasing); both rounded half up. Equal to
    OpenCV's INTER_AREA / INTER_LINEAR at factor 2 (area at other factors may differ by 1 at exact ties)."""
    if size is None or tuple(size) == image.shape[:2]:
        return image
    (H, W), (h, w) = image.shape[:2], size
    x = image.astype(np.float64)
    if interpolation == "area":
        assert H % h == 0 and W % w == 0, "the area reference covers integer factors only"
        out = x.reshape(h, H // h, w, W // w, -1).mean(axis=(1, 3))
    else:
        i0, i1, wy = _bilinear_index(H, h)
        j0, j1, wx = _bilinear_index(W, w)
        rows = x[i0] * (1 - wy)[:, None, None] + x[i1] * wy[:, None, None]
        out = rows[:, j0] * (1 - wx)[None, :, None] + rows[:, j1] * wx[None, :, None]
    return np.floor(out + 0.5).astype(np.uint8)


def resize_nearest(label: np.ndarray, size) -> np.ndarray:
    """Nearest neighbour as OpenCV's INTER_NEAREST picks it: output pixel i takes source floor(i * H / h)."""
    if size is None or tuple(size) == label.shape[:2]:
        return label
    (H, W), (h, w) = label.shape[:2], size
    return label[np.floor(np.arange(h) * H / h).astype(int)][:, np.floor(np.arange(w) * W / w).astype(int)]


def split_pairs(root, split: str) -> list[tuple]:
    """(image, labelIds) paths of a split by the official naming, in sorted order of the image paths."""
    images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
    return [(p, root / "gtFine" / split / p.parent.name / p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")) for p in images]


def frame(image_path, label_path, size=None, interpolation: str = "area") -> tuple[np.ndarray, np.ndarray]:
    """What the cache and the dataset must hold for one frame: (image, labelIds) decoded and resized here."""
    return resize_image(decode(image_path), size, interpolation), resize_nearest(decode(label_path), size)


# ---- colours ------------------------------------------------------------------------------------------
def official_colors(label_ids: np.ndarray) -> np.ndarray:
    """HxWx3 colours of labelIds from cityscapesScripts' own table."""
    from cityscapesscripts.helpers.labels import id2label

    lut = np.zeros((256, 3), np.uint8)
    for i in np.unique(label_ids):
        lut[i] = id2label[int(i)].color
    return lut[label_ids]


def overlay(image: np.ndarray, label_ids: np.ndarray, quarters: int) -> np.ndarray:
    """The image blended with the official colours at opacity ``quarters / 4``, rounded half up, in integers."""
    color = official_colors(label_ids).astype(np.int64)
    return ((image.astype(np.int64) * (4 - quarters) + color * quarters + 2) // 4).astype(np.uint8)


# ---- inference written out ------------------------------------------------------------------------------
def model_input(image: np.ndarray, size, interpolation: str, mean, std) -> torch.Tensor:
    """1x3xhxw float32: resized here, /255, then (x - mean) / std."""
    x = resize_image(image, size, interpolation).astype(np.float32) / 255
    if mean is not None:
        x = (x - np.float32(mean)) / np.float32(std)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def run(model, x: torch.Tensor, flip: bool) -> torch.Tensor:
    """Logits of one input; with ``flip`` those of its mirror image, mirrored back."""
    with torch.no_grad():
        return model(x.flip(-1)).flip(-1) if flip else model(x)


def slide(model, x: torch.Tensor, window, stride, flip: bool) -> torch.Tensor:
    """mmsegmentation's ``slide_inference`` loop, one window at a time: windows every ``stride`` pixels, the
    last one of each row/column moved back inside the image, overlapping logits averaged."""
    _, _, H, W = x.shape
    (wh, ww), (sh, sw) = window, stride
    assert H >= wh and W >= ww, "the slide reference covers images at least one window large"
    total, count = None, torch.zeros(1, 1, H, W)
    for r in range(max(H - wh + sh - 1, 0) // sh + 1):
        for c in range(max(W - ww + sw - 1, 0) // sw + 1):
            y2, x2 = min(r * sh + wh, H), min(c * sw + ww, W)
            y1, x1 = y2 - wh, x2 - ww
            logits = run(model, x[:, :, y1:y2, x1:x2], flip)
            if total is None:
                total = torch.zeros(1, logits.shape[1], H, W)
            total[:, :, y1:y2, x1:x2] += logits
            count[:, :, y1:y2, x1:x2] += 1
    return total / count


def predict(model, image: np.ndarray, ckpt: dict, flip=False, scales=(1.0,), mode="whole", window=None, stride=None) -> np.ndarray:
    """HxW labelIds of ``image`` under the documented protocol, pass by pass: whole mode resizes to the
    checkpoint's input size x scale, slide mode to the full size x scale; every pass (scale, and mirror with
    ``flip``) is upsampled bilinearly to full size; with TTA their softmax is averaged, otherwise the logits
    are used; argmax; trainIds mapped back to labelIds with cityscapesScripts' table."""
    from cityscapesscripts.helpers.labels import trainId2label

    full = image.shape[:2]
    size = tuple(ckpt["input_size"])
    window = tuple(window or size)
    stride = tuple(stride or (max(1, 2 * window[0] // 3), max(1, 2 * window[1] // 3)))
    tta = flip or len(scales) > 1
    passes = []
    for scale in scales:
        base = size if mode == "whole" else full
        scaled = (round(base[0] * scale), round(base[1] * scale))
        x = model_input(image, scaled, ckpt["interpolation"], ckpt["mean"], ckpt["std"])
        for mirrored in (False, True) if flip else (False,):
            logits = run(model, x, mirrored) if mode == "whole" else slide(model, x, window, stride, mirrored)
            passes.append(logits.softmax(1) if tta else logits)
    scores = sum(F.interpolate(p, size=full, mode="bilinear", align_corners=False) for p in passes)
    pred = scores[0].argmax(0).numpy()
    if ckpt["label_mode"] == "trainIds":
        lut = np.zeros(256, np.uint8)
        for train_id in range(19):
            lut[train_id] = trainId2label[train_id].id
        pred = lut[pred]
    return pred.astype(np.uint8)


# ---- scoring ----------------------------------------------------------------------------------------------
def confusion_with_void(pairs) -> np.ndarray:
    """19 x 20 pixel counts over ``(gt labelIds, predicted labelIds)`` pairs: rows the evaluated classes in
    trainId order (cityscapesScripts' table), columns the same classes then one "void" column for every
    prediction of a labelId the official evaluation ignores; ground truth it ignores counts nowhere."""
    from cityscapesscripts.helpers.labels import labels as table

    evaluated = sorted((lab for lab in table if not lab.ignoreInEval), key=lambda lab: lab.trainId)
    column = np.full(256, len(evaluated), np.int64)  # every other id: void
    for k, lab in enumerate(evaluated):
        column[lab.id] = k
    counts = np.zeros((len(evaluated), len(evaluated) + 1), np.int64)
    for gt, pred in pairs:
        for k, lab in enumerate(evaluated):
            counts[k] += np.bincount(column[pred[gt == lab.id]], minlength=len(evaluated) + 1)
    return counts
