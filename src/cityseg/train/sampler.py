"""A seeded, resumable, distributed batch sampler.

The order of epoch ``e`` is one permutation drawn from ``(seed, e)``, cut into GLOBAL batches of
``batch_size``; under torchrun process ``r`` of ``W`` takes the ``r``-th contiguous slice of every global
batch. So the union of the processes' k-th batches is exactly the single-process k-th batch (the same
data in the same steps for any world size), and ``start_step`` skips the batches an interrupted epoch
already trained on (mid-epoch resume). Like ``DistributedSampler`` it needs ``set_epoch`` every epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from cityseg.errors import CitysegError


def epoch_seed(seed: int, epoch: int, salt: int = 0) -> int:
    """A 63-bit seed derived from (seed, epoch, salt); epochs never share a stream."""
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch) * 7_919 + int(salt)) % (2**63))
    return int(torch.randint(0, 2**62, (), generator=g).item())


class EpochBatchSampler(torch.utils.data.Sampler[list[int]]):
    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True, drop_last: bool = False):
        if n <= 0:
            raise CitysegError("cannot sample batches from an empty dataset")
        if batch_size % world_size:
            raise CitysegError(f"batch size {batch_size} is the GLOBAL batch and must be divisible by the {world_size} processes")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.per_rank = batch_size // world_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = int(epoch), int(start_step)

    def epoch_order(self) -> list[int]:
        """The ``n`` dataset indices of this epoch, in training order (a function of ``(seed, epoch)``)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            return torch.randperm(self.n, generator=g).tolist()
        return list(range(self.n))

    def global_batches(self) -> list[list[int]]:
        order = self.epoch_order()
        batches = [order[i : i + self.batch_size] for i in range(0, self.n, self.batch_size)]
        if batches and len(batches[-1]) < self.batch_size:
            # a partial last batch is kept only if it still splits evenly across the processes
            if self.drop_last or len(batches[-1]) % self.world_size:
                batches.pop()
        return batches

    def __len__(self) -> int:
        """Steps per epoch (for the whole epoch, regardless of ``start_step``)."""
        full, rest = divmod(self.n, self.batch_size)
        keep_rest = rest and not self.drop_last and rest % self.world_size == 0
        return full + (1 if keep_rest else 0)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches()[self.start_step :]:
            k = len(batch) // self.world_size
            yield batch[self.rank * k : (self.rank + 1) * k]
