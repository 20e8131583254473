"""BiSeNet V2 (Yu et al., "BiSeNet V2: Bilateral Network with Guided Aggregation for Real-time
Semantic Segmentation", IJCV 2021), built from the paper and CoinCheung/BiSeNet
``lib/models/bisenetv2.py`` (the widely used PyTorch port; the authors released no code).

A wide, shallow detail branch (64-64-128 channels, to 1/8) and a narrow, deep semantic branch
(stem to 1/4, gather-and-expansion layers to 1/32, context embedding), merged by bilateral
guided aggregation (each branch gates the other at its own scale), then a segmentation head;
logits are upsampled x8 to the input. Choices, and why:

* Structure and widths as CoinCheung's port (which follows the paper's Table 1), including the
  ReLU after each depthwise conv of a GE layer, the BN-ReLU on the context-embedding output conv
  and the ReLU after aggregation (the paper's figures omit these; the port adds them and trains
  to the paper's accuracy); main head 3x3 conv 128 -> 1024 + dropout 0.1 + 1x1 conv, as the port.
* Training mode returns ``{"out", "aux2", "aux3", "aux4", "aux5"}``: the booster heads on the
  semantic branch's stem (1/4), S3 (1/8), S4 (1/16) and S5 before context embedding (1/32),
  as the port's ``aux2`` ... ``aux5_4`` (x2 nearest upsample + 3x3 conv to up_factor^2 channels
  + 1x1 conv). Eval mode returns the main logits only and never runs those heads.
* Initialisation as the port: Kaiming-normal (fan_out) convs with zero biases, BN weight 1 bias 0
  except the last BN of each GE layer, which starts at 0 so that the layer starts as its shortcut.
* Module names are the port's, so ``encoder_weights=PATH`` loads its ImageNet file
  (``backbone_v2.pth``: ``{"detail": state_dict, "segment": state_dict}``, or the same keys
  flat as ``detail.*`` / ``segment.*``); both branches are required, the aggregation and heads are
  not pretrained there and stay initialised.
* H and W must be multiples of 32 (the semantic branch reaches 1/32 and is upsampled x4 onto the
  1/8 detail features).
* Deviations from the port: the aggregation upsamples the semantic features bilinearly
  (align_corners=False, as mmsegmentation) instead of nearest; the main head resizes to the
  input size (in eval mode) rather than by a fixed factor; in training every head leaves the model at
  its own resolution and the loss resizes it.
* Size (19 classes, deploy mode, measured here): 3,358,627 params (CoinCheung's port and
  mmsegmentation's ``bisenetv2``, both with the 1024-channel head: ~3.3-3.4 M; the paper gives
  no count). 24.60 GMACs = 49.21 GFLOPs at 512x1024 by ``torch.utils.flop_counter`` (which
  counts 2 x MACs), 98.41 GMACs at 1024x2048. The paper's "21.15 GFLOPs" at 512x1024 are MACs,
  and this port is 16 % above them: detail branch 11.70, semantic branch 1.34, aggregation 1.74,
  main head 9.82 GMACs (its 3x3 128 -> 1024 conv at 1/8 alone is 9.66). The paper does not give
  the head's width; no width matches both the common implementations' parameter count and the
  paper's FLOPs (21.15 would need ~660 channels and 2.9 M params), so the common 1024 is kept.
  The booster heads add 1,872,860 params.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cityseg.models.base import SegmentationModel
from cityseg.models.blocks import kaiming_init, resize
from cityseg.models.weights import load_weights


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = False) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


class DetailBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.S1 = nn.Sequential(ConvBNReLU(3, 64, 3, 2), ConvBNReLU(64, 64))
        self.S2 = nn.Sequential(ConvBNReLU(64, 64, 3, 2), ConvBNReLU(64, 64), ConvBNReLU(64, 64))
        self.S3 = nn.Sequential(ConvBNReLU(64, 128, 3, 2), ConvBNReLU(128, 128), ConvBNReLU(128, 128))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.S3(self.S2(self.S1(x)))


class StemBlock(nn.Module):
    """To 1/4 with two paths (strided conv, max-pool) concatenated and fused."""

    def __init__(self):
        super().__init__()
        self.conv = ConvBNReLU(3, 16, 3, 2)
        self.left = nn.Sequential(ConvBNReLU(16, 8, 1), ConvBNReLU(8, 16, 3, 2))
        self.right = nn.MaxPool2d(3, 2, 1)
        self.fuse = ConvBNReLU(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.left(x), self.right(x)], 1))


class CEBlock(nn.Module):
    """Context embedding: global average -> BN -> 1x1 conv, added to the input, then a 3x3 conv."""

    def __init__(self, channels: int = 128):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv_gap = ConvBNReLU(channels, channels, 1)
        self.conv_last = ConvBNReLU(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_last(self.conv_gap(self.bn(x.mean((2, 3), keepdim=True))) + x)


class GELayer(nn.Module):
    """Gather-and-expansion layer: 3x3 conv, depthwise expansion (x6; two depthwise convs when
    strided), 1x1 projection, plus the identity or a depthwise-separable strided shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 6):
        super().__init__()
        mid = cin * expand
        self.conv1 = ConvBNReLU(cin, cin)
        if stride == 1:
            self.dwconv = nn.Sequential(*_conv_bn(cin, mid, 3, groups=cin, relu=True))
            self.shortcut = None
        else:
            self.dwconv1 = nn.Sequential(*_conv_bn(cin, mid, 3, 2, groups=cin))
            self.dwconv2 = nn.Sequential(*_conv_bn(mid, mid, 3, groups=mid, relu=True))
            self.shortcut = nn.Sequential(*_conv_bn(cin, cin, 3, 2, groups=cin), *_conv_bn(cin, cout, 1))
        self.conv2 = nn.Sequential(*_conv_bn(mid, cout, 1))
        self.conv2[1].zero_init = True  # the layer starts as its shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x)
        y = self.dwconv(y) if self.shortcut is None else self.dwconv2(self.dwconv1(y))
        return F.relu(self.conv2(y) + (x if self.shortcut is None else self.shortcut(x)))


class SegmentBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.S1S2 = StemBlock()
        self.S3 = nn.Sequential(GELayer(16, 32, 2), GELayer(32, 32))
        self.S4 = nn.Sequential(GELayer(32, 64, 2), GELayer(64, 64))
        self.S5_4 = nn.Sequential(GELayer(64, 128, 2), GELayer(128, 128), GELayer(128, 128), GELayer(128, 128))
        self.S5_5 = CEBlock()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feat2 = self.S1S2(x)
        feat3 = self.S3(feat2)
        feat4 = self.S4(feat3)
        feat5_4 = self.S5_4(feat4)
        return [feat2, feat3, feat4, feat5_4, self.S5_5(feat5_4)]


class BGALayer(nn.Module):
    """Bilateral guided aggregation: detail gated by upsampled semantics at 1/8, semantics gated by
    downsampled detail at 1/32, summed at 1/8, 3x3 conv."""

    def __init__(self, c: int = 128):
        super().__init__()
        self.left1 = nn.Sequential(*_conv_bn(c, c, 3, groups=c), nn.Conv2d(c, c, 1, bias=False))
        self.left2 = nn.Sequential(*_conv_bn(c, c, 3, 2), nn.AvgPool2d(3, 2, 1))
        self.right1 = nn.Sequential(*_conv_bn(c, c, 3))
        self.right2 = nn.Sequential(*_conv_bn(c, c, 3, groups=c), nn.Conv2d(c, c, 1, bias=False))
        self.conv = nn.Sequential(*_conv_bn(c, c, 3, relu=True))

    def forward(self, d: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        size = d.shape[-2:]
        left = self.left1(d) * torch.sigmoid(resize(self.right1(s), size))
        right = resize(self.left2(d) * torch.sigmoid(self.right2(s)), size)
        return self.conv(left + right)


class SegmentHead(nn.Module):
    """3x3 ConvBNReLU + dropout [+ x2 nearest + 3x3 ConvBNReLU to up_factor^2 channels] + 1x1 conv."""

    def __init__(self, cin: int, mid: int, num_classes: int, up_factor: int = 8, aux: bool = True):
        super().__init__()
        self.conv = ConvBNReLU(cin, mid)
        self.drop = nn.Dropout(0.1)
        mid2 = up_factor * up_factor if aux else mid
        self.conv_out = nn.Sequential(
            nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest"), ConvBNReLU(mid, mid2)) if aux else nn.Identity(),
            nn.Conv2d(mid2, num_classes, 1, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.drop(self.conv(x)))


class BiSeNetV2(SegmentationModel):
    name = "bisenetv2"
    training_heads = ("aux2", "aux3", "aux4", "aux5_4")
    size_multiple = 32
    min_size = 32

    def __init__(self, num_classes: int = 19, encoder_weights=None):
        super().__init__()
        self.detail = DetailBranch()
        self.segment = SegmentBranch()
        self.bga = BGALayer()
        self.head = SegmentHead(128, 1024, num_classes, up_factor=8, aux=False)
        # booster heads, training only
        self.aux2 = SegmentHead(16, 128, num_classes, up_factor=4)
        self.aux3 = SegmentHead(32, 128, num_classes, up_factor=8)
        self.aux4 = SegmentHead(64, 128, num_classes, up_factor=16)
        self.aux5_4 = SegmentHead(128, 128, num_classes, up_factor=32)
        kaiming_init(self, zero_bias=True)
        if encoder_weights is not None:
            load_weights(self, encoder_weights, "CoinCheung BiSeNetV2", required=("detail", "segment"))

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        self._check_input(x)
        size = x.shape[-2:]
        feat2, feat3, feat4, feat5_4, feat_s = self.segment(x)
        out = self.head(self.bga(self.detail(x), feat_s))
        if not self.training:
            return resize(out, size)
        heads = {"aux2": (self.aux2, feat2), "aux3": (self.aux3, feat3), "aux4": (self.aux4, feat4), "aux5": (self.aux5_4, feat5_4)}
        return {"out": out, **{k: head(f) for k, (head, f) in heads.items()}}  # each at its own size: the loss resizes them
