"""Validate a whole dataset and count class pixels (``cityseg check`` and the demo).

Every image, labelIds, instanceIds file is read with the validated readers (8-bit RGB images, labelIds
within 0..33, 16-bit instanceIds that agree with the labelIds, equal sizes, pairing by stem) and colour
annotations are probed. ``check_dataset`` returns a ``DatasetStats`` with the pair count and the per-labelId
pixel count of each split; problems raise ``CitysegError`` (``fail_fast=True``) or are collected.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cityseg import io, labels
from cityseg.data import layout, readers
from cityseg.data.cache import PARALLEL_MIN_FILES
from cityseg.errors import CitysegError
from cityseg.runtime import process_context

N_IDS = labels.NUM_LABEL_IDS


@dataclass
class SplitStats:
    """What ``check`` found in one split."""

    split: str
    pairs: int = 0  # frames with image and labelIds
    images: int = 0  # frames (test splits may have no labels)
    instances: int = 0  # frames with an instanceIds file
    sizes: dict[str, int] = field(default_factory=dict)  # "HxW" -> frames
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(N_IDS, np.int64))  # per labelId

    def shares(self) -> np.ndarray:
        """Pixel share of each of the 34 labelIds (fractions summing to 1; zeros if unlabelled)."""
        total = self.pixels.sum()
        return self.pixels / total if total else np.zeros(N_IDS)

    def to_dict(self) -> dict:
        return {
            "pairs": self.pairs,
            "images": self.images,
            "instances": self.instances,
            "sizes": dict(self.sizes),
            "pixels": {labels.LABELID_NAMES[i]: int(v) for i, v in enumerate(self.pixels)},
        }


@dataclass
class DatasetStats:
    root: Path
    annotation: str
    splits: dict[str, SplitStats]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def pixels(self) -> np.ndarray:
        return sum((s.pixels for s in self.splits.values()), np.zeros(N_IDS, np.int64))

    def present_eval_classes(self, split: str | None = None) -> list[str]:
        """Names of the 19 evaluated classes that occur (in ``split`` or anywhere)."""
        px = self.splits[split].pixels if split else self.pixels
        return [labels.LABELID_NAMES[i] for i in labels.EVAL_LABEL_IDS if px[i] > 0]

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "annotation": self.annotation,
            "splits": {k: v.to_dict() for k, v in self.splits.items()},
            "problems": list(self.problems),
        }

    def format(self) -> str:
        """Human-readable report: pairs per split, then the pixel share of each labelId per split."""
        lines = [f"dataset {self.root} ({self.annotation})"]
        for name, s in self.splits.items():
            sizes = ", ".join(f"{k} x{v}" for k, v in sorted(s.sizes.items()))
            what = f"{s.pairs} pairs" if s.pairs or not s.images else f"{s.images} images, no labels"
            lines.append(f"  {name + ':':<13}{what:<22} {s.instances} with instanceIds; sizes {sizes or '-'}")
        labelled = [n for n, s in self.splits.items() if s.pixels.sum()]
        if labelled:
            lines.append("pixel share per labelId (* = one of the 19 evaluated classes, with its trainId)")
            lines.append(f"  {'id':>3}  {'name':<22}{'trainId':>8}" + "".join(f"{n:>12}" for n in labelled))
            shares = {n: self.splits[n].shares() for n in labelled}
            for i in range(N_IDS):
                t = int(labels.LABELID_TO_TRAINID[i])
                mark = f"* {t:>2}" if t != labels.IGNORE_INDEX else "-"
                row = f"  {i:>3}  {labels.LABELID_NAMES[i]:<22}{mark:>8}"
                row += "".join(f"{100 * shares[n][i]:>11.2f}%" for n in labelled)
                lines.append(row)
            lines.append(f"evaluated classes present: {len(self.present_eval_classes())}/19")
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines.extend(f"  {p}" for p in self.problems)
        return "\n".join(lines)


def check_sample(sample: layout.Sample) -> tuple[tuple[int, int], np.ndarray | None, bool]:
    """Validate one frame: ((H, W), labelId pixel counts or None, has instanceIds). Raises ``CitysegError``."""
    if sample.label is None:
        h, w = io.read_image(sample.image).shape[:2]
        return (h, w), None, False
    image, label, inst = readers.read_frame(sample)
    h, w = image.shape[:2]
    del image
    counts = np.bincount(label.ravel(), minlength=N_IDS)[:N_IDS].astype(np.int64)
    if inst is not None:
        ids = np.where(inst >= 1000, inst // 1000, inst)
        bad = int(np.count_nonzero(ids != label))
        if bad:
            raise CitysegError(f"{sample.instance}: instanceIds disagree with the labelIds at {bad} pixels")
    if sample.color is not None:
        ch, cw, mode = io.probe_image(sample.color)
        if (ch, cw) != (h, w) or mode not in ("RGB", "RGBA"):
            raise CitysegError(f"{sample.color}: colour annotation is {cw}x{ch} {mode}, expected {w}x{h} RGB(A)")
    return (h, w), counts, sample.instance is not None


def _check_safe(sample: layout.Sample):
    try:
        return check_sample(sample)
    except CitysegError as e:
        return str(e)


def check_dataset(
    root: str | os.PathLike | None = None,
    splits: Sequence[str] | None = None,
    annotation: str = "gtFine",
    workers: int = 2,
    fail_fast: bool = True,
    progress: bool = False,
) -> DatasetStats:
    """Validate ``splits`` (default: every split present) of the dataset at ``root``; see the module doc."""
    root = layout.check_root(layout.resolve_root(root))
    if splits is None:
        splits = [s for s in layout.SPLITS if (root / "leftImg8bit" / s).is_dir() and ((root / annotation / s).is_dir() or s == "test")]
        if not splits:
            raise CitysegError(f"{root}: no splits found (expected leftImg8bit/{{train,val,test}}/ with {annotation}/)")
    stats = DatasetStats(Path(root), annotation, {})
    for split in splits:
        try:
            samples = layout.require_samples(root, split, annotation, require_labels=split != "test")
        except CitysegError as e:
            if fail_fast:
                raise
            stats.problems.append(str(e))
            continue
        st = SplitStats(split)
        stats.splits[split] = st
        results = _map(samples, workers, progress, f"check {split}")
        for res in results:
            if isinstance(res, str):
                if fail_fast:
                    raise CitysegError(res)
                stats.problems.append(res)
                continue
            (h, w), counts, has_instance = res
            st.images += 1
            st.sizes[f"{h}x{w}"] = st.sizes.get(f"{h}x{w}", 0) + 1
            st.instances += int(has_instance)
            if counts is not None:
                st.pairs += 1
                st.pixels += counts
    return stats


def _map(samples, workers: int, progress: bool, desc: str):
    it = None
    pool = None
    if workers > 1 and len(samples) >= PARALLEL_MIN_FILES:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=process_context())
        it = pool.map(_check_safe, samples, chunksize=8)
    else:
        it = map(_check_safe, samples)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=len(samples), desc=desc, unit="img", leave=False)
    try:
        yield from it
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
