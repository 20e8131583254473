"""The tiny conv net the training tests register: dropout makes RNG restoration matter, and ``hooks`` lets
a test act at the n-th training forward (``"sigint"``: Ctrl-C; ``"nan"``: a non-finite output)."""

from __future__ import annotations

import os
import signal

from torch import nn

from cityseg.models.base import SegmentationModel


class HookNet(SegmentationModel):
    """3 convs + dropout; ``hooks[n]`` acts at the n-th training forward (``calls`` counts them)."""

    name = "tiny"
    size_multiple = 4
    min_size = 8
    hooks: dict = {}
    calls = 0

    def __init__(self, num_classes: int = 34, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.2), nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x):
        out = self.head(self.body(x))
        if self.training:
            HookNet.calls += 1
            action = HookNet.hooks.get(HookNet.calls)
            if action == "sigint":
                os.kill(os.getpid(), signal.SIGINT)
            elif action == "nan":
                out = out * float("nan")
        return out
