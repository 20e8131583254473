"""Model A with self-attention: the seed's "Residual U-Net" (same-padding variant,
``ResidualUNet(padding="same")``) with multi-head self-attention over its 1/4-resolution bottleneck,
the seed's "self-attention" plan applied to its own model.

Choices, and why:

* **Where**: on the output of E6 (480 channels at 1/4, the deepest and widest features; Model A
  has only two pooling levels), before the R3 reduction squeezes them to ``reduction`` channels.
  Every bottleneck position attends to every other one, the global context that the stacked
  5x5/3x3 convs cannot give (E6's receptive field is about 60 input pixels).
* **Block**: pre-norm (LayerNorm over channels) multi-head attention in the non-local form (Wang
  et al. 2018): q, k, v are 480 -> ``attn_dim`` (64) projections, ``heads`` (4) heads of 16, the
  output a 64 -> 480 projection added back to E6's output. The output projection starts at zero,
  so the block starts as the identity and the network starts as Model A: a trained Model A loads
  with ``encoder_weights`` and gives identical outputs before fine-tuning. 64 rather than 480
  channels inside the attention because its cost is N^2 x dim and R3 keeps only 30 channels of
  this bottleneck anyway. Attention runs through ``F.scaled_dot_product_attention``.
* **Position encoding**: fixed 2-D sinusoids (Vaswani et al. / DETR), half the channels for the row,
  half for the column, in units of bottleneck pixels (not normalised to the image size), added to
  the normalised tokens that feed q and k (not v), as in DETR. It has no parameters and is
  computed for the actual H x W, so it works at any input size; because sin/cos products depend
  only on the offset between positions, the same offsets mean the same thing in a 128x256 crop,
  a slide window and a full frame. A learned relative-position bias (Swin, T5) would need a table
  sized for the largest offset (interpolated beyond the training size) and an additive attention
  mask, which takes SDPA off its fused kernels onto the path that stores the N x N matrix.
* **Weights**: ``encoder_weights=PATH`` loads a trained ``residual_unet_same`` (or
  ``residual_unet``: the same tensors) state_dict or cityseg checkpoint into all of Model A but its
  1x1 classifier (``head.*``, whose class count may differ); the attention block (``e6.attn.*``)
  keeps its identity init. Keys are Model A's own (``e1.conv5.conv.weight`` ... ``d6``).
* **Counts** (measured; ``reduction`` 30, 19 classes): Model A (same padding) 8,901,919 params
  (8,902,834 at the seed's 34 classes); this model adds 124,512 (+1.4 %): 9,026,431. MACs
  (``torch.utils.flop_counter`` on the meta device; FLOPs = 2 x MACs) at 128x256: Model A 46.59 G,
  this model 47.37 G (+0.79 G, +1.7 %: 0.25 G projections, 0.54 G attention); at 1024x2048:
  2981.5 G vs 5196.7 G (+2215 G, +74 %: the attention term grows with the square of the pixel
  count, 4096x from 128x256, the convs 64x).
* **Memory and time** at 1024x2048 (one eval forward, batch 1, peak RSS of a fresh process, AMD
  EPYC Zen 5 CPU with native AVX512-BF16, 2 threads on a shared machine): fp32 5.20 GiB in 295 s,
  bf16 autocast 2.93 GiB in 201 s (0.27 GiB of it is torch and the model). It fits because SDPA's
  fused CPU kernel never stores the 131072 x 131072 attention matrix; a runtime without one (the
  ONNX export's MatMul-Softmax-MatMul) would need 4 heads x 64 GiB in fp32 (computed), and the
  attention alone is 2.2 TMACs. So **slide inference is the documented default** at full
  resolution (``full_res_mode = "slide"``), with windows of the training size.
* H and W must be multiples of 4, as Model A with same padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cityseg.models.blocks import StackModule, keras_init
from cityseg.models.residual_unet import ResidualUNet
from cityseg.models.weights import load_weights


def sinusoidal_2d(h: int, w: int, channels: int, device=None, dtype=None) -> torch.Tensor:
    """(h*w) x channels fixed position encoding: [sin(y f), cos(y f), sin(x f), cos(x f)], with
    ``channels // 4`` frequencies f = 10000^(-k / (channels // 4)) per axis, in pixel units."""
    n = channels // 4
    freq = torch.exp(torch.arange(n, device=device, dtype=torch.float32) * (-math.log(10000.0) / n))
    y = torch.arange(h, device=device, dtype=torch.float32)[:, None] * freq  # h x n
    x = torch.arange(w, device=device, dtype=torch.float32)[:, None] * freq  # w x n
    ey = torch.cat([y.sin(), y.cos()], 1)[:, None, :].expand(h, w, 2 * n)
    ex = torch.cat([x.sin(), x.cos()], 1)[None, :, :].expand(h, w, 2 * n)
    pe = torch.cat([ey, ex], 2).reshape(h * w, 4 * n)
    if 4 * n < channels:
        pe = F.pad(pe, (0, channels - 4 * n))
    return pe.to(dtype) if dtype is not None else pe


class BottleneckAttention(nn.Module):
    """x + out(MHSA(LN(x) + pe, LN(x) + pe, LN(x))) over all positions of a B x C x H x W map."""

    def __init__(self, channels: int, dim: int = 64, heads: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attn_dim {dim} is not a multiple of heads {heads}")
        self.heads = heads
        self.norm = nn.LayerNorm(channels)
        self.q = nn.Linear(channels, dim)
        self.k = nn.Linear(channels, dim)
        self.v = nn.Linear(channels, dim)
        self.out = nn.Linear(dim, channels)
        nn.init.zeros_(self.out.weight)  # identity at init: the network starts as Model A
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.norm(x.flatten(2).transpose(1, 2))  # B x N x C
        qk = t + sinusoidal_2d(h, w, c, device=x.device, dtype=t.dtype)

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.reshape(b, h * w, self.heads, -1).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(self.q(qk)), split(self.k(qk)), split(self.v(t)))
        y = self.out(y.transpose(1, 2).reshape(b, h * w, -1))
        return x + y.transpose(1, 2).reshape(b, c, h, w).to(x.dtype)


class AttentionStackModule(StackModule):
    """Model A's stack module followed by bottleneck attention (keys: the stack's, plus ``attn.*``)."""

    def __init__(self, cin: int, f: int, attn_dim: int, heads: int, **kw):
        super().__init__(cin, f, **kw)
        self.attn = BottleneckAttention(self.out_channels, attn_dim, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(super().forward(x))


class ResidualUNetAttn(ResidualUNet):
    name = "residual_unet_attn"
    size_multiple = 4
    min_size = 4
    full_res_mode = "slide"

    def __init__(self, num_classes: int = 19, reduction: int = 30, upsample: str = "nearest", attn_dim: int = 64, heads: int = 4, encoder_weights=None):
        super().__init__(num_classes, reduction, padding="same", upsample=upsample)
        self.name = type(self).name  # the parent names the same-padding variant after itself
        self.e6 = keras_init(AttentionStackModule(480, 240, attn_dim, heads, bn=False, padding="same"))
        if encoder_weights is not None:
            load_weights(self, encoder_weights, "cityseg residual_unet_same", skip=("head.", "e6.attn."))
