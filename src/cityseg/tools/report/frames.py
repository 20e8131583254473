"""Per-frame scores and pictures: what the gallery shows.

``FrameCollector`` is the ``on_frame`` hook of ``eval.evaluate.score_checkpoint``: each frame's scores
come from that frame's own ``CityscapesEvaluator`` (the split's scores are their sum), and its prediction
is kept PNG-compressed at display size, so the pictures of the worst frames are drawn later without
running the model again and without holding full-resolution predictions of the whole split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import cv2
import numpy as np

from cityseg import labels
from cityseg.data.layout import Sample
from cityseg.data.readers import read_frame
from cityseg.errors import CitysegError
from cityseg.eval.evaluate import FrameResult
from cityseg.infer.figure import error_map, shrink

#: widest picture written (pixels): sharp in the enlarged view, small on disk
IMAGE_WIDTH = 1024
JPEG_QUALITY = 85
#: the pictures of one card, in the order a card shows them
PANELS = ("input", "gt", "pred", "error")


@dataclass
class FrameScore:
    """One frame's per-image scores (official definitions) and its display-size prediction as PNG bytes."""

    sample: Sample
    miou: float | None
    pixel_acc: float | None
    class_iou: dict[str, float] = field(default_factory=dict)  # classes present in GT or prediction
    pred_png: bytes = b""

    @property
    def stem(self) -> str:
        return self.sample.stem


class FrameCollector:
    """Collects a ``FrameScore`` per scored frame (pass an instance as ``on_frame``)."""

    def __init__(self):
        self.frames: list[FrameScore] = []

    def __call__(self, frame: FrameResult) -> None:
        res = frame.scores.results()
        ious = {name: v["iou"] for name, v in res["per_class"].items() if v["iou"] is not None}
        small = shrink(frame.pred, nearest=True, width=IMAGE_WIDTH)
        self.frames.append(FrameScore(frame.sample, res["mIoU"], res["pixel_acc"], ious, _encode(small, ".png")))


def worst_first(frames: list[FrameScore]) -> list[FrameScore]:
    """Lowest per-image mIoU first; frames without any evaluated pixel last; ties by name."""
    return sorted(frames, key=lambda f: (f.miou is None, f.miou if f.miou is not None else 0.0, f.stem))


def frame_panels(frame: FrameScore) -> dict[str, tuple[bytes, str]]:
    """The card's pictures, panel name -> (encoded bytes, file suffix): the input (JPEG), ground truth and
    prediction in the official colours and the error map (PNG), all at ``IMAGE_WIDTH`` at most."""
    image, gt, _ = read_frame(frame.sample)
    image = shrink(image, nearest=False, width=IMAGE_WIDTH)
    gt = shrink(gt, nearest=True, width=IMAGE_WIDTH)
    pred = cv2.imdecode(np.frombuffer(frame.pred_png, np.uint8), cv2.IMREAD_UNCHANGED)
    if pred is None or pred.shape != gt.shape:
        raise CitysegError(f"{frame.sample.label}: the frame changed on disk while the report was written")
    return {
        "input": (_encode(image, ".jpg"), ".jpg"),
        "gt": (_encode(labels.colorize(gt, "labelIds"), ".png"), ".png"),
        "pred": (_encode(labels.colorize(pred, "labelIds"), ".png"), ".png"),
        "error": (_encode(error_map(image, gt, pred), ".png"), ".png"),
    }


def content_name(data: bytes, suffix: str) -> str:
    """A file name made from the bytes, so a rewritten report never points at a picture of an older one."""
    return hashlib.blake2b(data, digest_size=10).hexdigest() + suffix


def _encode(array: np.ndarray, suffix: str) -> bytes:
    if array.ndim == 3:
        array = cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if suffix == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 6]
    ok, buf = cv2.imencode(suffix, np.ascontiguousarray(array), params)
    if not ok:
        raise CitysegError(f"could not encode a {suffix} picture")
    return buf.tobytes()
