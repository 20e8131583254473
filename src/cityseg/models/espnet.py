"""ESPNet and ESPNet-C (Mehta et al., "ESPNet: Efficient Spatial Pyramid of Dilated Convolutions for
Semantic Segmentation", ECCV 2018), ported from the paper and the authors' code (sacmehta/ESPNet,
``test/Model.py``: ``ESPNet_Encoder`` and ``ESPNet``).

The ESP module reduces (1x1 conv to N/5 channels), splits into five dilated 3x3 convs (rates 1, 2,
4, 8, 16), sums the dilated outputs hierarchically before concatenating them (the paper's fix for
gridding) and adds the input back. ESPNet-C stacks a strided 3x3 conv to 1/2, a strided ESP to
1/4 with ``p`` ESP modules, a strided ESP to 1/8 with ``q`` ESP modules, each level's output
concatenated with its input (and a downsampled copy of the image, "input reinforcement") and
classified by a 1x1 conv at 1/8. ESPNet adds the light decoder: the 1/8 logits are upsampled by
a transposed conv, merged with the 1/4 features projected to the class count through one more ESP
module, upsampled again, merged with the 1/2 features by a 3x3 conv and upsampled to the input.
Choices, and why:

* Layers and BatchNorm ``eps=1e-3`` as the authors' test code, so their Cityscapes weights load
  (``cityseg import``, ``cityseg.models.official``) and give their logits.
* ``void=True`` adds one output after the classes: the official Cityscapes models are trained on
  20 classes, the 19 trainIds and "void" (255 mapped to a class of its own). The decoder's
  internal widths follow the output count, so the option is part of the architecture. Prediction
  maps a void argmax to labelId 0 (unlabeled), as the official ``relabel`` does.
* ESPNet-C upsamples its 1/8 logits bilinearly (``align_corners=False``) inside the model, so it
  meets the full-size output contract; the authors' test script upsamples x8 outside the model.
* H and W must be multiples of 8: the three transposed convs double the 1/8 maps exactly back.
* Sizes (20 outputs, measured here): ESPNet p=2, q=8 has 364,569 parameters, the count of the
  authors' ``espnet_p_2_q_8.pth``; see ``docs/benchmarks.md`` for all variants and GFLOPs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cityseg.errors import CitysegError
from cityseg.models.base import SegmentationModel, check_option
from cityseg.models.blocks import kaiming_init, resize

_RATES = (2, 4, 8, 16)  # the dilation rates summed hierarchically; rate 1 is the separate first branch


class BNPReLU(nn.Module):
    """BatchNorm + per-channel PReLU (the authors' ``BR``)."""

    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=eps)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


