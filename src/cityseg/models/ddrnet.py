"""DDRNet-23-slim and DDRNet-23 (Hong et al., "Deep Dual-resolution Networks for Real-time and
Accurate Semantic Segmentation of Road Scenes", 2021), ported from the official code
(``segmentation/DDRNet_23_slim.py`` / ``DDRNet_23.py``).

A ResNet trunk to 1/8, then two branches: a high-resolution one kept at 1/8 and a low-resolution
one going to 1/16, 1/32, 1/64, with bilateral fusion after stages 3 and 4 (high -> low by strided
3x3 convs, low -> high by 1x1 conv + bilinear upsampling), a DAPPM on the 1/64 features, and the
sum of both branches into the segmentation head; logits are upsampled x8 to the input.
Choices, and why:

* Same code for both widths: ``planes=32, head_planes=64`` is DDRNet-23-slim, ``planes=64,
  head_planes=128`` is DDRNet-23 (the official constructors; both use ``spp_planes=128`` and
  [2, 2, 2, 2] basic blocks).
* Module names are the official ones, so ``encoder_weights=PATH`` loads the official ImageNet
  file (``DDRNet23s_imagenet.pth`` / ``DDRNet23_imagenet.pth``: ``conv1``, ``layer1`` ...
  ``layer5``, ``layer3_`` ... ``layer5_``, ``compression3/4``, ``down3/4``, all required; a
  ``module.`` / ``model.`` prefix and a ``state_dict`` wrapper are accepted; its classifier
  ``down5`` / ``last_layer`` / ``linear`` is ignored; ``spp`` is loaded when the file has it,
  e.g. a Cityscapes checkpoint). Nothing is downloaded.
* Training mode returns ``{"out", "aux"}``: ``aux`` is the official auxiliary head
  (``seghead_extra``) on the high-resolution branch after stage 3. Eval mode returns the main
  logits only and never runs that head (the official ``augment=False`` deploy model).
* H and W must be multiples of 64: the low-resolution branch reaches 1/64. The network runs at
  other sizes too (the official code resizes to explicit sizes), but then the 1/64 and 1/32 maps
  are rounded up and no longer align with the 1/8 branch they are fused into.
* Deviations from the official code: the output is bilinearly upsampled to the input inside the
  model (the official one returns 1/8 logits and resizes in the loss); the 1/8 fusion size is the
  high-resolution map's own size rather than ``input // 8`` (identical at multiples of 64);
  BatchNorm instead of SyncBatchNorm (single process); ReLUs are out-of-place.
* Size (19 classes, deploy mode, measured here): DDRNet-23-slim 5,695,987 params (paper 5.7 M),
  36.28 GMACs = 72.56 GFLOPs at 1024x2048 by ``torch.utils.flop_counter`` (which counts
  2 x MACs); the paper's "36.3 GFLOPs" are MACs, so the two agree. DDRNet-23: 20,148,947 params
  (paper 20.1 M), 143.06 GMACs (paper "143.1 GFLOPs"). The training-only ``seghead_extra`` adds
  38,355 (slim) / 150,419 params.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cityseg.models.base import SegmentationModel
from cityseg.models.blocks import kaiming_init, resize
from cityseg.models.realtime_blocks import DAPPM, BasicBlock, Bottleneck, SegHead, conv_bn, make_layer
from cityseg.models.weights import load_weights

_HEADS = ("final_layer", "seghead_extra")


class DDRNet(SegmentationModel):
    """Deep Dual-resolution Network; ``DDRNet23Slim`` / ``DDRNet23`` fix the width."""

    name = "ddrnet"
    training_heads = ("seghead_extra",)
    size_multiple = 64
    min_size = 64

    def __init__(
        self,
        num_classes: int = 19,
        planes: int = 32,
        spp_planes: int = 128,
        head_planes: int = 64,
        layers: tuple[int, ...] = (2, 2, 2, 2),
        encoder_weights=None,
    ):
        super().__init__()
        high = planes * 2  # the high-resolution branch width
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, planes, 3, 2, 1),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, 2, 1),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
        )
        self.layer1 = make_layer(BasicBlock, planes, planes, layers[0])
        self.layer2 = make_layer(BasicBlock, planes, planes * 2, layers[1], stride=2)
        self.layer3 = make_layer(BasicBlock, planes * 2, planes * 4, layers[2], stride=2)
        self.layer4 = make_layer(BasicBlock, planes * 4, planes * 8, layers[3], stride=2)
        self.compression3 = conv_bn(planes * 4, high)
        self.compression4 = conv_bn(planes * 8, high)
        self.down3 = conv_bn(high, planes * 4, 3, 2)
        self.down4 = nn.Sequential(*conv_bn(high, planes * 4, 3, 2, relu=True), *conv_bn(planes * 4, planes * 8, 3, 2))
        self.layer3_ = make_layer(BasicBlock, planes * 2, high, 2)
        self.layer4_ = make_layer(BasicBlock, high, high, 2)
        self.layer5_ = make_layer(Bottleneck, high, high, 1)
        self.layer5 = make_layer(Bottleneck, planes * 8, planes * 8, 1, stride=2)
        self.spp = DAPPM(planes * 16, spp_planes, planes * 4)
        self.seghead_extra = SegHead(high, head_planes, num_classes)  # training only
        self.final_layer = SegHead(planes * 4, head_planes, num_classes)
        kaiming_init(self)
        if encoder_weights is not None:
            trunk = (
                "conv1",
                "layer1",
                "layer2",
                "layer3",
                "layer4",
                "layer5",
                "layer3_",
                "layer4_",
                "layer5_",
                "compression3",
                "compression4",
                "down3",
                "down4",
            )
            load_weights(self, encoder_weights, "official DDRNet", required=trunk, optional=("spp",))

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        self._check_input(x)
        size = x.shape[-2:]
        x = self.layer1(self.conv1(x))
        x2 = self.layer2(F.relu(x))  # 1/8: feeds both branches
        x = self.layer3(F.relu(x2))  # low branch, 1/16
        hi = self.layer3_(F.relu(x2))  # high branch, 1/8
        hsize = hi.shape[-2:]
        # bilateral fusion: each branch adds the other's (pre-activation) features
        x, hi = x + self.down3(F.relu(hi)), hi + resize(self.compression3(F.relu(x)), hsize)
        aux_in = hi
        x = self.layer4(F.relu(x))
        hi = self.layer4_(F.relu(hi))
        x, hi = x + self.down4(F.relu(hi)), hi + resize(self.compression4(F.relu(x)), hsize)
        hi = self.layer5_(F.relu(hi))
        x = resize(self.spp(self.layer5(F.relu(x))), hsize)
        out = self.final_layer(x + hi)
        if not self.training:
            return resize(out, size)
        return {"out": out, "aux": self.seghead_extra(aux_in)}  # at 1/8: the loss resizes them


class DDRNet23Slim(DDRNet):
    name = "ddrnet23_slim"

    def __init__(self, num_classes: int = 19, encoder_weights=None):
        super().__init__(num_classes, planes=32, spp_planes=128, head_planes=64, encoder_weights=encoder_weights)


class DDRNet23(DDRNet):
    name = "ddrnet23"

    def __init__(self, num_classes: int = 19, encoder_weights=None):
        super().__init__(num_classes, planes=64, spp_planes=128, head_planes=128, encoder_weights=encoder_weights)
