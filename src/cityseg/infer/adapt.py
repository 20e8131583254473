"""AdaBN (Li et al. 2016, "Revisiting Batch Normalization For Practical Domain Adaptation"): re-estimate
every BatchNorm's running mean and variance on unlabelled images of the target domain.

``adapt_batchnorm(model, batches)`` runs the batches through the model with its BatchNorm layers in
training mode (``momentum=None``, the cumulative average) and everything else in eval mode (dropout off),
without gradients, and leaves each BatchNorm with the per-channel mean and unbiased variance of its input
over every pixel of every image, pooled exactly across batches of any size (Chan et al.'s parallel update,
in float64). Nothing but the BatchNorm buffers changes; the BatchNorms of training-only heads, which
inference never runs, keep theirs. ``adapt_checkpoint`` does it for a checkpoint and a
folder of images, preprocessed by the checkpoint's own ``Predictor.input_tensor``, and writes a normal
checkpoint recording ``adapted_to``.

A BatchNorm after a global pool sees one value per image and channel, so it cannot run in training mode on
a batch of one: batches are at least two images where there are two (the last partial batch borrows one).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cityseg import io
from cityseg.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from cityseg.data import layout
from cityseg.errors import CitysegError
from cityseg.infer.predictor import Predictor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


@dataclass
class Moments:
    """Running per-channel count, mean and sum of squared deviations (float64) of one BatchNorm's input."""

    n: int = 0
    mean: torch.Tensor | None = None
    m2: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        """Pool the values of ``x`` (N x C x ...) per channel into the running moments."""
        v = x.detach().transpose(0, 1).reshape(x.shape[1], -1).double()
        k = v.shape[1]
        mean = v.mean(1)
        m2 = ((v - mean[:, None]) ** 2).sum(1)
        if self.mean is None:
            self.n, self.mean, self.m2 = k, mean, m2
            return
        total = self.n + k
        delta = mean - self.mean
        self.mean = self.mean + delta * (k / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.n * k / total)
        self.n = total

    def variance(self) -> torch.Tensor:
        """Unbiased variance (as BatchNorm's running_var keeps it)."""
        return self.m2 / max(self.n - 1, 1)


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model`` (1-, 2-, 3-d and synchronised ones) that keeps running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextlib.contextmanager
def _bn_training(model: nn.Module, layers: Sequence[nn.Module]) -> Iterator[None]:
    """The model in eval mode but ``layers`` in training mode with ``momentum=None``; restored afterwards."""
    was_training = model.training
    momenta = [bn.momentum for bn in layers]
    model.eval()
    for bn in layers:
        bn.train()
        bn.momentum = None
    try:
        yield
    finally:
        for bn, m in zip(layers, momenta):
            bn.momentum = m
        model.train(was_training)


def adapt_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor], device: str | torch.device | None = None) -> int:
    """Re-estimate every BatchNorm's running statistics of ``model`` on ``batches`` (B x 3 x H x W input
    tensors, B >= 2 where the model pools globally); returns the number of images seen. See the module doc."""
    layers = batchnorms(model)
    if not layers:
        raise CitysegError(f"{type(model).__name__}: the model has no BatchNorm layer to adapt")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    moments = {bn: Moments() for bn in layers}
    hooks = [bn.register_forward_pre_hook(lambda mod, args: moments[mod].add(args[0])) for bn in layers]
    seen = runs = 0
    try:
        with _bn_training(model, layers), torch.no_grad():
            for x in batches:
                try:
                    model(x.to(device))
                except ValueError as e:  # BatchNorm in training mode on one value per channel
                    raise CitysegError(
                        f"AdaBN: a batch of {x.shape[0]} image(s) is too small for this model ({e}); use more images or a larger batch"
                    ) from None
                seen, runs = seen + int(x.shape[0]), runs + 1
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        raise CitysegError("AdaBN: no images to adapt to")
    with torch.no_grad():
        for bn, mom in moments.items():
            if mom.mean is None:  # a training-only head (auxiliary, boundary): inference never runs it
                continue
            bn.running_mean.copy_(mom.mean.to(bn.running_mean.dtype))
            bn.running_var.copy_(mom.variance().to(bn.running_var.dtype))
            if bn.num_batches_tracked is not None:
                bn.num_batches_tracked.fill_(runs)
    return seen


