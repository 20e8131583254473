"""PIDNet-S / -M / -L (Xu et al., "PIDNet: A Real-time Semantic Segmentation Network Inspired by
PID Controllers", CVPR 2023), ported from the official code (``models/pidnet.py``,
``models/model_utils.py``).

Three branches after a shared ResNet trunk to 1/8: the I (integral) branch goes on to 1/64 and
ends in a PAPPM (S, M) or DAPPM (L); the P (proportional) branch stays at 1/8 and takes the I
branch's features through pixel-attention-guided fusion (Pag) after stages 3 and 4; the D
(derivative) branch, also at 1/8 and lighter, adds the I branch's features and learns boundaries.
The Bag / Light-Bag module mixes P and I under the sigmoid of D, then the segmentation head;
logits are upsampled x8 to the input. Choices, and why:

* One class for the three sizes, with the official constructor arguments: S ``planes=32``,
  M ``planes=64`` (both m=2, n=3, ``ppm_planes=96``, ``head_planes=128``, PAPPM + Light-Bag),
  L ``m=3, n=4, planes=64, ppm_planes=112, head_planes=256`` (DAPPM + Bag, heavier D branch).
* Training mode returns ``{"out", "aux", "boundary"}``: ``aux`` is the P-branch head after stage 3
  (``seghead_p``), ``boundary`` the 1-channel boundary logits of the D-branch head after stage 4
  (``seghead_d``), as the official ``augment=True`` model; eval mode returns the main logits only
  and never runs those heads (the official ``augment=False`` deploy model).
* Module names are the official ones, so ``encoder_weights=PATH`` loads the official ImageNet file
  (``PIDNet_S_ImageNet.pth.tar``, under ``state_dict``): the I branch (``conv1``, ``layer1`` ...
  ``layer5``) and the P branch (``layer3_`` ... ``layer5_``, ``compression3/4``, ``pag3/4``) are
  required, the D branch, ``spp`` and ``dfm`` are loaded when present (ImageNet pretraining does
  not cover them; a Cityscapes checkpoint does), the heads never. ``module.`` / ``model.``
  prefixes are accepted; mmsegmentation's converted files use other names and are refused.
* H and W must be multiples of 64: the I branch reaches 1/64. The network runs at other sizes
  (the official code resizes to explicit sizes), but the coarse maps then no longer align with
  the 1/8 branches they are fused into.
* In training the heads leave the model at 1/8 and the loss resizes them, as in the official
  code; in eval mode the logits are upsampled to the input inside the model.
* Deviations from the official code: Pag computes ``x + sim * (y - x)``,
  the official ``(1 - sim) * x + sim * y`` with one product fewer; ReLUs are out-of-place.
* Size (19 classes, deploy mode, measured here): PIDNet-S 7,625,715 params (paper 7.6 M),
  47.19 GMACs = 94.39 GFLOPs at 1024x2048 by ``torch.utils.flop_counter`` (which counts
  2 x MACs); the paper's "47.6 GFLOPs" are MACs (convolutions only are counted here, hence
  -0.9 %). PIDNet-L: 36,939,571 params / 274.93 GMACs (paper 36.9 M / 275.8). PIDNet-M with the
  official M arguments: 28,538,515 params / 177.33 GMACs, below the paper's 34.4 M / 197.4 (the
  architecture the official code builds for M does not reach those figures; S and L agree). The training-only heads add 95,220 params (S).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cityseg.models.base import SegmentationModel
from cityseg.models.blocks import kaiming_init, resize
from cityseg.models.realtime_blocks import DAPPM, PAPPM, BasicBlock, Bottleneck, SegHead, bn_relu_conv, conv_bn, make_layer, make_single_block
from cityseg.models.weights import load_weights


class PagFM(nn.Module):
    """Pixel-attention-guided fusion: P takes I's features where their embeddings agree."""

    def __init__(self, channels: int, mid: int):
        super().__init__()
        self.f_x = conv_bn(channels, mid)
        self.f_y = conv_bn(channels, mid)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        y_q = resize(self.f_y(y), size)
        sim = torch.sigmoid((self.f_x(x) * y_q).sum(1, keepdim=True))
        return x + sim * (resize(y, size) - x)  # = (1 - sim) * x + sim * y, one product fewer


