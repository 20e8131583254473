"""Model C, "Segception30_base": the SegCeption drawn in the seed README (the seed notebooks).

Same padding, Conv-BN-ReLU stack modules, Conv1x1-BN-ReLU reductions, two pooling levels, additive
skips, x2 nearest upsampling. The faithful port keeps the seed's irregular wiring: stem B, enc-128
and enc-256 are side branches (stem B feeds only the skips S1/S2, enc-128 only S3; enc-128 and
enc-256 both start from stem A's pooled output ``mp``), and its inverse stack module drops the
first 3x3 conv's BN (Conv3x3 -> ReLU -> Conv3x3-BN-ReLU). 9,357,730 trainable params at 34 classes.
Dead layers of the notebook are not created.

``fixed=True`` (registry name ``segception_fixed``) restores the inverse module's BN
(+896 params: 9,358,626); ``se=True`` adds squeeze-and-excitation to every stack module;
``upsample='bilinear'`` replaces nearest upsampling. H and W must be multiples of 4.
"""

from __future__ import annotations

import torch
from torch import nn

from cityseg.models.base import SegmentationModel, check_option
from cityseg.models.blocks import UPSAMPLE_MODES, Reduction, StackModule, keras_init, max_pool, upsample


class Segception(SegmentationModel):
    name = "segception"
    size_multiple = 4
    min_size = 4

    def __init__(self, num_classes=34, fixed=False, se=False, upsample="nearest"):
        super().__init__()
        check_option(self.name, "upsample", upsample, UPSAMPLE_MODES)
        if fixed:
            self.name = "segception_fixed"
        self.upsample_mode = upsample

        def stack(cin, f):
            return StackModule(cin, f, se=se)

        def inv(cin, f):
            return StackModule(cin, f, first_bn=fixed, se=se)

        # stem A: stack(32) -> red(32) = skipA -> stack(32) -> pool = mp
        self.a1, self.a_red, self.a2 = stack(3, 32), Reduction(64, 32), stack(32, 32)
        # stem B on the image again: stack(64) -> red(64) -> stack(64) = S1
        self.b1, self.b_red, self.b2 = stack(3, 64), Reduction(128, 64), stack(64, 64)
        # enc-128 from mp: red(64) -> stack(128) -> red(128) -> stack(128) -> pool = S3
        self.m = nn.Sequential(Reduction(64, 64), stack(64, 128), Reduction(256, 128), stack(128, 128))
        # enc-256 from mp: red(128) -> stack(256) -> red(256) -> stack(256) -> pool -> red(256)
        self.n = nn.Sequential(Reduction(64, 128), stack(128, 256), Reduction(512, 256), stack(256, 256))
        self.n_red = Reduction(512, 256)
        self.dec128 = nn.Sequential(inv(256, 128), inv(256, 128))
        self.dec64 = nn.Sequential(Reduction(256, 64), inv(64, 64), Reduction(128, 64), inv(64, 64))
        self.d32a, self.d32_red, self.d32b = inv(128, 32), Reduction(64, 32), inv(32, 32)
        self.head = nn.Conv2d(64, num_classes, 1)
        keras_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        skip_a = self.a_red(self.a1(x))
        mp = max_pool(self.a2(skip_a))
        s1 = self.b2(self.b_red(self.b1(x)))
        s2 = max_pool(s1)
        s3 = max_pool(self.m(mp))
        y = self.n_red(max_pool(self.n(mp)))
        y = upsample(self.dec128(y) + s3, self.upsample_mode)
        y = upsample(self.dec64(y) + s2, self.upsample_mode)
        y = self.d32_red(self.d32a(y + s1))
        return self.head(self.d32b(y + skip_a))
