"""ESPNetv2 (Mehta et al., "ESPNetv2: A Light-weight, Power Efficient, and General Purpose
Convolutional Neural Network", CVPR 2019), ported from the paper and the authors' code
(sacmehta/EdgeNets: ``model/classification/espnetv2.py``, ``nn_layers/eesp.py``,
``nn_layers/efficient_pyramid_pool.py``, ``nn_layers/efficient_pt.py``,
``model/segmentation/espnetv2.py``).

The EESP unit replaces ESP's dense dilated convs by a grouped 1x1 reduction, four depthwise
dilated 3x3 branches summed hierarchically and a grouped 1x1 expansion; a strided EESP beside a
3x3 average pool downsamples, with the image added back at each scale ("input reinforcement"). The
encoder is the ImageNet network up to 1/16 (levels 1-4, its 1/32 level and classifier dropped).
The segmentation head decodes bottom-up: an efficient pyramid pool (a depthwise conv at five
scales of the features, 2x down to 0.1x, shuffled and merged) at 1/16, then three times x2
bilinear upsampling, adding the encoder's features gated by their global average (efficient
point-wise conv), and another pyramid pool; the last one outputs the classes at 1/2, upsampled
bilinearly to the input. Choices, and why:

* Widths per scale ``s`` (0.5, 1.0, 1.25, 1.5, 2.0), branch counts, receptive-field limits, the
  decoder width 16 ("city") and BatchNorm ``eps=1e-5`` as the authors' code, so their Cityscapes
  weights load (``cityseg import``) and give their logits; all interpolation is
  ``align_corners=True`` as theirs.
* ``void=True`` adds one output after the classes (their Cityscapes models predict 20: the 19
  trainIds and "background"); prediction maps a void argmax to labelId 0, as their ``relabel``.
* The strided EESP of a downsampler returns before its final PReLU, which the authors' code still
  creates: their checkpoints hold that unused ``module_act``; the model here omits it and the
  importer names it as ignored, so the parameter count is the network that runs.
* H and W must be multiples of 16: the decoder adds x2-upsampled maps to the encoder's.
* Sizes: see ``docs/benchmarks.md``; s=2.0 with 20 outputs has the parameters of the authors'
  ``espnetv2_s_2.0_city_*.pth`` less the unused PReLUs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cityseg.errors import CitysegError
from cityseg.models.base import SegmentationModel, check_option
from cityseg.models.blocks import kaiming_init
from cityseg.models.espnet import BNPReLU, ConvBNPReLU, image_pyramid

#: scale s -> encoder widths at 1/2, 1/4, 1/8, 1/16 (the authors' ``sc_ch_dict``, levels 1-4)
WIDTHS = {0.5: (16, 32, 64, 128), 1.0: (32, 64, 128, 256), 1.25: (32, 80, 160, 320), 1.5: (32, 96, 192, 384), 2.0: (32, 128, 256, 512)}
BRANCHES = 4
DECODER_WIDTH = 16  # the authors' "city" / "pascal" decoder base width
_DILATION = {3: 1, 5: 2, 7: 3, 9: 4, 11: 5, 13: 6}  # effective kernel -> dilation of a 3x3 conv
_POOL_SCALES = (2.0, 1.5, 1.0, 0.5, 0.1)


def _up(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class EESP(nn.Module):
    """Extremely efficient spatial pyramid unit: grouped 1x1 reduce, depthwise dilated branches
    summed hierarchically, BN-PReLU, grouped 1x1 expand; stride 1 adds the input and a PReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, r_lim: int = 7):
        super().__init__()
        n = cout // BRANCHES
        if n * BRANCHES != cout:
            raise CitysegError(f"EESP needs a width divisible by {BRANCHES}; got {cout}")
        kernels = sorted(k if k <= r_lim else 3 for k in (3 + 2 * i for i in range(BRANCHES)))
        self.proj_1x1 = ConvBNPReLU(cin, n, 1, groups=BRANCHES)
        self.spp_dw = nn.ModuleList(nn.Conv2d(n, n, 3, stride, _DILATION[k], dilation=_DILATION[k], groups=n, bias=False) for k in kernels)
        self.br_after_cat = BNPReLU(cout, 1e-5)
        self.conv_1x1_exp = ConvBNPReLU(cout, cout, 1, groups=BRANCHES, act=False)
        self.module_act = nn.PReLU(cout) if stride == 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj_1x1(x)
        outs = [self.spp_dw[0](y)]
        for conv in self.spp_dw[1:]:
            outs.append(conv(y) + outs[-1])
        out = self.conv_1x1_exp(self.br_after_cat(torch.cat(outs, 1)))
        if self.module_act is None:  # the strided unit of a downsampler
            return out
        return self.module_act(out + x if out.shape == x.shape else out)


class DownSampler(nn.Module):
    """Strided EESP beside a 3x3 average pool (concatenated), plus the image at this scale."""

    def __init__(self, cin: int, cout: int, r_lim: int, times: int):
        super().__init__()
        self.times = times  # how often the image is halved to reach this output's scale
        self.eesp = EESP(cin, cout - cin, stride=2, r_lim=r_lim)
        self.inp_reinf = nn.Sequential(ConvBNPReLU(3, 3, 3), ConvBNPReLU(3, cout, 1, act=False))
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        out = torch.cat([F.avg_pool2d(x, 3, 2, 1), self.eesp(x)], 1)
        return self.act(out + self.inp_reinf(image_pyramid(image, self.times)))


