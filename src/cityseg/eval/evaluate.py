"""Score a folder of labelId PNGs, or a model, over a split with the official Cityscapes protocol.

``evaluate_pred_dir`` is a drop-in for cityscapesScripts' ``csEvalPixelLevelSemanticLabeling``: each
ground-truth frame ``<city>_<seq>_<frame>`` takes the one ``<city>_<seq>_<frame>*.png`` found anywhere under
the prediction folder. ``evaluate_checkpoint`` runs the model at its training resolution, upsamples the
logits bilinearly to the ground truth's full size, takes the argmax and scores at full size (optionally also
at model size against nearest-downsampled labels). Both stream: one frame at a time, PNG decoding in a small
thread pool that runs ahead of the scoring, so memory stays bounded whatever the split size.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cityseg.data import layout
from cityseg.data.readers import read_frame, read_ground_truth, read_prediction
from cityseg.errors import CitysegError
from cityseg.eval.metrics import CityscapesEvaluator
from cityseg.runtime import default_workers


@dataclass
class FrameResult:
    """One scored frame: its sample, the image, labelId ground truth and prediction at full size, and the
    frame's own evaluator (per-image scores by the official definitions)."""

    sample: layout.Sample
    image: np.ndarray
    gt: np.ndarray
    pred: np.ndarray
    scores: CityscapesEvaluator


# ---- finding predictions ------------------------------------------------------------------------
def index_predictions(pred_dir: str | os.PathLike) -> dict[str, list[Path]]:
    """Every ``*.png`` under ``pred_dir`` (recursively) grouped by its ``<city>_<seq>_<frame>`` stem."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise CitysegError(f"{pred_dir}: prediction folder not found")
    found: dict[str, list[Path]] = {}
    for path in layout.walk_files(pred_dir, ".png"):
        stem = layout.parse_stem(path.name)
        if stem is not None:
            found.setdefault(stem, []).append(path)
    return found


def match_predictions(samples: Sequence[layout.Sample], pred_dir: str | os.PathLike) -> list[Path]:
    """The prediction of each sample, as the official ``getPrediction`` finds it (one per frame)."""
    index = index_predictions(pred_dir)
    out = []
    for s in samples:
        cands = index.get(s.stem, [])
        if not cands:
            raise CitysegError(f"{s.label}: no prediction {s.stem}*.png found under {pred_dir} (predictions are matched by the <city>_<seq>_<frame> stem)")
        if len(cands) > 1:
            names = ", ".join(str(c) for c in cands[:3])
            raise CitysegError(f"{s.label}: several predictions match {s.stem}*.png: {names}")
        out.append(cands[0])
    return out


def prefetch(items: Iterable[Any], fn: Callable[[Any], Any], workers: int) -> Iterator[Any]:
    """``map(fn, items)`` in a thread pool, in order, at most ``2 * workers`` results ahead of the consumer."""
    items = list(items)
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cityseg-eval") as pool:
        pending: deque = deque()
        it = iter(items)
        try:
            for item in it:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


def progress_bar(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img", leave=False)


# ---- a folder of predictions --------------------------------------------------------------------
def evaluate_pred_dir(root: str | os.PathLike | None, split: str, pred_dir: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """Score the labelId PNGs under ``pred_dir`` against ``gtFine/<split>``: the stable results dict."""
    return score_pred_dir(root, split, pred_dir, **kwargs).results()


def score_pred_dir(
    root: str | os.PathLike | None, split: str, pred_dir: str | os.PathLike, workers: int | None = None, progress: bool = False
) -> CityscapesEvaluator:
    """Like ``evaluate_pred_dir`` but returns the accumulated evaluator (scores, confusion matrix)."""
    samples = layout.require_samples(layout.resolve_root(root), split)
    preds = match_predictions(samples, pred_dir)
    workers = default_workers() if workers is None else max(1, int(workers))

    def score(job: tuple[layout.Sample, Path]) -> CityscapesEvaluator:
        sample, pred_path = job
        gt, inst = read_ground_truth(sample)
        pred = read_prediction(pred_path, gt.shape, sample.label)
        one = CityscapesEvaluator()
        one.add(pred, gt, inst)
        return one

    total = CityscapesEvaluator()
    # decoding and per-frame statistics run in the pool; only the 34x34 sums meet here
    for one in progress_bar(prefetch(zip(samples, preds), score, workers), len(samples), "evaluate", progress):
        total.merge(one)
    return total


# ---- a model ------------------------------------------------------------------------------------
def evaluate_checkpoint(
    root: str | os.PathLike | None, split: str, checkpoint: str | os.PathLike, at_model_size: bool = False, **kwargs: Any
) -> dict[str, Any]:
    """Predict every frame of ``split`` and score it at full size: the stable results dict. With
    ``at_model_size`` the dict also holds ``"at_model_size"``: the same scores at the model's resolution
    against nearest-downsampled labels."""
    full, small, _ = score_checkpoint(root, split, checkpoint, at_model_size=at_model_size, **kwargs)
    out = full.results()
    if small is not None:
        out["at_model_size"] = small.results()
    return out


def score_checkpoint(
    root: str | os.PathLike | None,
    split: str,
    checkpoint: str | os.PathLike | None,
    at_model_size: bool = False,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    mode: str | None = None,
    device: str = "cpu",
    workers: int | None = None,
    progress: bool = False,
    limit: int | None = None,
    predictor: Any = None,
    on_frame: Callable[[FrameResult], None] | None = None,
) -> tuple[CityscapesEvaluator, CityscapesEvaluator | None, Any]:
    """Default protocol: the model at its training resolution, logits upsampled bilinearly to the GT's full
    size, argmax, scored at full size. Returns ``(full, at_model_size or None, predictor)``; ``predictor``
    may be passed in ready-made (then ``checkpoint``, ``flip``, ``scales``, ``mode`` are not used).
    ``on_frame`` receives each frame's ``FrameResult``: its own evaluator, of which ``full`` is the sum."""
    from cityseg.data.transforms import resize_label
    from cityseg.infer.predictor import Predictor

    samples = layout.require_samples(layout.resolve_root(root), split)
    if limit is not None:
        samples = samples[: int(limit)]
    if predictor is None:
        predictor = Predictor.from_checkpoint(checkpoint, device=device, flip=flip, scales=tuple(scales), mode=mode)
    workers = default_workers() if workers is None else max(1, int(workers))

    full, small = CityscapesEvaluator(), CityscapesEvaluator()
    frames = prefetch(samples, read_frame, workers)
    for sample, (image, gt, inst) in zip(samples, progress_bar(frames, len(samples), "evaluate", progress)):
        pred = predictor.predict(image)
        one = CityscapesEvaluator()
        one.add(pred, gt, inst)
        full.merge(one)  # adding to zeros and merging gives the very sums that adding to ``full`` would
        if on_frame is not None:
            on_frame(FrameResult(sample, image, gt, pred, one))
        if at_model_size:
            pred_small = predictor.predict_model_size(image)
            size = pred_small.shape[:2]
            gt_small = resize_label(gt, size)
            inst_small = None if inst is None else resize_label(inst.astype(np.uint16), size).astype(np.int32)
            small.add(pred_small, gt_small, inst_small)
    return full, (small if at_model_size else None), predictor
