"""``MixedDataset``: several datasets as one index space, with optional ClassMix across all of them.

Index ``i`` is frame ``i - offsets[k]`` of the source ``k`` it falls in (``torch``'s ``ConcatDataset``
convention). Sample ``i`` of epoch ``e`` draws all its randomness from ``numpy.random.default_rng([seed,
e, i])``: the source's own augmentation first, so the first source's frames are augmented exactly as
``CityscapesDataset`` alone would; then, with probability ``classmix``, the same generator picks a second
frame from any source, augments it, and pastes half of its classes onto the first (``transforms.classmix``).
The sample is therefore a function of ``(seed, epoch, i)`` only: independent of workers and of resuming.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from cityseg.data.dataset import CityscapesDataset
from cityseg.data.transforms import classmix, image_to_tensor, label_to_tensor
from cityseg.errors import CitysegError


class MixedDataset(Dataset):
    """The concatenation of ``parts`` (one label mode, one output size); ``ds[i] -> (image, label)`` tensors."""

    def __init__(self, parts: Sequence[CityscapesDataset], seed: int, classmix: float = 0.0, ignore_value: int = 255):
        if not parts:
            raise CitysegError("a mixed dataset needs at least one source")
        if len({p.label_mode for p in parts}) != 1:
            raise CitysegError("the mixed sources must share one label mode")
        self.parts = list(parts)
        self.lengths = [len(p) for p in self.parts]
        self.offsets = list(itertools.accumulate(self.lengths, initial=0))
        self.seed, self.classmix, self.ignore_value = int(seed), float(classmix), int(ignore_value)
        self.mean, self.std = self.parts[0].mean, self.parts[0].std
        self.epoch = 0

    def __len__(self) -> int:
        return self.offsets[-1]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for p in self.parts:
            p.set_epoch(epoch)

    def locate(self, index: int) -> tuple[int, int]:
        """(source, frame within the source) of concatenated index ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        k = bisect.bisect_right(self.offsets, index) - 1
        return k, index - self.offsets[k]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Resized uint8 (image, label) of ``index`` before augmentation (``CityscapesDataset.load``)."""
        k, j = self.locate(index)
        return self.parts[k].load(j)

    def augmented(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        k, j = self.locate(index)
        return self.parts[k].augmented(j, rng)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, label = self.augmented(index, rng)
        if self.classmix > 0 and rng.random() < self.classmix:
            image2, label2 = self.augmented(int(rng.integers(len(self))), rng)
            image, label, _ = classmix(image, label, image2, label2, rng, self.ignore_value)
        return image_to_tensor(image, self.mean, self.std), label_to_tensor(label)

    def __repr__(self) -> str:
        return f"MixedDataset({len(self.parts)} sources, n={len(self)}, classmix={self.classmix})"
