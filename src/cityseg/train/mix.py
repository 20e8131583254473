"""Training on several datasets at once, each drawn at its weight (``data.sources``).

``weighted_order`` is a pure function of ``(seed, epoch, lengths, weights, n)``: the ``n`` indices of one
epoch into the concatenation of the sources, in training order. Every position's source is drawn at the
normalised weights; within a source the frames follow fresh permutations chained end to end, so a source
shows each of its frames once before any frame twice. With one source and ``n`` its length the order is
exactly ``EpochBatchSampler``'s permutation. ``WeightedEpochBatchSampler`` only replaces the order, so the
global batches, the per-process slices ("the union of the processes' k-th batches is exactly the
single-process k-th batch") and mid-epoch resume (``set_epoch(epoch, start_step)``) are the base class's.

An epoch is ``sum(lengths)`` draws: as many as the sources hold together, so ``train.epochs`` keeps
meaning "about one pass over the training frames" whatever the weights, and equal weights in proportion
to the sizes give the expected mix of a plain shuffle of the concatenation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cityseg.errors import CitysegError
from cityseg.train import distributed as D
from cityseg.train.sampler import EpochBatchSampler, epoch_seed

#: the salt of the generator that assigns positions to sources (the frame order uses salt 0, like the base)
SOURCE_SALT = 1 << 20


def weighted_order(seed: int, epoch: int, lengths: Sequence[int], weights: Sequence[float], n: int) -> list[int]:
    """The ``n`` concatenated-dataset indices of epoch ``epoch``; source ``k`` fills each position with
    probability ``weights[k] / sum(weights)``."""
    if not lengths or len(lengths) != len(weights) or min(lengths) <= 0 or min(weights) <= 0:
        raise CitysegError(f"weighted sampling needs non-empty sources with positive weights, got lengths {list(lengths)} and weights {list(weights)}")
    if len(lengths) == 1 or n == 0:
        source = torch.zeros(n, dtype=torch.long)
    else:
        gs = torch.Generator().manual_seed(epoch_seed(seed, epoch, SOURCE_SALT))
        source = torch.multinomial(torch.tensor(weights, dtype=torch.float64), n, replacement=True, generator=gs)
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    order = torch.empty(n, dtype=torch.long)
    offset = 0
    for k, length in enumerate(lengths):
        where = (source == k).nonzero().flatten()
        passes = -(-len(where) // length)
        if passes:
            picks = torch.cat([torch.randperm(length, generator=g) for _ in range(passes)])
            order[where] = picks[: len(where)] + offset
        offset += length
    return order.tolist()


class WeightedEpochBatchSampler(EpochBatchSampler):
    """``EpochBatchSampler`` over the concatenated sources, in ``weighted_order``; an epoch is ``sum(lengths)`` draws."""

    def __init__(
        self, lengths: Sequence[int], weights: Sequence[float], batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = False
    ):
        weighted_order(seed, 0, lengths, weights, 0)  # checks lengths and weights now, not at the first epoch
        super().__init__(sum(lengths), batch_size, seed=seed, rank=rank, world_size=world_size, shuffle=True, drop_last=drop_last)
        self.lengths, self.weights = [int(v) for v in lengths], [float(w) for w in weights]

    def epoch_order(self) -> list[int]:
        return weighted_order(self.seed, self.epoch, self.lengths, self.weights, self.n)


def source_roots(cfg: dict[str, Any]) -> list[Path]:
    """The ``data.sources`` roots, each an existing folder; a missing one is an error naming its key."""
    roots = []
    for k, spec in enumerate(cfg["data"]["sources"]):
        root = Path(spec["root"])
        if not root.is_dir():
            raise CitysegError(f"data.sources[{k}].root = {spec['root']!r}: no such folder")
        roots.append(root)
    return roots


def train_sampler(cfg: dict[str, Any], lengths: Sequence[int], info: D.DistInfo) -> EpochBatchSampler:
    """The run's batch sampler: weighted over ``data.sources`` when it names any, else the plain shuffle."""
    t, sources = cfg["train"], cfg["data"]["sources"]
    common = {"seed": int(t["seed"]), "rank": info.rank, "world_size": info.world_size, "drop_last": t["drop_last"]}
    if sources:
        return WeightedEpochBatchSampler(lengths, [s["weight"] for s in sources], t["batch_size"], **common)
    return EpochBatchSampler(sum(lengths), t["batch_size"], shuffle=True, **common)
