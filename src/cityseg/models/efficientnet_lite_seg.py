"""Segmentation models on the ImageNet-pretrained EfficientNet-Lite encoders (``efficientnet_lite.py``).

Three decoders, each registered for lite0 (``lite0_unet``, ``lite0_lraspp``, ``lite0_fpn``), the FPN
also for lite1 / lite2 (any decoder takes any variant through its ``variant`` argument). The encoder features are those at 1/2 (16 ch), 1/4 (24),
1/8 (40; 48 for lite2), 1/16 (112; 120) and the 1280-channel head conv at 1/32.

* **U-Net**: ``efficientnet_unet``'s decoder (``UNetDecoder``: upsample, concatenate the skip, two
  Conv3x3-BN-ReLU; widths 256, 128, 64, 32) from the 1/32 head up to 1/2, a 1x1 classifier there.
* **LR-ASPP** (Howard et al., "Searching for MobileNetV3", ICCV 2019, Fig. 10; torchvision's
  ``LRASPPHead``): the deepest features through a 1x1 Conv-BN-ReLU (128 ch) gated by a sigmoid of a
  1x1 conv of their global average, upsampled to 1/8 and classified, plus a 1x1 classifier of the
  1/8 features. The paper takes its deep features at 1/16 from a dilated last stage; here they are
  the encoder's own 1/32 head output, so the pretrained network runs as trained and the head is the
  cheapest of the three.
* **FPN** (Kirillov et al., "Panoptic Feature Pyramid Networks", CVPR 2019, the semantic branch, as
  segmentation_models_pytorch's ``FPN``): 1x1 laterals to ``pyramid_channels`` (96) at 1/4 ... 1/32,
  a top-down path (nearest x2 and add), then per level Conv3x3-BN-ReLU (+ bilinear x2) until 1/4,
  the levels summed, Dropout2d 0.2 and a 1x1 classifier at 1/4. BatchNorm in place of smp's
  GroupNorm: it folds into the convolution at inference, GroupNorm does not.

Every model's options: ``pretrained`` (default True: load the ImageNet encoder from the pinned
``cityseg[pretrained]`` package, a one-line error naming the pip command when it is missing;
False trains from scratch), ``input_mean`` / ``input_std`` (the data normalisation, which the
encoder undoes to feed its weights what they were trained on: training passes the recipe's) and
``drop_path_rate`` (the encoder's stochastic depth, 0.2 as the reference). In eval mode the logits
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


class LiteSegmentationModel(SegmentationModel):
    """The Lite encoder, its options and the output rule shared by the decoders."""

    size_multiple = 32
    min_size = 32
    full_res_mode = "whole"
    decoder_name = ""

    def __init__(self, variant: str, pretrained: bool, drop_path_rate: float, input_mean, input_std):
        super().__init__()
        self.name = f"{variant}_{self.decoder_name}"
        if not isinstance(pretrained, bool):
            raise CitysegError(f"model {self.name!r}: pretrained must be true or false; got {pretrained!r}")
        if isinstance(drop_path_rate, bool) or not isinstance(drop_path_rate, (int, float)) or not 0 <= drop_path_rate < 1:
            raise CitysegError(f"model {self.name!r}: drop_path_rate must be a number in [0, 1); got {drop_path_rate!r}")
        try:
            self.encoder = LiteEncoder(variant, float(drop_path_rate), input_mean, input_std)
        except CitysegError as e:
            raise CitysegError(f"model {self.name!r}: {e}") from None
        if pretrained:
            self.encoder.load_pretrained()
            self.pretrained_parts = ("encoder",)

    def finish(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Training: the logits at the decoder's stride (the loss resizes); eval: at the input size."""
        return logits if self.training else resize(logits, x.shape[-2:])


