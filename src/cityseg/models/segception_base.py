"""Model B, "Base SegCeption" (the seed notebooks): 44,029,154 trainable params at 128x256.

Model A's macro layout with same padding, BN and three-way Inception-style stack modules
(``StackModuleV2``: a dilated-2 5x5 branch in the encoder, a plain 9x9 branch in the decoder),
1x1 reductions to 32 channels followed by BN and a **Keras PReLU** with one alpha per element.
Those alphas (655,360 of them at 128x256) have shape (32, H/2, W/2) or (32, H/4, W/4), so the
model only accepts the ``input_size`` it was built for; build it with another ``input_size`` to
run at another size (the parameter count changes: 43,537,634 at 64x128, 45,995,234 at 256x512).
The seed's dead third max-pool is not created.
"""

from __future__ import annotations

import torch
from torch import nn

from cityseg.errors import CitysegError
from cityseg.models.base import SegmentationModel, check_option
from cityseg.models.blocks import UPSAMPLE_MODES, Reduction, StackModuleV2, keras_init, max_pool, upsample


class SegceptionBase(SegmentationModel):
    name = "segception_base"
    size_multiple = 4
    min_size = 4

    def __init__(self, num_classes=34, input_size=(128, 256), se=False, upsample="nearest"):
        super().__init__()
        check_option(self.name, "upsample", upsample, UPSAMPLE_MODES)
        try:
            h, w = (int(v) for v in input_size)
        except (TypeError, ValueError):
            raise CitysegError(f"segception_base: input_size must be (H, W); got {input_size!r}") from None
        if h <= 0 or w <= 0 or h % 4 or w % 4:
            raise CitysegError(f"segception_base: input_size H and W must be positive multiples of 4; got {h}x{w}")
        self.input_size = (h, w)
        self.upsample_mode = upsample

        def stack(cin, f, inverse=False):
            return StackModuleV2(cin, f, inverse=inverse, se=se)

        def red(cin, scale):
            return Reduction(cin, 32, act="prelu", prelu_shape=(h // scale, w // scale))

        self.e1, self.e2 = stack(3, 64), stack(192, 64)
        self.r1 = red(192, 2)
        self.e3, self.e4 = stack(32, 128), stack(384, 128)
        self.r2 = red(384, 4)
        self.e5, self.e6 = stack(32, 256), stack(768, 256)
        self.r3 = red(768, 4)
        self.d1, self.d2 = stack(32, 128, True), stack(384, 128, True)
        self.r4 = red(384, 2)
        self.d3, self.d4 = stack(32, 64, True), stack(192, 64, True)
        self.d5, self.d6 = stack(192, 32, True), stack(96, 32, True)
        self.head = nn.Conv2d(96, num_classes, 1)
        keras_init(self)

    def size_rule(self) -> str:
        h, w = self.input_size
        return f"exactly the input_size it was built for, {h}x{w} (per-element PReLU); rebuild with input_size=(H, W), H and W multiples of 4, for another size"

    def accepts(self, h: int, w: int) -> bool:
        return (int(h), int(w)) == self.input_size

    def valid_size(self, h: int, w: int) -> tuple[int, int]:
        return self.input_size

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
