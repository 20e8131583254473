"""Fold every BatchNorm that directly follows a convolution into that convolution (inference only).

``fold_batchnorm(model, example)`` returns an eval-mode copy in which each ``Conv2d``/``ConvTranspose2d``
whose output goes to one ``BatchNorm2d`` and nowhere else carries the BN's scale and shift in its
weight and bias, and the BN is replaced by ``nn.Identity``. The pairs are found by running ``example``
once and following the tensors, not by module names, so ``nn.Sequential``, ``ConvBNAct`` and
hand-written ``self.bn(self.conv(x))`` are all found, and a BN that reads anything else (a sum, a
concatenation, a pre-activation input) is left alone. The folded model computes the same function up
to float rounding; its ``state_dict`` keys differ, so it is for inference and export, not for saving.
"""

from __future__ import annotations

import copy
from collections import Counter

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from cityseg.models.blocks import ParallelBlock

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


class _Uses(TorchFunctionMode):
    """Counts how often each conv output is an argument of a torch call made outside a BatchNorm's forward."""

    def __init__(self, produced: dict[int, tuple[nn.Module, torch.Tensor]]):
        super().__init__()
        self.produced = produced
        self.uses: Counter[int] = Counter()
        self.inside_bn = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if not self.inside_bn:
            for a in leaves((args, kwargs or {})):
                if isinstance(a, torch.Tensor) and self.produced.get(id(a), (None, None))[1] is a:
                    self.uses[id(a)] += 1
        return func(*args, **(kwargs or {}))


def leaves(obj):
    """Every non-container value in nested lists, tuples and dicts (module inputs and outputs)."""
    if isinstance(obj, (list, tuple)):
        for o in obj:
            yield from leaves(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from leaves(o)
    else:
        yield obj


def find_conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(conv name, bn name) for every BN whose only input is the output of one conv used by nothing else."""
    names = {m: n for n, m in model.named_modules()}
    # id(conv output) -> (conv, output); holding the output keeps its id from being reused during the trace
    produced: dict[int, tuple[nn.Module, torch.Tensor]] = {}
    calls: Counter[nn.Module] = Counter()
    read_by_bn: dict[int, list[nn.Module]] = {}
    mode = _Uses(produced)

    def conv_hook(m, inputs, out):
        calls[m] += 1
        produced[id(out)] = (m, out)

    def bn_pre(m, inputs):
        calls[m] += 1
        if produced.get(id(inputs[0]), (None, None))[1] is inputs[0]:
            read_by_bn.setdefault(id(inputs[0]), []).append(m)
        mode.inside_bn += 1

    def bn_post(m, inputs, out):
        mode.inside_bn -= 1

    handles = []
    for m in model.modules():
        if isinstance(m, _CONVS):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.BatchNorm2d):
            handles += [m.register_forward_pre_hook(bn_pre), m.register_forward_hook(bn_post)]
    try:
        with torch.no_grad(), mode:
            model(example)
    finally:
        for h in handles:
            h.remove()
    pairs = []
    for key, (conv, _) in produced.items():
        readers = read_by_bn.get(key, [])
        if len(readers) != 1 or mode.uses[key] != 0 or calls[conv] != 1 or calls[readers[0]] != 1:
            continue
        bn = readers[0]
        if bn.track_running_stats and bn.running_mean is not None and _foldable(conv):
            pairs.append((names[conv], names[bn]))
    return pairs


def _foldable(conv: nn.Module) -> bool:
    return isinstance(conv, nn.Conv2d) or conv.groups == 1


@torch.no_grad()
def fold_pair(conv: nn.Module, bn: nn.BatchNorm2d) -> None:
    """Put ``bn``'s eval-mode scale and shift into ``conv``'s weight and bias (in place)."""
    scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    if isinstance(conv, nn.ConvTranspose2d):  # weight is (in, out, kh, kw): out channels are dim 1
        conv.weight.mul_(scale.view(1, -1, 1, 1).to(conv.weight.dtype))
    else:
        conv.weight.mul_(scale.view(-1, 1, 1, 1).to(conv.weight.dtype))
    new_bias = (bias - bn.running_mean) * scale + shift
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype), requires_grad=False)
    else:
        conv.bias.copy_(new_bias)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def fold_batchnorm(model: nn.Module, example: torch.Tensor | tuple[int, int]) -> nn.Module:
    """An eval-mode copy of ``model`` with every Conv->BN pair folded (``example``: an input or an HxW size).

    Multi-branch blocks are traced on their per-branch path (where each conv module runs) and keep their
    setting afterwards; the fused path reads the folded weights, so it stays exact.
    """
    model = copy.deepcopy(model).eval()
    if isinstance(example, tuple):
        param = next(model.parameters(), None)
        example = torch.rand(1, 3, *example, device=param.device if param is not None else "cpu")
    blocks = [m for m in model.modules() if isinstance(m, ParallelBlock)]
    fused = [m.fused for m in blocks]
    for m in blocks:
        m.fused = False
    try:
        pairs = find_conv_bn_pairs(model, example)
    finally:
        for m, f in zip(blocks, fused):
            m.fused = f
    for conv_name, bn_name in pairs:
        fold_pair(model.get_submodule(conv_name), model.get_submodule(bn_name))
        _replace(model, bn_name, nn.Identity())
    return model


def count_batchnorm(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
