"""Pieces shared by the SegFormer, EfficientNet-U-Net and attention U-Net models.

Stochastic depth, the loading of a local encoder state_dict in a public key layout, and the
``full_res_mode`` values the inference code reads.
"""

from __future__ import annotations

import os
from typing import Callable

import torch
from torch import nn

from cityseg.errors import CitysegError

#: how a model should be run on a full 1024x2048 frame: in one piece, or in sliding windows
FULL_RES_MODES = ("whole", "slide")


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drops a residual branch per sample in training and
    rescales the kept ones by 1/(1-p), so eval needs no correction. Identity when ``p == 0``."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def read_state_dict(path, layout: str) -> dict[str, torch.Tensor]:
    """A flat ``{key: tensor}`` from a local file (unwrapping ``state_dict`` / ``model`` and a
    ``module.`` prefix); one-line ``CitysegError`` naming the file if it is missing or not one."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CitysegError(f"{path}: encoder weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file becomes one clear line
        raise CitysegError(f"{path}: cannot read a torch state_dict ({type(e).__name__}: {e})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise CitysegError(f"{path}: not a {layout} state_dict (expected a dict of tensors)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def load_encoder_weights(encoder: nn.Module, path, layouts: dict[str, Callable[[dict], dict | None]],
                         keep: tuple[str, ...] = ()) -> str:
    """Load a local state_dict into ``encoder``; returns the name of the layout that matched.

    ``layouts`` maps a layout name to a converter ``state -> state in encoder's own keys`` (or
    None when the file is not in that layout); the first converter that returns a state is used.
    Keys the encoder does not have (classifier heads, decoders) are ignored; every encoder tensor
    except those under the ``keep`` prefixes (left as initialised) must be present with its shape,
    else ``CitysegError`` naming the file and the first problem.
    """
    names = " or ".join(layouts)
    state = read_state_dict(path, names)
    own = {k: v for k, v in encoder.state_dict().items()
           if not k.endswith("num_batches_tracked") and not k.startswith(keep)}
    for layout, convert in layouts.items():
        mapped = convert(state)
        if mapped is not None and any(k in own for k in mapped):
            break
    else:
        raise CitysegError(f"{os.fspath(path)}: not a {names} state_dict (no encoder key matches, "
                           f"e.g. {next(iter(state))!r})")
    missing = [k for k in own if k not in mapped]
    if missing:
        raise CitysegError(f"{os.fspath(path)}: incomplete {layout} state_dict: missing {missing[0]} "
                           f"({len(missing)} of {len(own)} encoder tensors missing)")
    for k, v in own.items():
        if tuple(mapped[k].shape) != tuple(v.shape):
            raise CitysegError(f"{os.fspath(path)}: {k} has shape {tuple(mapped[k].shape)}, "
                               f"the encoder needs {tuple(v.shape)}")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(mapped[k].to(v.dtype))
    return layout