# ---- images -----------------------------------------------------------------------------------------
def find_images(folder: str | os.PathLike, split: str = "train") -> list[Path]:
    """The images to adapt to: every .png/.jpg under ``folder``; for a dataset root, its ``split``'s images
    (a CamVid root's ``split/``, a Cityscapes root's ``leftImg8bit/split/``), never its annotations."""
    folder = Path(folder)
    if not folder.exists():
        raise CitysegError(f"{folder}: image folder not found")
    if not folder.is_dir():
        raise CitysegError(f"{folder}: not a folder")
    if layout.is_camvid(folder) or (folder / "leftImg8bit").is_dir():
        return [s.image for s in layout.require_samples(folder, split, require_labels=False)]
    found = sorted({p for suffix in IMAGE_SUFFIXES for p in layout.walk_files(folder, suffix)})
    if not found:
        raise CitysegError(f"{folder}: no .png or .jpg images found (searched recursively)")
    return found


def batch_sizes(n: int, batch: int) -> list[int]:
    """``n`` images in batches of ``batch``; a last batch of one takes an image from the one before, so
    no batch holds a single image unless ``n`` or ``batch`` is 1."""
    batch = max(1, int(batch))
    sizes = [batch] * (n // batch) + ([n % batch] if n % batch else [])
    if len(sizes) > 1 and sizes[-1] == 1 and batch > 2:
        sizes[-2:] = [batch - 1, 2]
    elif len(sizes) > 1 and sizes[-1] == 1:  # batches of two: the last three images go together
        sizes[-2:] = [3]
    return sizes


def image_batches(paths: Sequence[Path], predictor: Predictor, size: Sequence[int], batch: int) -> Iterator[torch.Tensor]:
    """Batches of the images at ``paths``, each preprocessed by the predictor's own ``input_tensor``."""
    start = 0
    for k in batch_sizes(len(paths), batch):
        yield torch.stack([predictor.input_tensor(io.read_image(p), size) for p in paths[start : start + k]])
        start += k


# ---- a checkpoint -----------------------------------------------------------------------------------
def adapt_checkpoint(
    checkpoint: str | os.PathLike,
    images: str | os.PathLike,
    out: str | os.PathLike,
    size: Sequence[int] | None = None,
    batch: int = 8,
    device: str = "cpu",
    split: str = "train",
) -> dict[str, Any]:
    """AdaBN for a checkpoint: BatchNorm statistics re-estimated on ``images`` (``find_images``) at ``size``
    (default: the checkpoint's input size), written atomically to ``out`` as a model checkpoint (no
    optimizer state) whose ``adapted_to`` records the folder, the number of images, the size and the batch.
    ``out`` is only written when everything succeeded. Returns ``adapted_to``."""
    paths = find_images(images, split)
    ckpt = load_checkpoint(checkpoint)
    predictor = Predictor.from_checkpoint(ckpt, device=device)
    size = tuple(int(v) for v in (size or predictor.input_size))
    check = getattr(predictor.model, "check_input_shape", None)
    if check is not None:
        check(*size)
    n = adapt_batchnorm(predictor.model, image_batches(paths, predictor, size, batch), device)
    adapted_to = {"folder": str(Path(images).resolve()), "images": n, "size": list(size), "batch": int(batch)}
    state = {k: v.detach().cpu() for k, v in predictor.model.state_dict().items()}
    fields = {"optimizer": None, "scheduler": None, "scaler": None, "train_state": None, "rng": None, "step": 0}
    save_checkpoint(out, Checkpoint.from_dict({**ckpt, "model": state, **fields, "adapted_to": adapted_to}, where=str(checkpoint)))
    return adapted_to
