"""Model D, the seed's final "deep stack module" SegCeption (as the seed notebooks build it).

Deep stack module (f): a = 3x3(x); concat[5x5(x), 3x3(a), 3x1(a), 1x3(a)] = 4f (Inception-v3-style
factorised branches), every conv Conv-BN-ReLU, same padding. Five encoder levels (f = 34, 34, 68,
68, 136) of ds -> red -> ds -> red (= skip) -> pool; bottleneck at 1/32: ds(256) -> red -> red ->
ds(256); five decoder blocks up -> red(f) -> [+ skip] -> ds(f) -> red(f) -> ds(f'). Faithful:
decoder block 1 has no skip and no reduction between its deep stacks, the level-5 skip is unused,
and block 4's last deep stack has 32 filters (a typo for 34). 13,583,084 trainable params.
The notebook's dead layers (a bottleneck ds(256), a block-1 red(136)) are not created.

``fixed=True`` (``segception_deep_fixed``) uses the level-5 skip (added after block 1's
reduction) and fixes the 32-vs-34 typo (block 4 outputs 136 channels). H and W: multiples of 32.
"""

from __future__ import annotations

import torch
from torch import nn

from cityseg.models.base import SegmentationModel, check_option
from cityseg.models.blocks import UPSAMPLE_MODES, DeepStackModule, Reduction, keras_init, max_pool, upsample

ENCODER_FILTERS = (34, 34, 68, 68, 136)


class SegceptionDeep(SegmentationModel):
    name = "segception_deep"
    size_multiple = 32
    min_size = 32

    def __init__(self, num_classes=34, fixed=False, se=False, upsample="nearest"):
        super().__init__()
        check_option(self.name, "upsample", upsample, UPSAMPLE_MODES)
        if fixed:
            self.name = "segception_deep_fixed"
        self.fixed = bool(fixed)
        self.upsample_mode = upsample

        def ds(cin, f):
            return DeepStackModule(cin, f, se=se)

        self.encoder = nn.ModuleList()
        cin = 3
        for f in ENCODER_FILTERS:
            self.encoder.append(nn.Sequential(ds(cin, f), Reduction(4 * f, f), ds(f, f), Reduction(4 * f, f)))
            cin = f
        self.bottleneck = nn.Sequential(ds(136, 256), Reduction(1024, 256), Reduction(256, 256), ds(256, 256))
        # block 1 (1/16): up -> red(136) -> ds(136) -> ds(136) on the 544-channel tensor
        self.up1_red = Reduction(1024, 136)
        self.up1 = nn.Sequential(ds(136, 136), ds(544, 136))
        last4 = 34 if fixed else 32
        self.dec_red = nn.ModuleList()
        self.dec = nn.ModuleList()
        for cin, f, f_out in ((544, 68, 68), (272, 68, 68), (272, 34, last4), (4 * last4, 34, 34)):
            self.dec_red.append(Reduction(cin, f))
            self.dec.append(nn.Sequential(ds(f, f), Reduction(4 * f, f), ds(f, f_out)))
        self.head = nn.Conv2d(136, num_classes, 1)
        keras_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
            x = max_pool(x)
        y = self.up1_red(upsample(self.bottleneck(x), self.upsample_mode))
        if self.fixed:
            y = y + skips[4]
        y = self.up1(y)
        for red, block, skip in zip(self.dec_red, self.dec, reversed(skips[:4])):
            y = block(red(upsample(y, self.upsample_mode)) + skip)
        return self.head(y)
