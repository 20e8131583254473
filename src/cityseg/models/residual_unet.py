"""Model A, the seed's "Residual U-Net" (the seed notebooks): ~9 M params, 83 % pixel accuracy.

Valid padding, no BN, ReLU inside every conv; stack modules (shrink by 4) in the encoder, transposed
inverse stack modules (grow by 4) in the decoder; two pooling levels; element-wise additive skips
(hence "residual"); linear 1x1 reductions of ``reduction`` filters (30 in the seed's Version 1:
8,902,834 params; 60 in its V3 notebook: 9,486,154). The seed's third max-pool is never used and
is not computed.

``padding='same'`` (registry name ``residual_unet_same``) is the improved variant: same weights
and parameter count, but 'same' convs, so any H and W that are multiples of 4 work (the faithful
model needs multiples of 4 and >= 60, and its output only matches the input size because the
decoder grows exactly what the encoder shrank).
"""

from __future__ import annotations

import torch
from torch import nn

from cityseg.models.base import SegmentationModel, check_option
from cityseg.models.blocks import UPSAMPLE_MODES, Reduction, StackModule, keras_init, max_pool, upsample


class ResidualUNet(SegmentationModel):
    name = "residual_unet"
    size_multiple = 4
    min_size = 60

    def __init__(self, num_classes=34, reduction=30, padding="valid", upsample="nearest", se=False):
        super().__init__()
        check_option(self.name, "reduction", reduction)
        check_option(self.name, "padding", padding, ("valid", "same"))
        check_option(self.name, "upsample", upsample, UPSAMPLE_MODES)
        if padding == "same":
            self.name, self.min_size = "residual_unet_same", 4
        self.upsample_mode = upsample
        r = reduction

        def stack(cin, f):
            return StackModule(cin, f, bn=False, padding=padding, se=se)

        def inv(cin, f):
            return StackModule(cin, f, bn=False, padding=padding, transposed=True, se=se)

        def red(cin):
            return Reduction(cin, r, bn=False, act=None)

        self.e1, self.e2 = stack(3, 30), stack(60, 60)
        self.r1 = red(120)
        self.e3, self.e4 = stack(r, 120), stack(240, 120)
        self.r2 = red(240)
        self.e5, self.e6 = stack(r, 240), stack(480, 240)
        self.r3 = red(480)
        self.d1, self.d2 = inv(r, 120), inv(240, 120)
        self.r4 = red(240)
        self.d3, self.d4 = inv(r, 60), inv(120, 60)
        self.d5, self.d6 = inv(120, 60), inv(120, 30)
        self.head = nn.Conv2d(60, num_classes, 1)
        keras_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        s1 = self.e2(self.e1(x))
        s2 = max_pool(s1)
        s3 = max_pool(self.e4(self.e3(self.r1(s2))))
        y = self.r3(self.e6(self.e5(self.r2(s3))))
        y = upsample(self.d2(self.d1(y)) + s3, self.upsample_mode)
        y = self.d4(self.d3(self.r4(y)))
        y = upsample(y + s2, self.upsample_mode) + s1
        return self.head(self.d6(self.d5(y)))
