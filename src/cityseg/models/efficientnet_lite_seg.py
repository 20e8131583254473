"""Segmentation models on the ImageNet-pretrained EfficientNet-Lite encoders (``efficientnet_lite.py``).

One class, ``LiteSegModel``: a Lite encoder and one of three decoders, registered for lite0
(``lite0_unet``, ``lite0_lraspp``, ``lite0_fpn``) and the FPN also for lite1 / lite2 (``variant`` and
``decoder`` are the registry's fixed options). The encoder features are those at 1/2 (16 ch), 1/4
(24), 1/8 (40; 48 for lite2), 1/16 (112; 120) and the 1280-channel head conv at 1/32.

* **U-Net**: ``efficientnet_unet``'s decoder (``UNetDecoder``: upsample, concatenate the skip, two
  Conv3x3-BN-ReLU; widths 256, 128, 64, 32) from the 1/32 head up to 1/2, a 1x1 classifier there.
* **LR-ASPP** (Howard et al., "Searching for MobileNetV3", ICCV 2019, Fig. 10; torchvision's
  ``LRASPPHead``): the deepest features through a 1x1 Conv-BN-ReLU (128 ch) gated by a sigmoid of a
  1x1 conv of their global average, upsampled to 1/8 and classified, plus a 1x1 classifier of the
  1/8 features. The paper takes its deep features at 1/16 from a dilated last stage; here they are
  the encoder's own 1/32 head output, so the pretrained network runs as trained and the head is the
  cheapest of the three.
* **FPN** (Kirillov et al., "Panoptic Feature Pyramid Networks", CVPR 2019, the semantic branch, as
  segmentation_models_pytorch's ``FPN``): 1x1 laterals to 96 channels at 1/4 ... 1/32,
  a top-down path (nearest x2 and add), then per level Conv3x3-BN-ReLU (+ bilinear x2) until 1/4,
  the levels summed, Dropout2d 0.2 and a 1x1 classifier at 1/4. BatchNorm in place of smp's
  GroupNorm: it folds into the convolution at inference, GroupNorm does not.

The options: ``pretrained`` (default True: load the ImageNet encoder from the pinned
``cityseg[pretrained]`` package, a one-line error naming the pip command when it is missing;
False trains from scratch), ``input_mean`` / ``input_std`` (the data normalisation, which the
encoder undoes to feed its weights what they were trained on: training passes the recipe's) and
``drop_path_rate`` (the encoder's stochastic depth, 0.2 as the reference), ``decoder_width`` (0: the
decoder's own, FPN 96, LR-ASPP 128, U-Net 256 halving per block). In eval mode the logits
are resized bilinearly to the input; in training they leave at the decoder's own stride (1/2, 1/8,
1/4) and the loss resizes them (``train.loss_scale``). H and W must be multiples of 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cityseg.errors import CitysegError
from cityseg.models.base import SegmentationModel, check_option
from cityseg.models.blocks import kaiming_init, keras_init, resize, upsample
from cityseg.models.realtime_blocks import conv_bn

from .efficientnet_lite import IMAGENET_MEAN, IMAGENET_STD, LiteEncoder
from .efficientnet_unet import UNetDecoder


class UNetHead(nn.Module):
    """``UNetDecoder`` from the 1/32 head up to 1/2 (widths ``width``, /2, /4, /8), a 1x1 classifier there."""

    stride = 2
    default_width = 256

    def __init__(self, channels, num_classes: int, width: int):
        super().__init__()
        self.blocks = UNetDecoder(channels[-1], channels[:-1], [max(1, width >> i) for i in range(4)])
        self.classifier = keras_init(nn.Conv2d(self.blocks.out_channels, num_classes, 1))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.blocks(feats))


class LRASPPHead(nn.Module):
    """LR-ASPP: a ``width``-channel 1x1 Conv-BN-ReLU of the 1/32 features gated by a sigmoid of their
    global average, upsampled to 1/8 and classified, plus a 1x1 classifier of the 1/8 features."""

    stride = 8
    default_width = 128

    def __init__(self, channels, num_classes: int, width: int):
        super().__init__()
        low, high = channels[2], channels[4]
        self.cbr = conv_bn(high, width, 1, relu=True)
        self.scale = nn.Conv2d(high, width, 1, bias=False)
        self.low_classifier = nn.Conv2d(low, num_classes, 1)
        self.high_classifier = nn.Conv2d(width, num_classes, 1)
        kaiming_init(self, zero_bias=True)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        low, high = feats[2], feats[4]
        gated = self.cbr(high) * torch.sigmoid(self.scale(high.mean((2, 3), keepdim=True)))
        return self.low_classifier(low) + self.high_classifier(resize(gated, low.shape[-2:]))


class Upsample2x(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample(x, "bilinear")


def segmentation_block(width: int, ups: int) -> nn.Sequential:
    """One FPN level to 1/4: Conv3x3-BN-ReLU, then (bilinear x2, and again) ``ups`` times."""
    layers = [conv_bn(width, width, 3, relu=True)]
    for i in range(ups):
        layers += [Upsample2x()] + ([conv_bn(width, width, 3, relu=True)] if i < ups - 1 else [])
    return nn.Sequential(*layers)


class FPNHead(nn.Module):
    """Panoptic FPN's semantic branch: 1x1 laterals (1/4 ... 1/32) and a nearest x2 top-down path, each
    level to 1/4 (``segmentation_block``), summed, Dropout2d 0.2, a 1x1 classifier."""

    stride = 4
    default_width = 96

    def __init__(self, channels, num_classes: int, width: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(cin, width, 1) for cin in channels[1:])
        self.levels = nn.ModuleList(segmentation_block(width, ups) for ups in range(len(self.lateral)))
        self.dropout = nn.Dropout2d(0.2)
        self.classifier = nn.Conv2d(width, num_classes, 1)
        kaiming_init(self, zero_bias=True)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        feats = feats[1:]
        p = self.lateral[-1](feats[-1])
        pyramid = [p]
        for lateral, f in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            p = F.interpolate(p, scale_factor=2.0, mode="nearest") + lateral(f)
            pyramid.insert(0, p)
        return self.classifier(self.dropout(sum(level(p) for level, p in zip(self.levels, pyramid))))


DECODERS = {"unet": UNetHead, "lraspp": LRASPPHead, "fpn": FPNHead}


class LiteSegModel(SegmentationModel):
    """A Lite encoder and one of the ``DECODERS``; registered as ``<variant>_<decoder>``."""

    size_multiple = 32
    min_size = 32
    full_res_mode = "whole"

    def __init__(
        self,
        num_classes: int = 19,
        variant: str = "lite0",
        decoder: str = "fpn",
        pretrained: bool = True,
        input_mean=IMAGENET_MEAN,
        input_std=IMAGENET_STD,
        drop_path_rate: float = 0.2,
        decoder_width: int = 0,
    ):
        super().__init__()
        self.name = f"{variant}_{decoder}"
        check_option(self.name, "decoder", decoder, tuple(DECODERS))
        if not isinstance(pretrained, bool):
            raise CitysegError(f"model {self.name!r}: pretrained must be true or false; got {pretrained!r}")
        if isinstance(drop_path_rate, bool) or not isinstance(drop_path_rate, (int, float)) or not 0 <= drop_path_rate < 1:
            raise CitysegError(f"model {self.name!r}: drop_path_rate must be a number in [0, 1); got {drop_path_rate!r}")
        if decoder_width != 0:
            check_option(self.name, "decoder_width", decoder_width)
        try:
            self.encoder = LiteEncoder(variant, float(drop_path_rate), input_mean, input_std)
        except CitysegError as e:
            raise CitysegError(f"model {self.name!r}: {e}") from None
        head = DECODERS[decoder]
        self.decoder = head(self.encoder.channels, num_classes, decoder_width or head.default_width)
        if pretrained:
            self.encoder.load_pretrained()
            self.pretrained_parts = ("encoder",)

    def encoder_stages(self) -> list[list[nn.Module]]:
        """The pretrained encoder's eight stages (``LiteEncoder.stages``); none when trained from scratch."""
        return self.encoder.stages() if self.pretrained_parts else []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training: the logits at the decoder's stride (the loss resizes them); eval: at the input size."""
        self._check_input(x)
        logits = self.decoder(self.encoder(x))
        return logits if self.training else resize(logits, x.shape[-2:])
