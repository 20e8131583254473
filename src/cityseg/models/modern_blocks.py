"""Pieces shared by the SegFormer, EfficientNet-U-Net and attention U-Net models.

Stochastic depth; encoder weights load through ``weights.load_weights``.
"""

from __future__ import annotations

import torch
from torch import nn


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
