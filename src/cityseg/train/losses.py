"""Segmentation losses on logits ``B x C x H x W`` and integer targets ``B x H x W``.

Every loss skips pixels equal to ``ignore_index`` (255 for trainIds; the seed's 34-labelId setup has no
ignored pixels) and computes in float32 even under bf16/fp16 autocast. ``build_loss(specs, ...)`` turns
the recipe's ``loss = [{name = "ce", weight = 1.0}, {name = "dice", weight = 0.5}]`` into one module.
A term reads the model output its ``output`` names (default ``"out"``), so a model with training-only
heads adds e.g. ``{name = "ohem", weight = 0.4, output = "aux"}`` (or ``output = "aux*"``: every output
whose name starts with ``aux``).

Outputs may come at the model's own output stride (a DDRNet head at 1/8): the loss resizes every output
bilinearly to its resolution, the label map's size times ``scale`` (``train.loss_scale``; labels are
nearest-downsampled when ``scale < 1``), as mmsegmentation resizes logits to the labels. On a CPU the
upsampling and the per-pixel softmax at full resolution cost more than a small network's own step, so a
short-budget recipe computes its loss at a fraction of the crop. Options counted in pixels keep their
full-resolution meaning at a reduced scale: OHEM's absolute ``min_kept`` is a count of label pixels (so
it keeps ``min_kept * scale**2`` loss pixels), and the boundary band's ``width`` is in label pixels (a
window of ``max(2, round(width * scale))`` loss pixels).

Under torchrun the pixel-averaged losses (``ce``, ``ohem``, ``focal``, ``boundary``, ``boundary_ce``)
normalise over the pixels of every process (the valid-pixel count, and OHEM's kept set, are agreed with
collectives), so DDP with N processes equals one process with the same global batch: each process
returns ``N * its sum / the global count`` and DDP averages the gradients. ``dice`` and ``lovasz`` are not
sums over pixels; they stay per process (each process's own half batch), as in mmsegmentation.

* ``ce``      cross-entropy, optional class weights and label smoothing (``F.cross_entropy``)
* ``ohem``    online hard example mining CE (BiSeNet / PSPNet style): keep the pixels whose loss exceeds
              ``-log(thresh)``, and at least the ``min_kept`` hardest ones
* ``dice``    soft multi-class Dice, 1 - mean over the classes present in the batch
* ``focal``   focal loss (Lin et al. 2017), ``-(1 - p_t)^gamma log p_t``
* ``lovasz``  Lovász-softmax (Berman et al. 2018), the convex surrogate of the Jaccard loss
* ``boundary``     PIDNet's class-balanced binary CE of the ``boundary`` output against the label edges
* ``boundary_ce``  PIDNet's boundary-awareness CE: OHEM CE of ``out`` where the boundary head fires

Adding a loss is a class plus one ``LOSSES`` entry: its keyword arguments become its recipe options. A
loss on one logits tensor implements ``forward(logits, target)``. A loss that reads several outputs
(e.g. a boundary-aware CE reading ``"out"`` and ``"boundary"``) sets the class attribute
``outputs = ("out", "boundary")`` and implements ``forward(outputs: dict, target)``.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cityseg.errors import CitysegError
from cityseg.train import distributed as D


def _valid(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten to (N, C) probabilities-ready logits and (N,) targets, dropping ignored pixels."""
    if logits.dim() != 4 or target.dim() != 3 or logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"expected logits BxCxHxW and target BxHxW, got {tuple(logits.shape)} and {tuple(target.shape)}")
    c = logits.shape[1]
    flat = logits.float().permute(0, 2, 3, 1).reshape(-1, c)
    t = target.reshape(-1)
    keep = t != ignore_index
    return flat[keep], t[keep]


