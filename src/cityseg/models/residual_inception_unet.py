"""Residual Inception U-Net: the seed README's final design, never coded there; designed here.

The README asks for Inception modules (1x1, 3x3 and 5x5 branches, concatenated, then a 1x1
reduction), true residual connections inside every encoder and decoder block, BN and same padding.
Choices, and why:

* ``InceptionResBlock(cin, cout)``: three Conv-BN-ReLU branches of ``cout // 2`` filters each
  (1x1, 3x3, 5x5, all reading the block input, as the README's figure), concatenated, then a
  linear 1x1 conv + BN back to ``cout``; the block input is added and the sum goes through ReLU.
  Linear reduction before the add and ReLU after it follow Inception-ResNet / ResNet v1, so the
  residual path is a true identity; when the width changes the shortcut is a 1x1 conv + BN
  projection (ResNet's option B). The 3x3 and 5x5 branches share the fused path of the stack
  modules (one conv call).
* Encoder: two such blocks per level at widths ``base * (1, 2, 4, 8)`` with max-pooling between
  levels, a bottleneck of width ``base * 16`` at 1/16 (four poolings, one fewer than VGG, so
  128x256 inputs keep an 8x16 bottleneck); decoder: upsample x2, **concatenate** the encoder feature
  (standard U-Net: the seed's additive skips force equal widths on both sides), two blocks.
  ``base=24`` (default) gives 9.58 M params, the size class of the seed's ~9 M models, so that the
  comparison with them is about the design, not the size.
* Keras-style init (Glorot uniform, zero biases, BN momentum 0.01 / eps 1e-3) and nearest x2
  upsampling by default, like the seed's models. H and W must be multiples of 16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cityseg.models.base import SegmentationModel, check_option
from cityseg.models.blocks import UPSAMPLE_MODES, ConvBNAct, ParallelBlock, keras_init, max_pool, run_parallel, upsample


class InceptionResBlock(ParallelBlock):
    def __init__(self, cin, cout):
        super().__init__()
        b = cout // 2
        self.branch1 = ConvBNAct(cin, b, 1)
        self.branch3 = ConvBNAct(cin, b, 3)
        self.branch5 = ConvBNAct(cin, b, 5)
        self.reduce = ConvBNAct(3 * b, cout, 1, act=False)
        self.shortcut = None if cin == cout else ConvBNAct(cin, cout, 1, act=False)
        self.se = None

    def forward(self, x):
        y5, y3 = run_parallel([self.branch5, self.branch3], x, self.fused)
        y = self.reduce(torch.cat([self.branch1(x), y3, y5], 1))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResidualInceptionUNet(SegmentationModel):
    name = "residual_inception_unet"
    size_multiple = 16
    min_size = 16

    def __init__(self, num_classes=34, base=24, upsample="nearest"):
        super().__init__()
        check_option(self.name, "base", base)
        check_option(self.name, "upsample", upsample, UPSAMPLE_MODES)
        self.upsample_mode = upsample
        widths = [base * m for m in (1, 2, 4, 8)]
        self.encoder = nn.ModuleList()
        cin = 3
        for w in widths:
            self.encoder.append(nn.Sequential(InceptionResBlock(cin, w), InceptionResBlock(w, w)))
            cin = w
        self.bottleneck = nn.Sequential(InceptionResBlock(cin, base * 16), InceptionResBlock(base * 16, base * 16))
        cin = base * 16
        self.decoder = nn.ModuleList()
        for w in reversed(widths):
            self.decoder.append(nn.Sequential(InceptionResBlock(cin + w, w), InceptionResBlock(w, w)))
            cin = w
        self.head = nn.Conv2d(cin, num_classes, 1)
        keras_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
            x = max_pool(x)
        x = self.bottleneck(x)
        for block, skip in zip(self.decoder, reversed(skips)):
            x = block(torch.cat([upsample(x, self.upsample_mode), skip], 1))
        return self.head(x)