class LightBag(nn.Module):
    """Light boundary-attention-guided fusion (S, M): P where D sees edges, I elsewhere, 1x1 convs."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv_p = conv_bn(cin, cout)
        self.conv_i = conv_bn(cin, cout)

    def forward(self, p: torch.Tensor, i: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        att = torch.sigmoid(d)
        return self.conv_p((1 - att) * i + p) + self.conv_i(i + att * p)


class Bag(nn.Module):
    """Boundary-attention-guided fusion (L): one BN-ReLU-3x3 conv on the edge-weighted mix."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Sequential(*bn_relu_conv(cin, cout, 3))

    def forward(self, p: torch.Tensor, i: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        att = torch.sigmoid(d)
        return self.conv(att * p + (1 - att) * i)


class PIDNet(SegmentationModel):
    """PIDNet; ``PIDNetS`` / ``PIDNetM`` / ``PIDNetL`` fix the size."""

    name = "pidnet"
    training_heads = ("seghead_p", "seghead_d")
    size_multiple = 64
    min_size = 64

    def __init__(self, num_classes: int = 19, m: int = 2, n: int = 3, planes: int = 32, ppm_planes: int = 96, head_planes: int = 128, encoder_weights=None):
        super().__init__()
        p = planes
        # I branch
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, p, 3, 2, 1), nn.BatchNorm2d(p), nn.ReLU(inplace=True), nn.Conv2d(p, p, 3, 2, 1), nn.BatchNorm2d(p), nn.ReLU(inplace=True)
        )
        self.layer1 = make_layer(BasicBlock, p, p, m)
        self.layer2 = make_layer(BasicBlock, p, p * 2, m, stride=2)
        self.layer3 = make_layer(BasicBlock, p * 2, p * 4, n, stride=2)
        self.layer4 = make_layer(BasicBlock, p * 4, p * 8, n, stride=2)
        self.layer5 = make_layer(Bottleneck, p * 8, p * 8, 2, stride=2)
        # P branch
        self.compression3 = conv_bn(p * 4, p * 2)
        self.compression4 = conv_bn(p * 8, p * 2)
        self.pag3 = PagFM(p * 2, p)
        self.pag4 = PagFM(p * 2, p)
        self.layer3_ = make_layer(BasicBlock, p * 2, p * 2, m)
        self.layer4_ = make_layer(BasicBlock, p * 2, p * 2, m)
        self.layer5_ = make_layer(Bottleneck, p * 2, p * 2, 1)
        # D branch: PIDNet-L (m=3) has the wider one, DAPPM and the full Bag
        light = m == 2
        d3 = p if light else p * 2
        self.layer3_d = make_single_block(BasicBlock, p * 2, d3)
        self.layer4_d = make_layer(Bottleneck, p, p, 1) if light else make_single_block(BasicBlock, p * 2, p * 2)
        self.diff3 = conv_bn(p * 4, d3, 3)
        self.diff4 = conv_bn(p * 8, p * 2, 3)
        self.spp = (PAPPM if light else DAPPM)(p * 16, ppm_planes, p * 4)
        self.dfm = (LightBag if light else Bag)(p * 4, p * 4)
        self.layer5_d = make_layer(Bottleneck, p * 2, p * 2, 1)
        # heads; seghead_p and seghead_d are training only
        self.seghead_p = SegHead(p * 2, head_planes, num_classes)
        self.seghead_d = SegHead(p * 2, p, 1)
        self.final_layer = SegHead(p * 4, head_planes, num_classes)
        kaiming_init(self)
        if encoder_weights is not None:
            required = (
                "conv1",
                "layer1",
                "layer2",
                "layer3",
                "layer4",
                "layer5",
                "compression3",
                "compression4",
                "pag3",
                "pag4",
                "layer3_",
                "layer4_",
                "layer5_",
            )
            optional = ("layer3_d", "layer4_d", "layer5_d", "diff3", "diff4", "spp", "dfm")
            load_weights(self, encoder_weights, "official PIDNet", required=required, optional=optional)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        self._check_input(x)
        size = x.shape[-2:]
        x = self.layer1(self.conv1(x))
        x = F.relu(self.layer2(F.relu(x)))  # 1/8: feeds all three branches
        xp = self.layer3_(x)
        xd = self.layer3_d(x)
        hsize = xd.shape[-2:]
        x = F.relu(self.layer3(x))
        xp = self.pag3(xp, self.compression3(x))
        xd = xd + resize(self.diff3(x), hsize)
        aux_in = xp
        x = F.relu(self.layer4(x))
        xp = self.layer4_(F.relu(xp))
        xd = self.layer4_d(F.relu(xd))
        xp = self.pag4(xp, self.compression4(x))
        xd = xd + resize(self.diff4(x), hsize)
        boundary_in = xd
        xp = self.layer5_(F.relu(xp))
        xd = self.layer5_d(F.relu(xd))
        x = resize(self.spp(self.layer5(x)), hsize)
        out = self.final_layer(self.dfm(xp, x, xd))
        if not self.training:
            return resize(out, size)
        return {"out": out, "aux": self.seghead_p(aux_in), "boundary": self.seghead_d(boundary_in)}  # at 1/8: the loss resizes them


class PIDNetS(PIDNet):
    name = "pidnet_s"

    def __init__(self, num_classes: int = 19, encoder_weights=None):
        super().__init__(num_classes, m=2, n=3, planes=32, ppm_planes=96, head_planes=128, encoder_weights=encoder_weights)


class PIDNetM(PIDNet):
    name = "pidnet_m"

    def __init__(self, num_classes: int = 19, encoder_weights=None):
        super().__init__(num_classes, m=2, n=3, planes=64, ppm_planes=96, head_planes=128, encoder_weights=encoder_weights)


class PIDNetL(PIDNet):
    name = "pidnet_l"

    def __init__(self, num_classes: int = 19, encoder_weights=None):
        super().__init__(num_classes, m=3, n=4, planes=64, ppm_planes=112, head_planes=256, encoder_weights=encoder_weights)
