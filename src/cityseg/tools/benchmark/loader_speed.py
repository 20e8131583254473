"""Data-loading speed: full-size SynthCity frames to read, and ``DataLoader`` images/s from the cache or the PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from cityseg.data import layout
from cityseg.data.dataset import CityscapesDataset
from cityseg.data.synth import generate
from cityseg.errors import CitysegError
from cityseg.tools.benchmark.config import FULLRES
from cityseg.tools.benchmark.machine import time_fn


def synth_data(folder: Path, images: int) -> Path:
    """Full-size (1024x2048) SynthCity frames in ``folder`` (generated once; reused when present)."""
    root = folder / f"synth-{images}"
    if has_split(root, "train") and len(layout.find_samples(root, "train")) == images:
        return root
    generate(root, train=images, val=0, test=0, size=FULLRES, seed=0)
    return root


def has_split(root: Path, split: str) -> bool:
    """True when ``root`` holds labelled images of ``split``."""
    try:
        return bool(layout.find_samples(root, split))
    except CitysegError:
        return False


def loader_throughput(
    root: Path,
    size: tuple[int, int],
    batch: int,
    cache: bool,
    warmup: int,
    iters: int,
    cache_dir: Path | None = None,
    split: str = "train",
    limit: int | None = None,
) -> float:
    """Images/s of a single-process ``DataLoader`` over the split, from the uint8 cache or the PNGs."""
    ds = CityscapesDataset(root, split, size=size, cache=cache, cache_dir=cache_dir)  # builds the cache (untimed)
    n = len(ds) if limit is None else min(limit, len(ds))
    # a cached pass over a handful of images is too short to time: cycle over them to at least 4 batches
    return dataloader_rate(ds, batch, max(n, 4 * batch) if cache else n, 0, warmup, iters, limit=n)


def dataloader_rate(ds: Any, batch: int, count: int, workers: int, warmup: int, iters: int, limit: int | None = None) -> float:
    """Images/s of a ``DataLoader`` with ``workers`` processes drawing ``count`` samples, cycling over the
    first ``limit`` of ``ds``. Workers persist across the passes, so their start-up is in the warm-up only."""
    n = len(ds) if limit is None else min(limit, len(ds))
    sampler = [i % n for i in range(count)]
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, persistent_workers=workers > 0)

    def run():
        for _ in loader:
            pass

    return count / time_fn(run, max(warmup, 1 if workers else 0), iters)
