"""Validate a whole dataset and count class pixels (``cityseg check`` and the demo).

Every image, labelIds (CamVid ids on a CamVid root), instanceIds file is read with the validated readers (8-bit RGB images, labelIds
within 0..33, 16-bit instanceIds that agree with the labelIds, equal sizes, pairing by stem) and colour
annotations are probed. ``check_dataset`` returns a ``DatasetStats`` with the pair count and the per-labelId
pixel count of each split, and the images' colour mean and std; problems raise ``CitysegError``
(``fail_fast=True``) or are collected. The report prints them next to real Cityscapes' (``CITYSCAPES_SHARES``,
``CITYSCAPES_RGB``), so a synthetic or converted dataset can be compared with the real one at a glance.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from cityseg import io, labels
from cityseg.data import layout, readers
from cityseg.data.cache import PARALLEL_MIN_FILES
from cityseg.errors import CitysegError
from cityseg.runtime import process_context

N_IDS = labels.NUM_LABEL_IDS

#: Approximate pixel share of each evaluated class over all pixels of the 2975 gtFine train frames, as
#: commonly published (derived from the class pixel counts of Cordts et al., "The Cityscapes Dataset for
#: Semantic Urban Scene Understanding", CVPR 2016, Fig. 1); the remaining ~11% are void pixels.
CITYSCAPES_SHARES = {
    "road": 0.3265, "sidewalk": 0.0539, "building": 0.2019, "wall": 0.0058, "fence": 0.0078, "pole": 0.0109,
    "traffic light": 0.0018, "traffic sign": 0.0049, "vegetation": 0.1410, "terrain": 0.0103, "sky": 0.0356,
    "person": 0.0108, "rider": 0.0012, "car": 0.0620, "truck": 0.0024, "bus": 0.0021, "train": 0.0021,
    "motorcycle": 0.0009, "bicycle": 0.0037,
}  # fmt: skip
#: per-channel RGB mean and std (0..1) of real Cityscapes leftImg8bit frames
CITYSCAPES_RGB = ((0.287, 0.325, 0.284), (0.176, 0.181, 0.178))


@dataclass
class SplitStats:
    """What ``check`` found in one split."""

    split: str
    pairs: int = 0  # frames with image and labelIds
    images: int = 0  # frames (test splits may have no labels)
    instances: int = 0  # frames with an instanceIds file
    sizes: dict[str, int] = field(default_factory=dict)  # "HxW" -> frames
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(N_IDS, np.int64))  # per labelId
    rgb_sum: np.ndarray = field(default_factory=lambda: np.zeros(3))  # sum of pixel values (0..1), per channel
    rgb_sq: np.ndarray = field(default_factory=lambda: np.zeros(3))  # sum of squares
    rgb_n: int = 0  # pixels summed

    def rgb_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel RGB mean and std (0..1) over every pixel of the split's images."""
        if not self.rgb_n:
            return np.zeros(3), np.zeros(3)
        mean = self.rgb_sum / self.rgb_n
        return mean, np.sqrt(np.maximum(self.rgb_sq / self.rgb_n - mean**2, 0))

    def shares(self) -> np.ndarray:
        """Pixel share of each of the 34 labelIds (fractions summing to 1; zeros if unlabelled)."""
        total = self.pixels.sum()
        return self.pixels / total if total else np.zeros(N_IDS)

    def to_dict(self, names: Sequence[str] = labels.LABELID_NAMES) -> dict:
        """JSON-ready; ``names`` are the annotation values' names (CamVid's for a CamVid root)."""
        return {
            "pairs": self.pairs,
            "images": self.images,
            "instances": self.instances,
            "sizes": dict(self.sizes),
            "pixels": {name: int(v) for name, v in zip(names, self.pixels)},
            "rgb_mean": [round(float(v), 4) for v in self.rgb_stats()[0]],
            "rgb_std": [round(float(v), 4) for v in self.rgb_stats()[1]],
        }