class PixelLoss(nn.Module):
    """A loss that is a sum over pixels divided by a count: ``mean`` divides by the count over every
    process when ``CombinedLoss`` shares its ``DistInfo`` (``dist``), so the result does not depend on how
    the batch is split; ``scale`` is the loss grid's fraction of the labels' size (``train.loss_scale``).
    Every process makes the same collectives in the same order whatever its own pixels are."""

    dist: D.DistInfo | None = None
    scale: float = 1.0

    @property
    def world(self) -> int:
        """How many processes share the mean (1 alone or when not shared)."""
        return self.dist.world_size if self.dist is not None and self.dist.distributed else 1

    def global_sum(self, *values: torch.Tensor | float) -> list[float]:
        """``values`` (counts, no gradient) summed over the processes sharing the mean, in one collective."""
        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        if self.world > 1:
            t = D.all_reduce_sum(t.to(self.dist.device), self.dist).cpu()
        return t.tolist()

    def mean(self, total: torch.Tensor, count: float) -> torch.Tensor:
        """``total / count`` with ``count`` already global; times the world size, because DDP averages the
        processes' gradients. Nothing to average over (count 0) gives a zero that keeps the graph."""
        if count <= 0:
            return total * 0.0
        return total * (self.world / count)


class CrossEntropyLoss(PixelLoss):
    """Pixel-averaged cross-entropy (``F.cross_entropy``); with class weights it is the weighted mean."""

    def __init__(self, ignore_index: int = 255, class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("class_weights", None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != self.ignore_index
        # the weighted mean's denominator is the sum of the valid pixels' class weights (F.cross_entropy's)
        count = self.class_weights[target[valid]].sum() if self.class_weights is not None else valid.sum()
        (count,) = self.global_sum(count)
        if not bool(valid.any()):
            return logits.sum() * 0.0  # F.cross_entropy of no pixels would be NaN
        total = F.cross_entropy(
            logits.float(), target, weight=self.class_weights, ignore_index=self.ignore_index, label_smoothing=self.label_smoothing, reduction="sum"
        )
        return self.mean(total, count)


class OhemCrossEntropyLoss(PixelLoss):
    """Cross-entropy over the hardest pixels only.

    Every pixel whose probability for the true class is below ``thresh`` (its CE above ``-log(thresh)``)
    is kept, and if fewer than ``min_kept`` are, the ``min_kept`` hardest ones are. ``min_kept`` <= 1 is a
    fraction of the valid pixels; above 1 it counts pixels at the labels' full size, so at a loss scale
    ``s`` it keeps ``round(min_kept * s**2)`` loss pixels (the same share of the frame as at full size).
    The loss is the mean over the kept pixels. The hardest pixels are those at or above the ``min_kept``-th
    largest loss (pixels tied with it are all kept), found with ``topk`` only when the threshold keeps too
    few; under torchrun the counts and that value are agreed over the processes, so the kept set is the
    one a single process would choose from the whole batch.
    """

    def __init__(self, ignore_index: int = 255, thresh: float = 0.7, min_kept: float = 0.1, class_weights: torch.Tensor | None = None):
        super().__init__()
        if not 0.0 < thresh <= 1.0:
            raise ValueError(f"ohem thresh must be in (0, 1], got {thresh}")
        self.ignore_index = ignore_index
        self.thresh = float(thresh)
        self.min_kept = float(min_kept)
        self.register_buffer("class_weights", None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32))

    def kept_count(self, n: float) -> int:
        """How many pixels at least of ``n`` valid loss pixels (over every process) are kept."""
        k = self.min_kept * n if self.min_kept <= 1.0 else self.min_kept * self.scale**2
        return max(1, min(int(n), int(round(k))))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != self.ignore_index
        loss = F.cross_entropy(logits.float(), target, weight=self.class_weights, ignore_index=self.ignore_index, reduction="none")[valid]
        hard = loss > -math.log(self.thresh)
        n, n_hard = self.global_sum(loss.numel(), hard.sum())
        if n == 0:
            return logits.sum() * 0.0
        k = self.kept_count(n)
        if n_hard >= k:
            return self.mean(loss[hard].sum(), n_hard)
        kth = self.kth_largest(loss, k)
        kept = loss >= kth
        (n_kept,) = self.global_sum(kept.sum())
        return self.mean(loss[kept].sum(), n_kept)

    def kth_largest(self, loss: torch.Tensor, k: int) -> torch.Tensor:
        """The ``k``-th largest of the valid pixels' losses over every process."""
        top = torch.topk(loss.detach(), min(k, loss.numel()), sorted=False).values
        if self.world > 1:
            padded = torch.full((k,), -math.inf, device=loss.device)
            padded[: top.numel()] = top
            top = D.all_gather_tensor(padded, self.dist)
        return torch.topk(top, k, sorted=False).values.min()


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


class FocalLoss(PixelLoss):
    """Focal loss ``mean over valid pixels of -(1 - p_t)^gamma * log p_t`` (gamma = 0 is plain CE)."""

    def __init__(self, ignore_index: int = 255, gamma: float = 2.0):
        super().__init__()
        self.ignore_index = ignore_index
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        flat, t = _valid(logits, target, self.ignore_index)
        (n,) = self.global_sum(t.numel())
        if t.numel() == 0:
            return logits.sum() * 0.0
        logp_t = flat.log_softmax(dim=1).gather(1, t[:, None])[:, 0]
        p_t = logp_t.exp()
        return self.mean((-((1.0 - p_t) ** self.gamma) * logp_t).sum(), n)


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


def boundary_target(target: torch.Tensor, width: int = 4) -> torch.Tensor:
    """Float Bx1xHxW map, 1 on label edges: pixels whose ``width`` x ``width`` window holds two label values.

    PIDNet derives its boundary ground truth with Canny on the label map and a 4x4 dilation; a label
    change inside the window marks the same band without the image-processing round trip. Ignored
    pixels count as a label of their own, as they do for Canny.
    """
    y = target.unsqueeze(1).float()
    pad = (width // 2, (width - 1) // 2, width // 2, (width - 1) // 2)
    hi = F.max_pool2d(F.pad(y, pad, mode="replicate"), width, stride=1)
    lo = -F.max_pool2d(F.pad(-y, pad, mode="replicate"), width, stride=1)
    return (hi != lo).float()


class BoundaryLoss(PixelLoss):
    """PIDNet's boundary loss on the ``boundary`` output (Bx1xHxW logits): binary CE against
    ``boundary_target``, each pixel weighted by the other side's share, so the few edge pixels weigh as
    much in total as the many others (the official ``weighted_bce``). ``width`` is in label pixels: at a
    loss scale ``s`` the window is ``max(2, round(width * s))`` loss pixels wide."""

    outputs = ("boundary",)

    def __init__(self, ignore_index: int = 255, width: int = 4):
        super().__init__()
        if width < 2:
            raise ValueError(f"boundary width must be >= 2, got {width}")
        self.ignore_index, self.width = ignore_index, int(width)

    def forward(self, outputs: Mapping[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        edge = boundary_target(target, max(2, round(self.width * self.scale)))
        n, pos = self.global_sum(edge.numel(), edge.sum())
        weight = torch.where(edge > 0, (n - pos) / n, pos / n)
        total = F.binary_cross_entropy_with_logits(outputs["boundary"].float(), edge, weight, reduction="sum")
        return self.mean(total, n)


class BoundaryAwareCE(nn.Module):
    """PIDNet's boundary-awareness loss: OHEM cross-entropy of the ``out`` logits on the pixels where the
    boundary head is confident (sigmoid > ``thresh``), every other pixel ignored. It sharpens the class
    decision exactly along the edges the boundary branch finds. ``min_kept`` is OHEM's (label pixels
    when above 1)."""

    outputs = ("out", "boundary")

    def __init__(self, ignore_index: int = 255, thresh: float = 0.8, ohem_thresh: float = 0.9, min_kept: float = 131072):
        super().__init__()
        self.ignore_index, self.thresh = ignore_index, float(thresh)
        self.ohem = OhemCrossEntropyLoss(ignore_index, ohem_thresh, min_kept)

    def forward(self, outputs: Mapping[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        edge = torch.sigmoid(outputs["boundary"][:, 0].detach().float()) > self.thresh
        return self.ohem(outputs["out"], torch.where(edge, target, torch.full_like(target, self.ignore_index)))


#: loss name -> class. A class's keyword arguments (besides ``ignore_index``) are the options a recipe
#: may set, typed by their defaults; ``class_weights`` takes "none", "auto" or a list of floats.
LOSSES: dict[str, type[nn.Module]] = {
    "ce": CrossEntropyLoss,
    "ohem": OhemCrossEntropyLoss,
    "dice": DiceLoss,
    "focal": FocalLoss,
    "lovasz": LovaszSoftmaxLoss,
    "boundary": BoundaryLoss,
    "boundary_ce": BoundaryAwareCE,
}

#: the model output a term reads unless its recipe entry names another (``output = "aux"``)
MAIN_OUTPUT = "out"

Outputs = torch.Tensor | Mapping[str, torch.Tensor]


def loss_options(name: str) -> dict[str, Any]:
    """The recipe options of loss ``name`` with their defaults (``class_weights`` defaults to "none")."""
    params = inspect.signature(LOSSES[name].__init__).parameters
    options = {k: p.default for k, p in params.items() if k not in ("self", "ignore_index")}
    if "class_weights" in options:
        options["class_weights"] = "none"
    return options


def reads_outputs(loss: nn.Module) -> bool:
    """True for a loss that reads several model outputs: its ``forward(outputs, target)`` takes the dict.

    Such a class sets ``outputs = ("out", "boundary")`` (the outputs it needs, checked before the first
    step); every other loss gets the one tensor its term names, as ``forward(logits, target)``.
    """
    return bool(getattr(loss, "outputs", None))


def as_outputs(outputs: Outputs) -> Mapping[str, torch.Tensor]:
    """A model's training outputs as a dict: a plain tensor is ``{"out": tensor}``."""
    return {MAIN_OUTPUT: outputs} if isinstance(outputs, torch.Tensor) else outputs


def main_output(outputs: Outputs) -> torch.Tensor:
    """The logits the metrics and the prediction use: the tensor itself, or ``outputs["out"]``."""
    return outputs if isinstance(outputs, torch.Tensor) else outputs[MAIN_OUTPUT]


def resize_outputs(outputs: Mapping[str, torch.Tensor], size: Sequence[int]) -> dict[str, torch.Tensor]:
    """Every output at ``size`` (H, W), bilinear with align_corners=False, as contiguous float32 NCHW (the
    layout the per-pixel losses run fastest in)."""
    size = tuple(int(v) for v in size)
    out = {k: v.to(torch.float32, memory_format=torch.contiguous_format) for k, v in outputs.items()}  # one copy at most
    return {k: v if tuple(v.shape[-2:]) == size else F.interpolate(v, size=size, mode="bilinear", align_corners=False) for k, v in out.items()}


def downsample_labels(target: torch.Tensor, scale: float) -> torch.Tensor:
    """``B x H x W`` labels at ``round(H * scale) x round(W * scale)``, nearest ("nearest-exact": the
    label nearest each output pixel's centre, so a 4x reduction reads pixel 4i + 2)."""
    if scale == 1.0:
        return target
    h, w = target.shape[-2:]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(target[:, None].float(), size=size, mode="nearest-exact")[:, 0].to(target.dtype)


class LossTerm(nn.Module):
    """One weighted term of the recipe: ``weight * loss(outputs[output], target)``.

    An ``output`` ending in ``*`` is a prefix: the term is the sum of the loss over every output whose
    name starts with it (``"aux*"``: aux, aux2 ... aux5), and nothing for a model that has none, so one
    recipe serves models with one, several or no auxiliary heads. ``during = (start, end)`` is the part
    of the run, as fractions of its steps, in which the term counts (``start <= progress < end``; the
    last step counts as inside an ``end`` of 1): cross-entropy first and Lovász-softmax after it is
    Berman et al.'s schedule for training towards IoU.
    """

    def __init__(self, name: str, weight: float, loss: nn.Module, output: str = MAIN_OUTPUT, during: Sequence[float] = (0.0, 1.0)):
        super().__init__()
        self.name, self.weight, self.loss, self.output = name, float(weight), loss, output
        self.during = (float(during[0]), float(during[1]))

    def active(self, progress: float | None) -> bool:
        """Whether the term counts at ``progress`` (the fraction of the run's steps done; None: always)."""
        start, end = self.during
        return progress is None or start <= progress < end or (end >= 1.0 and progress >= 1.0)

    @property
    def reads(self) -> tuple[str, ...]:
        """The outputs the term needs (none for a prefix term)."""
        if reads_outputs(self.loss):
            return tuple(self.loss.outputs)
        return () if self.output.endswith("*") else (self.output,)

    def forward(self, outputs: Mapping[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if reads_outputs(self.loss):
            return self.weight * self.loss(outputs, target)
        if not self.output.endswith("*"):
            return self.weight * self.loss(outputs[self.output], target)
        prefix = self.output[:-1]
        parts = [self.loss(v, target) for k, v in sorted(outputs.items()) if k.startswith(prefix)]
        if not parts:
            return next(iter(outputs.values())).new_zeros(()).float()
        return self.weight * sum(parts[1:], parts[0])


class CombinedLoss(nn.Module):
    """``sum_i weight_i * loss_i(outputs, target)`` over the recipe's terms.

    ``outputs`` is the model's training output: one logits tensor (read as ``{"out": tensor}``) or a dict
    of tensors (``{"out": ..., "aux": ..., "boundary": ...}``), each at the input size or at its head's own
    stride. The terms see every output resized to the labels' size times ``scale`` and the labels
    downsampled to it. A term that reads an output the model does not return is a ``CitysegError``
    naming both. With ``dist`` (the run's ``DistInfo`` under torchrun) the pixel-averaged terms
    normalise over every process's pixels (see the module docstring); every process must then call it
    once per step, as the training step does.
    """

    def __init__(self, terms: Sequence[LossTerm], scale: float = 1.0, dist: D.DistInfo | None = None):
        super().__init__()
        if not terms:
            raise ValueError("at least one loss term is needed")
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"loss scale must be in (0, 1], got {scale}")
        self.terms = nn.ModuleList(terms)
        self.scale = float(scale)
        self.dist = dist
        for m in self.pixel_losses():
            m.scale, m.dist = self.scale, dist

    def pixel_losses(self) -> list[PixelLoss]:
        """The terms' pixel-averaged losses, nested ones (boundary_ce's OHEM) included."""
        return [m for m in self.modules() if isinstance(m, PixelLoss)]

    @contextlib.contextmanager
    def per_process(self) -> Iterator[None]:
        """Inside: every loss averages over this process's pixels alone, at full resolution (validation,
        where the processes score different numbers of batches)."""
        losses = self.pixel_losses()
        for m in losses:
            m.scale, m.dist = 1.0, None
        try:
            yield
        finally:
            for m in losses:
                m.scale, m.dist = self.scale, self.dist

    def check_outputs(self, available: Iterable[str]) -> None:
        available = list(available)
        for i, term in enumerate(self.terms):
            missing = [k for k in term.reads if k not in available]
            if missing:
                raise CitysegError(
                    f"loss[{i}] ({term.name}) reads model output {missing[0]!r}, but the model returns only {', '.join(repr(k) for k in available)} in training"
                )

    def forward(self, outputs: Outputs, target: torch.Tensor, progress: float | None = None) -> torch.Tensor:
        """The loss at ``progress`` (fraction of the run's steps done; None: every term counts)."""
        outputs = as_outputs(outputs)
        self.check_outputs(outputs)
        target = downsample_labels(target, self.scale)
        outputs = resize_outputs(outputs, target.shape[-2:])
        parts = [term(outputs, target) for term in self.terms if term.active(progress)]
        if not parts:
            raise CitysegError(f"no loss term is active at {100 * progress:.1f}% of the run; the terms' `during` windows must cover the whole run")
        return sum(parts[1:], parts[0])

    def validation_loss(self, outputs: Outputs, target: torch.Tensor, progress: float | None = None) -> torch.Tensor:
        """The sum of the terms active at ``progress`` whose outputs the model returns in eval mode
        (training-only heads are absent there), at the labels' full size whatever ``scale`` is, so that
        validation losses compare across recipes; per process; NaN when no term is left."""
        outputs = resize_outputs(as_outputs(outputs), target.shape[-2:])
        with self.per_process():
            parts = [term(outputs, target) for term in self.terms if term.active(progress) and all(k in outputs for k in term.reads)]
        if not parts:
            return torch.tensor(math.nan)
        return sum(parts[1:], parts[0])


def class_weights_from_counts(counts: torch.Tensor | Sequence[float], c: float = 1.02) -> torch.Tensor:
    """ENet-style class weights ``1 / ln(c + frequency)`` from per-class pixel counts (absent classes get
    the largest weight, which is harmless: they never occur in the target)."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    freq = counts / counts.sum().clamp(min=1.0)
    return (1.0 / torch.log(c + freq)).float()


def _class_weights(name: str, value: Any, num_classes: int, class_counts: torch.Tensor | None) -> torch.Tensor | None:
    if value == "none":
        return None
    if value == "auto":
        if class_counts is None:
            raise CitysegError(f"loss {name!r}: class_weights = 'auto' needs the training label counts")
        return class_weights_from_counts(class_counts)
    if isinstance(value, (list, tuple)):
        if len(value) != num_classes:
            raise CitysegError(f"loss {name!r}: class_weights has {len(value)} values, the model has {num_classes} classes")
        return torch.tensor([float(v) for v in value])
    raise CitysegError(f"loss {name!r}: class_weights must be 'none', 'auto' or a list of {num_classes} numbers")


def build_loss(
    specs: Sequence[Mapping[str, Any]],
    num_classes: int,
    ignore_index: int = 255,
    class_counts: torch.Tensor | None = None,
    scale: float = 1.0,
    dist: D.DistInfo | None = None,
) -> CombinedLoss:
    """The weighted sum of the losses ``specs`` describe (recipe entries checked by ``config.check_losses``),
    computed at ``scale`` x the labels' size (``train.loss_scale``), normalised over every process with
    ``dist``.

    ``class_weights`` may be ``"none"``, ``"auto"`` (needs ``class_counts``: per-class pixel counts of the
    training labels) or an explicit list of ``num_classes`` floats.
    """
    terms = []
    for spec in specs:
        spec = dict(spec)
        name = spec.pop("name")
        if name not in LOSSES:
            raise CitysegError(f"unknown loss {name!r}: choose one of {', '.join(LOSSES)}")
        weight = float(spec.pop("weight", 1.0))
        output = spec.pop("output", MAIN_OUTPUT)
        during = spec.pop("during", (0.0, 1.0))
        if "class_weights" in spec:
            spec["class_weights"] = _class_weights(name, spec["class_weights"], num_classes, class_counts)
        terms.append(LossTerm(name, weight, LOSSES[name](ignore_index=ignore_index, **spec), output, during))
    return CombinedLoss(terms, scale, dist)
