"""The data phase: a dataset root ready for training, generated, reused or given.

SynthCity goes into ``OUT/data``, generated only when absent, incomplete, made by another generator
version, or holding fewer train or val frames than the run wants (a complete, valid SynthCity folder of
this version with at least those frames is reused as it is). Train frames are generated at the size training
reads (``budget.train_frame_size``), val frames at the official size. A reused or given dataset is
validated and its class statistics printed; frames generated in this run are not read twice (the cache
phase reads them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cityseg import labels
from cityseg.data import cache, synth
from cityseg.data.check import DatasetStats, check_dataset
from cityseg.data.layout import check_root, resolve_root
from cityseg.errors import CitysegError
from cityseg.io import read_json_dict
from cityseg.tools.demo.timer import Timer

Log = Callable[[str], None]


@dataclass(frozen=True)
class SynthRequest:
    """The SynthCity the run generates when it has none to reuse."""

    train: int
    val: int
    train_size: tuple[int, int]
    val_size: tuple[int, int]
    seed: int = 0


@dataclass(frozen=True)
class CacheSpec:
    """The preprocessing of the run's cache: a reused dataset whose cache is up to date needs no check."""

    size: tuple[int, int] | None
    interpolation: str


@dataclass(frozen=True)
class DataState:
    """The dataset the run trains and scores on: where it is, where it came from, its frames per split."""

    root: Path
    source: str  # "given", "reused" or "generated"
    frames: dict[str, int]

    def to_json(self) -> dict:
        return {"source": self.source, "root": str(self.root), "frames": dict(self.frames)}


def read_marker(root: Path) -> dict | None:
    """The SynthCity marker of ``root`` as a dict, or None when missing or unreadable."""
    return read_json_dict(root / synth.MARKER)


def generate(root: Path, want: SynthRequest, workers: int, log: Log) -> None:
    (th, tw), (vh, vw) = want.train_size, want.val_size
    log(f"generating SynthCity into {root}: {want.train} train frames at {th}x{tw} + {want.val} val at {vh}x{vw} ({workers} processes)")
    t0 = time.monotonic()

    def progress(split: str, done: int, total: int) -> None:
        if done == total:
            log(f"  {split}: {total} frames in {time.monotonic() - t0:.0f} s")

    sizes = {"train": want.train_size, "val": want.val_size}
    synth.generate(root, train=want.train, val=want.val, test=0, size=want.val_size, sizes=sizes, seed=want.seed, workers=workers, progress=progress)


def dataset_line(stats: DatasetStats) -> str:
    """One line: pairs and sizes per split, evaluated classes present, the five largest classes."""
    parts = [f"{name} {s.pairs} pairs ({', '.join(sorted(s.sizes))})" for name, s in stats.splits.items()]
    shares = stats.pixels / max(1, stats.pixels.sum())
    common = ", ".join(f"{labels.LABELID_NAMES[i]} {100 * shares[i]:.0f}%" for i in np.argsort(shares)[::-1][:5])
    return f"dataset: {'; '.join(parts)}; evaluated classes present {len(stats.present_eval_classes())}/19; largest: {common}"


def cached_frames(root: Path, spec: CacheSpec | None) -> dict[str, int] | None:
    """Frames per split when the train and val caches are up to date (every file as it was when the cache
    read it with the validated readers), else None."""
    if spec is None:
        return None
    entries = {split: cache.load(root, split, spec.size, spec.interpolation) for split in ("train", "val")}
    return None if None in entries.values() else {split: len(e) for split, e in entries.items()}


def reusable(root: Path, want: SynthRequest, workers: int, timer: Timer, log: Log) -> DatasetStats | None:
    """The checked SynthCity in ``root`` when it can be reused, else None (it is then generated again)."""
    marker = read_marker(root)
    if marker is None or marker.get("complete") is not True:
        if root.exists() and marker is None and any(root.iterdir()):
            raise CitysegError(f"{root}: folder is not empty and holds no SynthCity dataset; pass --data to use it as a dataset, or choose another --out")
        return None
    if marker.get("version") != synth.VERSION:
        log(f"SynthCity in {root} was made by generator version {marker.get('version', 1)}, this is version {synth.VERSION}; regenerating it")
        return None
    counts = marker.get("counts") if isinstance(marker.get("counts"), dict) else {}
    for split, n in (("train", want.train), ("val", want.val)):
        held = counts.get(split, 0)
        if not isinstance(held, int) or held < n:
            log(f"SynthCity in {root} holds {held} {split} frames, this run uses {n}; regenerating it")
            return None
    with timer.phase("check"):
        try:
            stats = check_dataset(root, ["train", "val"], workers=workers, fail_fast=True)
        except CitysegError as e:
            log(f"SynthCity in {root} is damaged ({e}); regenerating it")
            return None
    log(f"reusing SynthCity in {root} (delete the folder to regenerate)")
    return stats


def unchanged(root: Path, want: SynthRequest, spec: CacheSpec | None, log: Log) -> DataState | None:
    """``root`` as it is when it holds a complete SynthCity of this version with at least the frames
    wanted and its caches are up to date: the cache phase then reads nothing, and the check is skipped."""
    marker = read_marker(root)
    if marker is None or marker.get("complete") is not True or marker.get("version") != synth.VERSION:
        return None
    frames = cached_frames(root, spec)
    if frames is None or frames["train"] < want.train or frames["val"] < want.val:
        return None
    log(f"reusing SynthCity in {root}, unchanged since its cache was built (delete the folder to regenerate)")
    log(f"dataset: {frames['train']} train + {frames['val']} val frames (`cityseg check --data {root}` validates them)")
    return DataState(root, "reused", frames)


def prepare_data(out: Path, given: Path | None, want: SynthRequest, workers: int, timer: Timer, log: Log, spec: CacheSpec | None = None) -> DataState:
    """The data phase: ``given`` checked, else ``OUT/data`` reused or generated (see the module doc). A
    SynthCity of this version with enough frames whose ``spec`` caches are up to date is reused unchecked."""
    if given is not None:
        root = check_root(resolve_root(given))
        with timer.phase("check"):
            stats = check_dataset(root, ["train", "val"], workers=workers, fail_fast=True)
        source = "given"
    else:
        root = out / "data"
        reused = unchanged(root, want, spec, log)
        if reused is not None:
            return reused
        stats = reusable(root, want, workers, timer, log)
        source = "reused"
        if stats is None:
            with timer.phase("generate"):
                generate(root, want, workers, log)
            log(f"dataset: {want.train} train + {want.val} val frames generated (`cityseg check --data {root}` validates them)")
            return DataState(root, "generated", {"train": want.train, "val": want.val})
    log(dataset_line(stats))
    return DataState(root, source, {k: s.pairs for k, s in stats.splits.items()})