class LiteUNet(LiteSegmentationModel):
    decoder_name = "unet"

    def __init__(
        self,
        num_classes: int = 19,
        variant: str = "lite0",
        pretrained: bool = True,
        input_mean=IMAGENET_MEAN,
        input_std=IMAGENET_STD,
        drop_path_rate: float = 0.2,
        upsample: str = "nearest",
    ):
        super().__init__(variant, pretrained, drop_path_rate, input_mean, input_std)
        check_option(self.name, "upsample", upsample, ("nearest", "bilinear"))
        self.upsample_mode = upsample
        self.decoder = UNetDecoder(self.encoder.channels[-1], self.encoder.channels[:-1])
        self.head = keras_init(nn.Conv2d(self.decoder.out_channels, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.finish(self.head(self.decoder(self.encoder(x), self.upsample_mode)), x)


class LiteLRASPP(LiteSegmentationModel):
    decoder_name = "lraspp"

    def __init__(
        self,
        num_classes: int = 19,
        variant: str = "lite0",
        pretrained: bool = True,
        input_mean=IMAGENET_MEAN,
        input_std=IMAGENET_STD,
        drop_path_rate: float = 0.2,
        inter_channels: int = 128,
    ):
        super().__init__(variant, pretrained, drop_path_rate, input_mean, input_std)
        check_option(self.name, "inter_channels", inter_channels)
        low, high = self.encoder.channels[2], self.encoder.channels[4]
        self.cbr = conv_bn(high, inter_channels, 1, relu=True)
        self.scale = nn.Conv2d(high, inter_channels, 1, bias=False)
        self.low_classifier = nn.Conv2d(low, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)
        for part in (self.cbr, self.scale, self.low_classifier, self.high_classifier):
            kaiming_init(part, zero_bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        _, _, low, _, high = self.encoder(x)
        gated = self.cbr(high) * torch.sigmoid(self.scale(high.mean((2, 3), keepdim=True)))
        return self.finish(self.low_classifier(low) + self.high_classifier(resize(gated, low.shape[-2:])), x)


class SegmentationBlock(nn.Sequential):
    """One FPN level to 1/4: Conv3x3-BN-ReLU, then bilinear x2 and again, ``ups`` times."""

    def __init__(self, cin: int, cout: int, ups: int):
        layers = [conv_bn(cin, cout, 3, relu=True)]
        for i in range(ups):
            layers += [Upsample2x()] + ([conv_bn(cout, cout, 3, relu=True)] if i < ups - 1 else [])
        super().__init__(*layers)


class Upsample2x(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample(x, "bilinear")


class LiteFPN(LiteSegmentationModel):
    decoder_name = "fpn"

    def __init__(
        self,
        num_classes: int = 19,
        variant: str = "lite0",
        pretrained: bool = True,
        input_mean=IMAGENET_MEAN,
        input_std=IMAGENET_STD,
        drop_path_rate: float = 0.2,
        pyramid_channels: int = 96,
    ):
        super().__init__(variant, pretrained, drop_path_rate, input_mean, input_std)
        check_option(self.name, "pyramid_channels", pyramid_channels)
        c = pyramid_channels
        self.lateral = nn.ModuleList(nn.Conv2d(cin, c, 1) for cin in self.encoder.channels[1:])  # 1/4 ... 1/32
        self.levels = nn.ModuleList(SegmentationBlock(c, c, ups) for ups in range(len(self.lateral)))
        self.dropout = nn.Dropout2d(0.2)
        self.head = nn.Conv2d(c, num_classes, 1)
        for part in (self.lateral, self.levels, self.head):
            kaiming_init(part, zero_bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        feats = self.encoder(x)[1:]
        p = self.lateral[-1](feats[-1])
        pyramid = [p]
        for lateral, f in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            p = F.interpolate(p, scale_factor=2.0, mode="nearest") + lateral(f)
            pyramid.insert(0, p)
        merged = sum(level(p) for level, p in zip(self.levels, pyramid))
        return self.finish(self.head(self.dropout(merged)), x)
