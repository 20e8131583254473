"""The evaluate and outputs phases: the checkpoint scored on val with the official protocol (model at its
size, logits upsampled bilinearly to the full frame, argmax), then labelId and colour predictions and the
results figure. The model runs once per val frame: the three consumers share its output."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cityseg.data.layout import find_samples
from cityseg.eval.evaluate import score_checkpoint
from cityseg.infer.figure import results_figure
from cityseg.infer.outputs import predict_files
from cityseg.infer.predictor import Predictor
from cityseg.io import atomic_write_json
from cityseg.tools.demo.timer import Timer
from cityseg.tools.report import FrameCollector

Log = Callable[[str], None]


class MemoPredictor:
    """A ``Predictor`` that remembers its full-resolution labelIds per image (keyed by the pixels), so
    evaluation, prediction files and the figure run the model once per frame; every other attribute is
    the wrapped predictor's."""

    def __init__(self, base: Any):
        self.base = base
        self.memo: dict[tuple, np.ndarray] = {}
        self.runs = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)

    def predict(self, image: np.ndarray) -> np.ndarray:
        image = np.ascontiguousarray(image)
        key = (image.shape, hashlib.blake2b(image.data, digest_size=16).digest())
        if key not in self.memo:
            self.memo[key] = self.base.predict(image)
            self.runs += 1
        return self.memo[key]


@dataclass(frozen=True)
class Scored:
    """The official scores (the metrics' stable JSON dict) and what the report reuses of the evaluation."""

    results: dict[str, Any]
    scores_path: Path
    evaluator: Any  # the filled evaluator
    frames: FrameCollector
    predictor: MemoPredictor


@dataclass(frozen=True)
class Outputs:
    """The files the outputs phase writes."""

    pred: Path
    color: Path
    figure: Path


def evaluate(ckpt: Path, root: Path, run_dir: Path, progress: bool, log: Log) -> Scored:
    """The evaluate phase: ``ckpt`` on val at full resolution, its scores in ``run_dir/val_scores.json``."""
    predictor = MemoPredictor(Predictor.from_checkpoint(ckpt, channels_last=True))
    frames = FrameCollector()
    full, _, _ = score_checkpoint(root, "val", None, predictor=predictor, progress=progress, on_frame=frames)
    results = full.results()
    scores = run_dir / "val_scores.json"
    atomic_write_json(scores, results)
    log(f"evaluated {ckpt} on {results['n_images']} val frames at full resolution: mIoU {results['mIoU']:.4f}")
    return Scored(results, scores, full, frames, predictor)


def write_outputs(scored: Scored, root: Path, run_dir: Path, rows: int, timer: Timer) -> Outputs:
    """The outputs phase: labelId and colour predictions of every val frame, and the results figure."""
    out = Outputs(run_dir / "pred", run_dir / "pred_color", run_dir / "results.png")
    with timer.phase("predict"):
        images = [s.image for s in find_samples(root, "val")]
        predict_files(scored.predictor, images, out.pred, formats=("labelIds", "color"), vis_dir=out.color)
    with timer.phase("figure"):
        results_figure(scored.predictor, root, out.figure, split="val", n=rows)
    return out
