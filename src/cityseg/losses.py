"""Segmentation losses on logits ``B x C x H x W`` and integer targets ``B x H x W``.

Every loss skips pixels equal to ``ignore_index`` (255 for trainIds; the seed's 34-labelId setup has no
ignored pixels) and computes in float32 even under bf16/fp16 autocast. ``build_loss(specs, ...)`` turns
the recipe's ``loss = [{name = "ce", weight = 1.0}, {name = "dice", weight = 0.5}]`` into one module.

* ``ce``      cross-entropy, optional class weights and label smoothing (``F.cross_entropy``)
* ``ohem``    online hard example mining CE (BiSeNet / PSPNet style): keep the pixels whose loss exceeds
              ``-log(thresh)``, and at least the ``min_kept`` hardest ones
* ``dice``    soft multi-class Dice, 1 - mean over the classes present in the batch
* ``focal``   focal loss (Lin et al. 2017), ``-(1 - p_t)^gamma log p_t``
* ``lovasz``  Lovász-softmax (Berman et al. 2018), the convex surrogate of the Jaccard loss
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cityseg.errors import CitysegError


def _valid(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten to (N, C) probabilities-ready logits and (N,) targets, dropping ignored pixels."""
    if logits.dim() != 4 or target.dim() != 3 or logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"expected logits BxCxHxW and target BxHxW, got {tuple(logits.shape)} and {tuple(target.shape)}")
    c = logits.shape[1]
    flat = logits.float().permute(0, 2, 3, 1).reshape(-1, c)
    t = target.reshape(-1)
    keep = t != ignore_index
    return flat[keep], t[keep]