class ConvBNPReLU(nn.Module):
    """Conv without bias -> BatchNorm -> optional PReLU (the authors' ``CBR`` / ``CB``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, eps: float = 1e-5, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=eps)
        self.act = nn.PReLU(cout) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return x if self.act is None else self.act(x)


def image_pyramid(x: torch.Tensor, times: int) -> torch.Tensor:
    """The image downsampled ``times`` times by 3x3 average pooling, stride 2 ("input reinforcement")."""
    for _ in range(times):
        x = F.avg_pool2d(x, 3, 2, 1)
    return x


class ESP(nn.Module):
    """Efficient spatial pyramid: reduce, split into dilated branches, sum hierarchically, merge.

    ``stride=2`` makes the reduction a strided 3x3 conv (the authors' ``DownSamplerB``, no
    residual); otherwise it is a 1x1 conv and ``residual`` adds the input back.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, residual: bool = True, eps: float = 1e-3):
        super().__init__()
        n = cout // 5
        kernel = 3 if stride == 2 else 1
        self.c1 = nn.Conv2d(cin, n, kernel, stride, kernel // 2, bias=False)
        self.d1 = nn.Conv2d(n, cout - 4 * n, 3, 1, 1, bias=False)
        self.dilated = nn.ModuleList(nn.Conv2d(n, n, 3, 1, r, dilation=r, bias=False) for r in _RATES)
        self.br = BNPReLU(cout, eps)
        self.residual = residual and stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c1(x)
        outs, acc = [self.d1(y)], None
        for conv in self.dilated:
            acc = conv(y) if acc is None else acc + conv(y)
            outs.append(acc)
        out = torch.cat(outs, 1)
        return self.br(x + out if self.residual else out)


class ESPNetEncoderCore(nn.Module):
    """ESPNet-C's layers; ``forward`` returns the 1/2, 1/4 and 1/8 features the decoder reads."""

    def __init__(self, num_outputs: int, p: int, q: int):
        super().__init__()
        self.level1 = ConvBNPReLU(3, 16, 3, 2, eps=1e-3)
        self.b1 = BNPReLU(16 + 3, 1e-3)
        self.level2_0 = ESP(16 + 3, 64, stride=2)
        self.level2 = nn.ModuleList(ESP(64, 64) for _ in range(p))
        self.b2 = BNPReLU(128 + 3, 1e-3)
        self.level3_0 = ESP(128 + 3, 128, stride=2)
        self.level3 = nn.ModuleList(ESP(128, 128) for _ in range(q))
        self.b3 = BNPReLU(256, 1e-3)
        self.classifier = nn.Conv2d(256, num_outputs, 1, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        half = self.level1(x)
        cat1 = self.b1(torch.cat([half, image_pyramid(x, 1)], 1))
        down2 = self.level2_0(cat1)
        y = down2
        for block in self.level2:
            y = block(y)
        cat2 = self.b2(torch.cat([y, down2, image_pyramid(x, 2)], 1))
        down3 = self.level3_0(cat2)
        z = down3
        for block in self.level3:
            z = block(z)
        logits8 = self.classifier(self.b3(torch.cat([down3, z], 1)))
        return half, cat2, logits8


class _ESPNetBase(SegmentationModel):
    size_multiple = 8
    min_size = 8
    #: oneDNN's bf16 weight gradient of a dilated 3x3 conv in channels_last is non-finite for some shapes
    #: that ESPNet has (25 channels at 32x64: level 3 of a 256x512 crop), so bf16 training diverges at
    #: its first step; in NCHW the same gradients are finite (tests/test_espnet.py reproduces it)
    train_channels_last = False

    def _outputs(self, num_classes: int, void: bool, p: int, q: int) -> int:
        """The output count (classes + void) after checking the options."""
        check_option(self.name, "p", p)
        check_option(self.name, "q", q)
        check_option(self.name, "void", void, (False, True))
        n = num_classes + int(void)
        if n < 5:  # the ESP modules split the class count into five branches
            raise CitysegError(f"model {self.name!r}: needs at least 5 outputs (classes + void); got {n}")
        self.void_class = bool(void)
        return n


class ESPNetC(_ESPNetBase):
    """ESPNet-C: the encoder alone, its 1/8 logits upsampled bilinearly to the input size."""

    name = "espnet_c"

    def __init__(self, num_classes: int = 19, p: int = 5, q: int = 3, void: bool = False):
        super().__init__()
        self.encoder = ESPNetEncoderCore(self._outputs(num_classes, void, p, q), p, q)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return resize(self.encoder(x)[2], x.shape[-2:])


class ESPNet(_ESPNetBase):
    """ESPNet: ESPNet-C with the authors' light decoder (two merges, three x2 transposed convs)."""

    name = "espnet"

    def __init__(self, num_classes: int = 19, p: int = 2, q: int = 8, void: bool = False):
        super().__init__()
        c = self._outputs(num_classes, void, p, q)
        self.encoder = ESPNetEncoderCore(c, p, q)
        self.bn_l3 = nn.BatchNorm2d(c, eps=1e-3)
        self.up_l3 = nn.ConvTranspose2d(c, c, 2, 2, bias=False)
        self.project_l2 = nn.Conv2d(128 + 3, c, 1, bias=False)
        self.merge_br = BNPReLU(2 * c, 1e-3)
        self.merge_l2 = ESP(2 * c, c, residual=False)
        self.up_l2 = nn.ConvTranspose2d(c, c, 2, 2, bias=False)
        self.up_l2_br = BNPReLU(c, 1e-3)
        self.merge_l1 = ConvBNPReLU(16 + c, c, 3, eps=1e-3)
        self.up_l1 = nn.ConvTranspose2d(c, c, 2, 2, bias=False)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        half, cat2, logits8 = self.encoder(x)
        up = self.up_l3(self.bn_l3(logits8))
        merged = self.merge_l2(self.merge_br(torch.cat([self.project_l2(cat2), up], 1)))
        up = self.up_l2_br(self.up_l2(merged))
        return self.up_l1(self.merge_l1(torch.cat([up, half], 1)))
