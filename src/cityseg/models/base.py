"""``SegmentationModel``: the base every cityseg network derives from (input-size rule + check)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cityseg.errors import CitysegError


def _tracing() -> bool:
    """True under torch.export / torch.compile / ONNX (dynamo) / jit tracing: skip Python-side checks."""
    return bool(torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting())


def check_option(model: str, key: str, value: Any, choices: Sequence[Any] | None = None) -> None:
    """A model option's value: one of ``choices``, or (without ``choices``) a positive integer."""
    if choices is not None:
        if value not in choices:
            raise CitysegError(f"model {model!r}: {key} must be one of {', '.join(map(str, choices))}; got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CitysegError(f"model {model!r}: {key} must be a positive integer; got {value!r}")


#: how a model is best run on a full 1024x2048 frame: in one piece, or in sliding windows
FULL_RES_MODES = ("whole", "slide")


class SegmentationModel(nn.Module):
    """Base class: ``forward(x: Bx3xHxW) -> logits BxCxHxW`` at the input's H and W (no softmax).

    In training mode a model may return its logits at its own output stride (a fraction of H and W),
    as mmsegmentation's heads do: the loss resizes them to its own resolution (``train.loss_scale``), so
    the upsampling to full size is only paid where the recipe wants it.

    Subclasses set the class attributes of their input-size rule: H and W must be multiples of
    ``size_multiple`` and at least ``min_size``. Models tied to one size override
    ``check_input_shape``. A model with heads that only training uses (auxiliary, booster, boundary)
    returns a dict of logits in training mode and names those submodules in ``training_heads``: eval
    mode (inference, export) never runs them, and the deploy-mode parameter count leaves them out.
    ``full_res_mode`` is how a full 1024x2048 frame is best predicted: "whole" in one forward, or
    "slide" in windows where one forward does not fit.

    ``pretrained_parts`` names the children that start from pretrained (ImageNet) weights: training
    gives them their own learning-rate multiplier and can keep their BatchNorm frozen
    (``freeze_batchnorm``) or their first stages as loaded (``freeze_stages`` over
    ``encoder_stages()``); a model trained from scratch has none.
    ``void_class`` means one output more than
    ``num_classes``, last: a trained "void" class whose argmax predicts labelId 0 (unlabeled).
    ``train_channels_last = False`` keeps training in NCHW where the fast path would use channels_last
    (``runtime.train_channels_last``), for a model whose layers get wrong gradients in that layout.
    """

    name: str = "model"
    size_multiple: int = 1
    min_size: int = 1
    in_channels: int = 3
    training_heads: tuple[str, ...] = ()
    full_res_mode: str = "whole"
    pretrained_parts: tuple[str, ...] = ()
    train_channels_last: bool = True
    kept_eval: tuple[nn.Module, ...] = ()  # frozen modules: in eval mode also after ``train()``

    def freeze_batchnorm(self, parts: Sequence[str]) -> int:
        """Keep every BatchNorm under the children ``parts`` in eval mode (running statistics fixed) with
        its affine parameters frozen, also after ``train()``; returns how many there are."""
        found = [m for part in parts for m in self.get_submodule(part).modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._keep_frozen(found)
        return len(found)

    def encoder_stages(self) -> list[list[nn.Module]]:
        """The pretrained encoder's stages from the input on (the stem in the first), for
        ``freeze_stages``; none unless a model has loaded pretrained weights."""
        return []

    def freeze_stages(self, n: int) -> int:
        """Keep the first ``n`` of ``encoder_stages()`` as loaded: no gradients (and none computed through
        them, since nothing before them trains: the step skips their backward), in eval mode after
        ``train()`` (BatchNorm statistics fixed, stochastic depth off). Returns the parameters frozen."""
        stages = self.encoder_stages()
        if n > len(stages):
            raise CitysegError(f"model {self.name!r}: train.frozen_stages is {n}, but its pretrained encoder has {len(stages)} stages")
        modules = [m for stage in stages[:n] for m in stage]
        self._keep_frozen(modules)
        return sum(p.numel() for m in modules for p in m.parameters())

    def _keep_frozen(self, modules: Sequence[nn.Module]) -> None:
        for m in modules:
            m.requires_grad_(False)
        self.kept_eval = self.kept_eval + tuple(m for m in modules if all(m is not k for k in self.kept_eval))
        self.train(self.training)

    def train(self, mode: bool = True) -> SegmentationModel:
        super().train(mode)
        for m in self.kept_eval:
            m.eval()
        return self

    void_class: bool = False

    def size_rule(self) -> str:
        """Human-readable input-size rule, e.g. 'H and W multiples of 4 and >= 60'."""
        rule = f"H and W multiples of {self.size_multiple}"
        if self.min_size > self.size_multiple:
            rule += f" and >= {self.min_size}"
        return rule

    def accepts(self, h: int, w: int) -> bool:
        m, lo = self.size_multiple, self.min_size
        return h % m == 0 and w % m == 0 and h >= max(lo, m) and w >= max(lo, m)

    def check_input_shape(self, h: int, w: int) -> None:
        """Raise ``CitysegError`` naming the sizes that work when H x W does not."""
        if not self.accepts(int(h), int(w)):
            raise CitysegError(f"{self.name} needs {self.size_rule()}; got {int(h)}x{int(w)}")

    def valid_size(self, h: int, w: int) -> tuple[int, int]:
        """The smallest accepted size >= (h, w) (for padding an image before inference)."""
        m, lo = self.size_multiple, max(self.min_size, self.size_multiple)

        def up(v: int) -> int:
            v = max(int(v), lo)
            return -(-v // m) * m

        return up(h), up(w)

    def _check_input(self, x: torch.Tensor) -> None:
        if _tracing():
            return
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise CitysegError(f"{self.name} expects a Bx{self.in_channels}xHxW tensor; got shape {tuple(x.shape)}")
        self.check_input_shape(x.shape[-2], x.shape[-1])
