"""Learning-rate schedules, stepped once per optimizer step (iteration), as ``LambdaLR`` factors.

``constant`` (the seed: none), ``poly`` (``(1 - t)^power``, the DeepLab / torchvision segmentation
reference schedule) and ``cosine``, each after an optional linear warmup from ``warmup_factor * lr``.
``min_lr`` is a floor: the factor never goes below ``min_lr / lr``.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def lr_factor(it: int, total: int, name: str = "constant", power: float = 0.9, warmup_iters: int = 0, warmup_factor: float = 1e-3, floor: float = 0.0) -> float:
    """Multiplier of the base LR at iteration ``it`` (0-based) of ``total``."""
    if warmup_iters > 0 and it < warmup_iters:
        alpha = it / warmup_iters
        return warmup_factor * (1.0 - alpha) + alpha
    if name == "constant":
        return 1.0
    span = max(1, total - warmup_iters)
    t = min(1.0, max(0.0, (it - warmup_iters) / span))
    if name == "poly":
        f = (1.0 - t) ** power
    elif name == "cosine":
        f = 0.5 * (1.0 + math.cos(math.pi * t))
    else:
        raise ValueError(f"unknown schedule {name!r}")
    return max(floor, f)


def build_scheduler(optimizer: torch.optim.Optimizer, sched: dict[str, Any], total_iters: int, base_lr: float) -> torch.optim.lr_scheduler.LambdaLR:
    floor = sched["min_lr"] / base_lr if base_lr > 0 else 0.0

    def factor(it: int) -> float:
        return lr_factor(it, total_iters, sched["name"], sched["power"], sched["warmup_iters"], sched["warmup_factor"], floor)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