class PyramidPool(nn.Module):
    """Efficient pyramid pooling: 1x1 projection, a depthwise 3x3 at five scales, merge to ``cout``."""

    def __init__(self, cin: int, proj: int, cout: int, last: bool = False):
        super().__init__()
        k = len(_POOL_SCALES)
        self.projection_layer = ConvBNPReLU(cin, proj, 1)
        self.stages = nn.ModuleList(nn.Conv2d(proj, proj, 3, 1, 1, groups=proj, bias=False) for _ in _POOL_SCALES)
        self.merge_br = BNPReLU(proj * k, 1e-5)
        self.merge_conv = ConvBNPReLU(proj * k, proj, 3, groups=proj)
        self.merge_out = nn.Conv2d(proj, cout, 1, bias=last)
        self.br = None if last else BNPReLU(cout, 1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.projection_layer(x)
        size = x.shape[-2:]
        outs = []
        for scale, conv in zip(_POOL_SCALES, self.stages):
            scaled = [max(int(math.ceil(v * scale)), 5) for v in size]
            if scale > 1:
                outs.append(F.adaptive_avg_pool2d(conv(_up(x, scaled)), size))
            elif scale < 1:
                outs.append(_up(conv(F.adaptive_avg_pool2d(x, scaled)), size))
            else:
                outs.append(conv(x))
        y = self.merge_br(torch.cat(outs, 1))
        b, c, h, w = y.shape  # channel shuffle: interleave the five scales
        y = y.view(b, len(_POOL_SCALES), c // len(_POOL_SCALES), h, w).transpose(1, 2).reshape(b, c, h, w)
        y = self.merge_out(self.merge_conv(y))
        return y if self.br is None else self.br(y)


class GatedProjection(nn.Module):
    """Efficient point-wise conv: grouped 3x3 conv-BN-PReLU, scaled by a sigmoid gate on the global average."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.gate = nn.Conv2d(cin, cout, 1, bias=False)
        self.expansion_layer = ConvBNPReLU(cin, cout, 3, groups=math.gcd(cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expansion_layer(x) * torch.sigmoid(self.gate(F.adaptive_avg_pool2d(x, 1)))


class ESPNetv2(SegmentationModel):
    """ESPNetv2 encoder (levels 1-4, to 1/16) with the authors' bottom-up segmentation head."""

    name = "espnetv2"
    size_multiple = 16
    min_size = 16

    def __init__(self, num_classes: int = 19, s: float = 2.0, void: bool = False):
        super().__init__()
        check_option(self.name, "s", s, tuple(WIDTHS))
        check_option(self.name, "void", void, (False, True))
        self.void_class = bool(void)
        out = num_classes + int(void)
        c1, c2, c3, c4 = WIDTHS[s]
        self.level1 = ConvBNPReLU(3, c1, 3, 2)
        self.level2_0 = DownSampler(c1, c2, r_lim=13, times=2)
        self.level3_0 = DownSampler(c2, c3, r_lim=11, times=3)
        self.level3 = nn.ModuleList(EESP(c3, c3, r_lim=9) for _ in range(3))
        self.level4_0 = DownSampler(c3, c4, r_lim=9, times=4)
        self.level4 = nn.ModuleList(EESP(c4, c4, r_lim=7) for _ in range(7))
        dec = (4 * DECODER_WIDTH, 3 * DECODER_WIDTH, 2 * DECODER_WIDTH)
        proj = max(1, min(out // 2, DECODER_WIDTH))
        self.bu_dec_l1 = PyramidPool(c4, proj, dec[0])
        self.bu_dec_l2 = PyramidPool(dec[0], proj, dec[1])
        self.bu_dec_l3 = PyramidPool(dec[1], proj, dec[2])
        self.bu_dec_l4 = PyramidPool(dec[2], proj, out, last=True)
        self.merge_enc_dec_l2 = GatedProjection(c3, dec[0])
        self.merge_enc_dec_l3 = GatedProjection(c2, dec[1])
        self.merge_enc_dec_l4 = GatedProjection(c1, dec[2])
        self.bu_br_l2, self.bu_br_l3, self.bu_br_l4 = (BNPReLU(c, 1e-5) for c in dec)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        l1 = self.level1(x)
        l2 = self.level2_0(l1, x)
        l3 = self.level3_0(l2, x)
        for block in self.level3:
            l3 = block(l3)
        l4 = self.level4_0(l3, x)
        for block in self.level4:
            l4 = block(l4)
        y = self.bu_dec_l1(l4)
        steps = ((l3, self.merge_enc_dec_l2, self.bu_br_l2, self.bu_dec_l2), (l2, self.merge_enc_dec_l3, self.bu_br_l3, self.bu_dec_l3))
        for skip, project, br, decode in (*steps, (l1, self.merge_enc_dec_l4, self.bu_br_l4, self.bu_dec_l4)):
            y = decode(br(project(skip) + _up(y, skip.shape[-2:])))
        return _up(y, x.shape[-2:])
