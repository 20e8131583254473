"""``CityscapesDataset``: (image, label) tensors from the official layout, via the preprocessed cache.

Images and labels are paired by stem (``layout.find_samples``), read with the validated readers, resized
as in the seed (``transforms.resize_image`` / ``resize_label``) and, with ``cache=True``, stored once in
the memory-mapped cache (``cache.prepare``), so a sample costs a memmap slice instead of a PNG
decode. Labels come out as labelIds 0..33 or trainIds 0..18 + 255 (``label_mode``); a CamVid root
(``layout.is_camvid``) goes the same way in the "camvid" mode, ids 0..10 + 255.

Augmentation randomness: with ``seed`` set, sample ``i`` of epoch ``e`` (``ds.set_epoch(e)``) is augmented
with ``numpy.random.default_rng([seed, e, i])``, independent of worker count and of resuming; call
``set_epoch`` before each epoch's DataLoader iterator is created (workers receive a copy of the dataset
when the iterator starts, so do not use ``persistent_workers`` with it). Without ``seed`` the transforms
draw from torch's RNG, which DataLoader seeds per worker.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from cityseg import io, labels
from cityseg.data import cache as cache_mod
from cityseg.data import layout, readers
from cityseg.data.transforms import check_interpolation, check_size, image_to_tensor, label_to_tensor, resize_image
from cityseg.errors import CitysegError

#: annotation file values -> ``label_mode`` values, for the modes that are not the files' own
FILE_TO_MODE = {"trainIds": labels.LABELID_TO_TRAINID, "camvid": labels.CAMVID_FILE_TO_MODE}


def check_mode_fits(root, kind: str, label_mode: str) -> None:
    """A CamVid root trains and scores in the "camvid" label mode, a Cityscapes root in the other two."""
    if (kind == "camvid") != (label_mode == "camvid"):
        want = "camvid" if kind == "camvid" else "labelIds or trainIds"
        raise CitysegError(f"{root}: a {'CamVid' if kind == 'camvid' else 'Cityscapes'} root needs label mode {want}, not {label_mode!r}")


def _accepts_rng(fn) -> bool:
    if fn is None:
        return False
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "rng" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class CityscapesDataset(Dataset):
    """Cityscapes (or SynthCity) split as a torch ``Dataset``: ``ds[i] -> (float32 3xHxW, int64 HxW)``.

    ``root``: dataset root (``--data``, else ``$CITYSCAPES_DATASET``, else ``./data/cityscapes``).
    ``size``: (H, W) after resizing, None for full resolution. ``label_mode``: "labelIds" or "trainIds"
    ("camvid" on a CamVid root).
    ``interpolation``: image resize, "area" (seed README) or "bilinear" (seed code). ``mean``/``std``:
    optional normalisation in [0, 1] units. ``transform(image, label[, rng=])``: paired numpy augmentation
    on uint8 arrays (label already in ``label_mode``), after resizing and before tensor conversion.
    ``cache``: read from the memory-mapped cache (built on first use) instead of decoding PNGs.
    ``annotation``: "gtFine" or "gtCoarse". ``seed``: per-sample augmentation seeding (see module doc).
    The test split (no labels needed) yields labels filled with the void value (0, or 255 for trainIds).
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        size: Sequence[int] | None = (128, 256),
        label_mode: str = "labelIds",
        interpolation: str = "area",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        transform: Callable | None = None,
        cache: bool = True,
        annotation: str = "gtFine",
        cache_dir: str | os.PathLike | None = None,
        seed: int | None = None,
        workers: int = 2,
    ):
        self.root = layout.resolve_root(root)
        self.split = split
        self.size = check_size(size)
        self.label_mode = labels.check_label_mode(label_mode)
        self.interpolation = check_interpolation(interpolation)
        self.mean, self.std = mean, std
        image_to_tensor(np.zeros((1, 1, 3), np.uint8), mean, std)  # validate mean/std now, not in a worker
        self.transform = transform
        self._transform_takes_rng = _accepts_rng(transform)
        self.annotation = annotation
        self.seed = seed
        self.epoch = 0
        self.samples: list[layout.Sample] = layout.require_samples(self.root, split, annotation, require_labels=split != "test")
        check_mode_fits(self.root, self.samples[0].dataset, self.label_mode)
        self.num_classes = labels.num_classes(self.label_mode)
        self.class_names = labels.class_names(self.label_mode)
        self._entry: cache_mod.CacheEntry | None = None
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        self.cache = bool(cache) and all(s.label is not None for s in self.samples)
        if self.cache:
            self._entry = cache_mod.prepare(self.root, split, self.size, self.interpolation, annotation, cache_dir, workers=workers)
            if list(self._entry.stems) != [s.stem for s in self.samples]:  # pragma: no cover - defensive
                raise CitysegError(f"{self._entry.folder}: cache does not match the split's files; run `cityseg prepare --force`")

    # -- pickling for DataLoader workers: never pickle the memmaps, reopen them in the worker ----------
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_arrays"] = None
        return state

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (only matters with ``seed``)."""
        self.epoch = int(epoch)

    def _label_void(self, shape) -> np.ndarray:
        return np.full(shape, labels.VOID_VALUE[self.label_mode], np.uint8)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Resized uint8 (image HxWx3, label HxW in ``label_mode``) of sample ``index``, before augmentation."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index %= len(self)
        if self._entry is not None:
            if self._arrays is None:
                self._arrays = self._entry.open()
            images, label_ids = self._arrays
            image, label = np.array(images[index]), np.array(label_ids[index])
        else:
            s = self.samples[index]
            if s.label is None:
                image = resize_image(io.read_image(s.image), self.size, self.interpolation)
                return image, self._label_void(image.shape[:2])
            image, label = readers.read_pair(s.image, s.label, self.size, self.interpolation)
        lut = FILE_TO_MODE.get(self.label_mode)
        return image, (label if lut is None else lut[label])

    def augmented(self, index: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` as uint8 arrays after ``transform``; ``rng``, when given, replaces the per-sample
        generator of the module doc (a caller that owns the sample's randomness, e.g. ``MixedDataset``)."""
        image, label = self.load(index)
        if self.transform is None:
            return image, label
        if self._transform_takes_rng:
            if rng is None and self.seed is not None:
                rng = np.random.default_rng([int(self.seed), self.epoch, int(index) % len(self)])
            if rng is not None:
                return self.transform(image, label, rng=rng)
        return self.transform(image, label)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.augmented(index)
        return image_to_tensor(image, self.mean, self.std), label_to_tensor(label)

    def __repr__(self) -> str:
        res = "full" if self.size is None else f"{self.size[0]}x{self.size[1]}"
        return (
            f"CityscapesDataset(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, size={res}, "
            f"label_mode={self.label_mode!r}, interpolation={self.interpolation!r}, cache={self.cache})"
        )