@dataclass
class DatasetStats:
    root: Path
    annotation: str
    splits: dict[str, SplitStats]
    problems: list[str] = field(default_factory=list)
    kind: str = "cityscapes"  # or "camvid": the pixel counts are then per CamVid id (``labels.CAMVID_LABELS``)

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
        names = [lab.name for lab in labels.CAMVID_LABELS] if self.kind == "camvid" else labels.LABELID_NAMES
        return {
            "root": str(self.root),
            "annotation": "camvid" if self.kind == "camvid" else self.annotation,
            "splits": {k: v.to_dict(names) for k, v in self.splits.items()},
            "problems": list(self.problems),
        }

    def format(self) -> str:
        """Human-readable report: pairs per split, then the pixel share of each labelId per split."""
        lines = [f"dataset {self.root} ({'CamVid' if self.kind == 'camvid' else self.annotation})"]
        for name, s in self.splits.items():
            sizes = ", ".join(f"{k} x{v}" for k, v in sorted(s.sizes.items()))
            what = f"{s.pairs} pairs" if s.pairs or not s.images else f"{s.images} images, no labels"
            lines.append(f"  {name + ':':<13}{what:<22} {s.instances} with instanceIds; sizes {sizes or '-'}")
        for name, s in self.splits.items():
            if s.rgb_n:
                m, sd = s.rgb_stats()
                lines.append(f"  {name + ':':<13}RGB mean {_rgb(m)}  std {_rgb(sd)}")
        m, sd = CITYSCAPES_RGB
        lines.append(f"  {'Cityscapes:':<13}RGB mean {_rgb(m)}  std {_rgb(sd)}  (real train frames)")
        labelled = [n for n, s in self.splits.items() if s.pixels.sum()]
        if labelled and self.kind == "camvid":
            lines += self.camvid_share_lines(labelled)
        elif labelled:
            lines.append("pixel share per labelId (* = one of the 19 evaluated classes, with its trainId; Cityscapes: published train shares)")
            lines.append(f"  {'id':>3}  {'name':<22}{'trainId':>8}" + "".join(f"{n:>12}" for n in labelled) + f"{'Cityscapes':>12}")
            shares = {n: self.splits[n].shares() for n in labelled}
            for i in range(N_IDS):
                t = int(labels.LABELID_TO_TRAINID[i])
                mark = f"* {t:>2}" if t != labels.IGNORE_INDEX else "-"
                row = f"  {i:>3}  {labels.LABELID_NAMES[i]:<22}{mark:>8}"
                row += "".join(f"{100 * shares[n][i]:>11.2f}%" for n in labelled)
                ref = CITYSCAPES_SHARES.get(labels.LABELID_NAMES[i])
                lines.append(row + (f"{100 * ref:>11.2f}%" if ref is not None else ""))
            lines.append(f"evaluated classes present: {len(self.present_eval_classes())}/19")
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines.extend(f"  {p}" for p in self.problems)
        return "\n".join(lines)

    def camvid_share_lines(self, labelled: Sequence[str]) -> list[str]:
        """The pixel share of each CamVid id (void included) per labelled split."""
        lines = ["pixel share per CamVid id (* = one of the 11 evaluated classes)"]
        lines.append(f"  {'id':>3}  {'name':<12}{'':>3}" + "".join(f"{n:>12}" for n in labelled))
        shares = {n: self.splits[n].shares() for n in labelled}
        for lab in labels.CAMVID_LABELS:
            row = f"  {lab.id:>3}  {lab.name:<12}{'*' if lab.cityscapes else '-':>3}"
            lines.append(row + "".join(f"{100 * shares[n][lab.id]:>11.2f}%" for n in labelled))
        present = sum(1 for lab in labels.CAMVID_LABELS if lab.cityscapes and self.pixels[lab.id] > 0)
        lines.append(f"evaluated classes present: {present}/{labels.NUM_CAMVID}")
        return lines


def _rgb(v) -> str:
    return "(" + ", ".join(f"{float(x):.3f}" for x in v) + ")"


def _colour_sums(image: np.ndarray) -> np.ndarray:
    """(2, 3): per-channel sum and sum of squares of the pixel values (0..1)."""
    mean, std = (np.asarray(v, np.float64).ravel()[:3] / 255 for v in cv2.meanStdDev(image))
    n = image.shape[0] * image.shape[1]
    return np.stack([mean * n, (std**2 + mean**2) * n])


def check_sample(sample: layout.Sample) -> tuple[tuple[int, int], np.ndarray | None, bool, np.ndarray]:
    """Validate one frame: ((H, W), labelId pixel counts or None, has instanceIds, RGB sums (``_colour_sums``)).
    Raises ``CitysegError``."""
    if sample.label is None:
        image = io.read_image(sample.image)
        return image.shape[:2], None, False, _colour_sums(image)
    image, label, inst = readers.read_frame(sample)
    h, w = image.shape[:2]
    sums = _colour_sums(image)
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
    return (h, w), counts, sample.instance is not None, sums


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
    kind = layout.dataset_kind(root)
    if splits is None and kind == "camvid":
        splits = layout.available_splits(root)
    if splits is None:
        splits = [s for s in layout.SPLITS if (root / "leftImg8bit" / s).is_dir() and ((root / annotation / s).is_dir() or s == "test")]
        if not splits:
            raise CitysegError(f"{root}: no splits found (expected leftImg8bit/{{train,val,test}}/ with {annotation}/)")
    stats = DatasetStats(Path(root), annotation, {}, kind=kind)
    for split in splits:
        try:
            samples = layout.require_samples(root, split, annotation, require_labels=split != "test" or kind == "camvid")
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
            (h, w), counts, has_instance, sums = res
            st.images += 1
            st.rgb_sum += sums[0]
            st.rgb_sq += sums[1]
            st.rgb_n += h * w
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
