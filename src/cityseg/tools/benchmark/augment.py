"""The training data path at full resolution: a recipe's augmentation from the cache, per worker count and per step.

The dataset is the one ``cityseg train`` builds for the recipe (``train.run.build_dataset``), read from the
full-resolution uint8 cache, with the recipe's random scale, ``crop``, flip and photometric jitter (turned
on here whatever the recipe says, so its cost is measured). ``step_ms`` times each step of one sample in
this process with one torch thread, as a ``DataLoader`` worker runs it: reading the cached frame, every
augmentation in order, and the conversion to normalised tensors.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cityseg.data.transforms import image_to_tensor, label_to_tensor
from cityseg.tools.benchmark.loader_speed import dataloader_rate
from cityseg.train.config import apply_overrides, load_recipe
from cityseg.train.run import build_dataset

#: the recipe whose augmentation the data-path figures use (random scale 0.5-2.0, 1024x1024 crops, flip)
DEFAULT_RECIPE = "ddrnet23_slim"


def recipe_dataset(root: Path, split: str, recipe: str, crop: Sequence[int]) -> Any:
    """The training dataset of ``recipe`` at its size (full resolution for the real-time recipes) from the cache,
    cropped to ``crop``, with photometric jitter on."""
    cfg, _ = load_recipe(recipe)
    overrides = {"data.cache": True, "augment.enabled": True, "augment.crop": [int(v) for v in crop], "augment.photometric": True}
    cfg = apply_overrides(cfg, overrides, source="benchmark")
    return build_dataset(cfg, root, split, cfg["data"]["label_mode"], train=True, seed=0)


def step_ms(ds: Any, samples: int) -> dict[str, float]:
    """Mean milliseconds per image of each step of the data path, over ``samples`` samples (one torch thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    totals: dict[str, float] = {}

    def add(key: str, t0: float) -> float:
        now = time.perf_counter()
        totals[key] = totals.get(key, 0.0) + now - t0
        return now

    try:
        for i in range(samples):
            t = time.perf_counter()
            image, label = ds.load(i % len(ds))
            t = add("read cache", t)
            rng = np.random.default_rng([0, 0, i])
            for step in ds.transform.transforms:
                image, label = step(image, label, rng=rng)
                t = add(type(step).__name__, t)
            image_to_tensor(image, ds.mean, ds.std), label_to_tensor(label)
            add("to tensor + normalise", t)
    finally:
        torch.set_num_threads(threads)
    return {k: 1e3 * v / samples for k, v in totals.items()}


def augment_loader(
    root: Path,
    split: str,
    crop: Sequence[int],
    workers: Sequence[int] = (0, 1, 2),
    images: int = 16,
    batch: int = 2,
    iters: int = 1,
    recipe: str = DEFAULT_RECIPE,
) -> dict[str, Any]:
    """Loader images/s per worker count and the per-step cost: {"recipe", "crop", "batch", "images",
    "img_s_by_workers": {workers: img/s}, "step_ms": {step: ms per image}}."""
    ds = recipe_dataset(root, split, recipe, crop)  # builds the full-resolution cache (untimed)
    rates = {str(w): dataloader_rate(ds, batch, images, int(w), 1, iters) for w in workers}
    return {
        "recipe": recipe,
        "crop": [int(v) for v in crop],
        "frames": len(ds),
        "batch": batch,
        "images": images,
        "img_s_by_workers": rates,
        "step_ms": step_ms(ds, min(images, 8)),
    }