class CrossEntropyLoss(nn.Module):
    """Pixel-averaged cross-entropy (``F.cross_entropy``); with class weights it is the weighted mean."""

    def __init__(self, ignore_index: int = 255, class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("class_weights", None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not bool((target != self.ignore_index).any()):
            return logits.sum() * 0.0  # an all-ignored batch contributes nothing (F.cross_entropy would give NaN)
        return F.cross_entropy(
            logits.float(), target, weight=self.class_weights, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )


class OhemCrossEntropyLoss(nn.Module):
    """Cross-entropy over the hardest pixels only.

    Pixels are sorted by their CE; every pixel whose probability for the true class is below ``thresh``
    is kept, and if fewer than ``min_kept`` are, the ``min_kept`` hardest ones are (``min_kept`` <= 1 is a
    fraction of the valid pixels). The loss is the mean over the kept pixels.
    """

    def __init__(self, ignore_index: int = 255, thresh: float = 0.7, min_kept: float = 0.1,
                 class_weights: torch.Tensor | None = None):
        super().__init__()
        if not 0.0 < thresh <= 1.0:
            raise ValueError(f"ohem thresh must be in (0, 1], got {thresh}")
        self.ignore_index = ignore_index
        self.thresh = float(thresh)
        self.min_kept = float(min_kept)
        self.register_buffer("class_weights", None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        flat, t = _valid(logits, target, self.ignore_index)
        if t.numel() == 0:
            return logits.sum() * 0.0
        loss = F.cross_entropy(flat, t, weight=self.class_weights, reduction="none")
        n = t.numel()
        min_kept = int(round(self.min_kept * n)) if self.min_kept <= 1.0 else int(self.min_kept)
        min_kept = max(1, min(n, min_kept))
        sorted_loss, _ = torch.sort(loss, descending=True)
        hard = sorted_loss[sorted_loss > -math.log(self.thresh)]
        kept = hard if hard.numel() >= min_kept else sorted_loss[:min_kept]
        return kept.mean()


class DiceLoss(nn.Module):
    """Soft Dice: ``1 - mean_c (2 sum p_c g_c + s) / (sum p_c + sum g_c + s)`` over the batch's pixels,
    averaged over the classes that occur in the target (as smp's multiclass DiceLoss)."""

    def __init__(self, ignore_index: int = 255, smooth: float = 1.0):
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth = float(smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        flat, t = _valid(logits, target, self.ignore_index)
        if t.numel() == 0:
            return logits.sum() * 0.0
        prob = flat.softmax(dim=1)
        onehot = F.one_hot(t, prob.shape[1]).to(prob.dtype)
        inter = (prob * onehot).sum(0)
        card = prob.sum(0) + onehot.sum(0)
        dice = (2.0 * inter + self.smooth) / (card + self.smooth)
        present = onehot.sum(0) > 0
        return 1.0 - dice[present].mean()


class FocalLoss(nn.Module):
    """Focal loss ``mean over valid pixels of -(1 - p_t)^gamma * log p_t`` (gamma = 0 is plain CE)."""

    def __init__(self, ignore_index: int = 255, gamma: float = 2.0):
        super().__init__()
        self.ignore_index = ignore_index
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        flat, t = _valid(logits, target, self.ignore_index)
        if t.numel() == 0:
            return logits.sum() * 0.0
        logp_t = flat.log_softmax(dim=1).gather(1, t[:, None])[:, 0]
        p_t = logp_t.exp()
        return (-((1.0 - p_t) ** self.gamma) * logp_t).mean()


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. errors sorted in decreasing order."""
    p = gt_sorted.numel()
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if p > 1:
        jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
    return jaccard


def lovasz_softmax_flat(prob: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Lovász-softmax over (N, C) probabilities and (N,) labels, averaged over the classes present."""
    losses = []
    for c in range(prob.shape[1]):
        fg = (labels == c).to(prob.dtype)
        if fg.sum() == 0:
            continue
        errors = (fg - prob[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(fg[perm])))
    if not losses:
        return prob.sum() * 0.0
    return torch.stack(losses).mean()


class LovaszSoftmaxLoss(nn.Module):
    """Lovász-softmax loss (reference implementation of Berman et al., classes present in the target)."""

    def __init__(self, ignore_index: int = 255, per_image: bool = False):
        super().__init__()
        self.ignore_index = ignore_index
        self.per_image = bool(per_image)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.per_image:
            losses = []
            for lg, tg in zip(logits, target):
                flat, t = _valid(lg[None], tg[None], self.ignore_index)
                losses.append(lovasz_softmax_flat(flat.softmax(1), t) if t.numel() else lg.sum() * 0.0)
            return torch.stack(losses).mean()
        flat, t = _valid(logits, target, self.ignore_index)
        if t.numel() == 0:
            return logits.sum() * 0.0
        return lovasz_softmax_flat(flat.softmax(1), t)


class CombinedLoss(nn.Module):
    """``sum_i weight_i * loss_i``; ``last`` holds the detached value of each term of the latest call."""

    def __init__(self, terms: Sequence[tuple[str, float, nn.Module]]):
        super().__init__()
        if not terms:
            raise ValueError("at least one loss term is needed")
        self.names = [n for n, _, _ in terms]
        self.weights = [float(w) for _, w, _ in terms]
        self.losses = nn.ModuleList(m for _, _, m in terms)
        self.last: dict[str, float] = {}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = None
        parts = {}
        for name, w, fn in zip(self.names, self.weights, self.losses):
            value = fn(logits, target)
            parts[name] = value.detach()
            total = w * value if total is None else total + w * value
        self.last = parts
        return total


#: loss name -> (class, option names it accepts besides ``name`` and ``weight``)
LOSSES: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    "ce": (CrossEntropyLoss, ("class_weights", "label_smoothing")),
    "ohem": (OhemCrossEntropyLoss, ("class_weights", "thresh", "min_kept")),
    "dice": (DiceLoss, ("smooth",)),
    "focal": (FocalLoss, ("gamma",)),
    "lovasz": (LovaszSoftmaxLoss, ("per_image",)),
}


def class_weights_from_counts(counts: torch.Tensor | Sequence[float], c: float = 1.02) -> torch.Tensor:
    """ENet-style class weights ``1 / ln(c + frequency)`` from per-class pixel counts (absent classes get
    the largest weight, which is harmless: they never occur in the target)."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    freq = counts / counts.sum().clamp(min=1.0)
    return (1.0 / torch.log(c + freq)).float()


def build_loss(
    specs: Sequence[dict[str, Any]],
    num_classes: int,
    ignore_index: int = 255,
    class_counts: torch.Tensor | None = None,
) -> CombinedLoss:
    """Build the weighted sum of losses described by ``specs`` (validated recipe entries).

    ``class_weights`` may be ``"none"``, ``"auto"`` (needs ``class_counts``: per-class pixel counts of the
    training labels) or an explicit list of ``num_classes`` floats.
    """
    terms = []
    for spec in specs:
        spec = dict(spec)
        name = spec.pop("name")
        weight = float(spec.pop("weight", 1.0))
        if name not in LOSSES:
            raise CitysegError(f"unknown loss {name!r}: choose one of {', '.join(LOSSES)}")
        cls, allowed = LOSSES[name]
        for key in spec:
            if key not in allowed:
                raise CitysegError(f"loss {name!r} has no option {key!r} (options: name, weight, {', '.join(allowed)})")
        cw = spec.get("class_weights", "none")
        if "class_weights" in spec:
            if cw == "none":
                spec["class_weights"] = None
            elif cw == "auto":
                if class_counts is None:
                    raise CitysegError(f"loss {name!r}: class_weights = 'auto' needs the training label counts")
                spec["class_weights"] = class_weights_from_counts(class_counts)
            elif isinstance(cw, (list, tuple)):
                if len(cw) != num_classes:
                    raise CitysegError(f"loss {name!r}: class_weights has {len(cw)} values, the model has {num_classes} classes")
                spec["class_weights"] = torch.tensor([float(v) for v in cw])
            else:
                raise CitysegError(f"loss {name!r}: class_weights must be 'none', 'auto' or a list of {num_classes} numbers")
        terms.append((name, weight, cls(ignore_index=ignore_index, **spec)))
    return CombinedLoss(terms)
