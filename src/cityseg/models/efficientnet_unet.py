"""EfficientNet-B0 U-Net: the seed's "VGG16-UNet" design (``vgg16_unet.py``) with the modern
encoder its authors planned (Tan & Le, "EfficientNet", ICML 2019).

Choices, and why:

* **Encoder** = EfficientNet-B0 as in the paper's Table 1 and torchvision / timm: a 3x3 stride-2
  stem (32 ch), seven MBConv stages (expand ratio, kernel, stride, channels, repeats: 1,3,1,16,1;
  6,3,2,24,2; 6,5,2,40,2; 6,3,2,80,3; 6,5,1,112,3; 6,5,2,192,4; 6,3,1,320,1), each block a 1x1
  expansion, a depthwise conv, squeeze-and-excitation (squeeze width = block input / 4, SiLU
  inside, sigmoid gate), a linear 1x1 projection and, where shapes allow, an identity shortcut with
  stochastic depth (rate rising linearly to 0.2 over the 16 blocks, torchvision's B0 setting; 0
  turns it off); SiLU everywhere; BatchNorm with PyTorch defaults, as both references; symmetric
  ``k // 2`` padding (timm's ``efficientnet_b0`` / torchvision, not the TF "same" padding).
* The encoder keeps the 1x1 ``conv_head`` (320 -> 1280, BN, SiLU): its output is the U-Net's
  bottleneck at 1/32, so only the ImageNet classifier is dropped. That is the published "without
  its head" size: encoder 4,007,548 params (paper / torchvision: 5.3 M with the 1000-class
  classifier, 5,288,548 exactly; ~4.0 M without, 1,281,000 less), so a full ImageNet file loads
  into every encoder tensor.
* **Weights**: module names follow timm's ``efficientnet_b0`` (``conv_stem``, ``bn1``,
  ``blocks.S.B.conv_pw/bn1/conv_dw/bn2/se.conv_reduce/se.conv_expand/conv_pwl/bn3``, the first
  stage's ``conv_dw/bn1/se/conv_pw/bn2``, ``conv_head``, ``bn2``), so a timm state_dict loads as is;
  torchvision's ``efficientnet_b0`` layout is renamed on load: ``features.0.0`` -> ``conv_stem``,
  ``features.0.1`` -> ``bn1``, ``features.S.B.block.i.0/1`` -> ``blocks.S-1.B.<conv>/<bn>`` in
  block order (expand, depthwise, SE ``fc1/fc2`` -> ``conv_reduce/conv_expand``, project; the
  first stage has no expansion), ``features.8.0/1`` -> ``conv_head`` / ``bn2``. Classifier keys
  (``classifier.*``) are ignored. Nothing is downloaded; such weights expect ImageNet-normalised
  inputs. Without weights: torchvision's init (He-normal fan-out convs, BN 1/0).
* **Decoder** = ``vgg16_unet``'s blocks (upsample x2 -> concatenate the encoder feature ->
  2x Conv3x3-BN-ReLU, Keras-style init, nearest upsampling by default) on the stage outputs at
  1/16 (112 ch), 1/8 (40), 1/4 (24) and 1/2 (16), widths 256, 128, 64, 32; a 1x1 classifier at
  1/2 and a bilinear x2 to the input size. EfficientNet has no full-resolution feature to skip
  to, so a fifth block would only upsample (two 16-channel 3x3 convs at full resolution: +14.5
  GMACs, 15 % more at 1024x2048, for no new information); bilinear logits are what SegFormer and
  DeepLab do.
* **Counts** (19 classes, measured): 8,453,167 params (encoder 4,007,548, decoder and classifier
  4,445,619, 3,798,528 of them in the first block, whose input is the 1280 + 112 channels at
  1/16). MACs (``torch.utils.flop_counter``; FLOPs = 2 x MACs): 1.51 G at 128x256, 96.7 G at
  1024x2048. No attention, so a whole frame is cheap in memory: ``full_res_mode = "whole"``.
* H and W must be multiples of 32 (five stride-2 stages; each skip must be exactly twice the
  level below it).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from cityseg.models.base import SegmentationModel
from cityseg.models.blocks import kaiming_init, keras_init, resize
from cityseg.models.modern_blocks import DropPath
from cityseg.models.weights import load_weights

from .vgg16_unet import DecoderBlock

#: (expand ratio, kernel, stride, out channels, repeats) per stage: the paper's Table 1
B0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM, HEAD = 32, 1280
SKIP_STAGES = (0, 1, 2, 4)  # last stage at 1/2, 1/4, 1/8, 1/16
DECODER_CHANNELS = (256, 128, 64, 32)


class SqueezeExciteSiLU(nn.Module):
    """EfficientNet's squeeze-and-excitation: gate = sigmoid(expand(SiLU(reduce(mean(x))))), the squeeze
    width a quarter of the block's input channels; timm's parameter names, so its weights load."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, squeeze, 1)
        self.conv_expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv_expand(F.silu(self.conv_reduce(x.mean((2, 3), keepdim=True)))))


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand -> BN -> SiLU] -> depthwise -> BN -> SiLU -> SE -> 1x1 -> BN.

    Without expansion (the first stage) the names are timm's ``DepthwiseSeparableConv`` ones:
    ``conv_dw, bn1, se, conv_pw, bn2``; otherwise ``conv_pw, bn1, conv_dw, bn2, se, conv_pwl, bn3``.
    """

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, drop_path: float):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        dw = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        project = nn.Conv2d(mid, cout, 1, bias=False)
        if self.expand:
            self.conv_pw, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
            self.conv_dw, self.bn2 = dw, nn.BatchNorm2d(mid)
            self.conv_pwl, self.bn3 = project, nn.BatchNorm2d(cout)
        else:
            self.conv_dw, self.bn1 = dw, nn.BatchNorm2d(mid)
            self.conv_pw, self.bn2 = project, nn.BatchNorm2d(cout)
        self.se = SqueezeExciteSiLU(mid, max(1, cin // 4))
        self.residual = stride == 1 and cin == cout
        self.drop_path = DropPath(drop_path if self.residual else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.expand:
            y = F.silu(self.bn1(self.conv_pw(x)))
            y = self.se(F.silu(self.bn2(self.conv_dw(y))))
            y = self.bn3(self.conv_pwl(y))
        else:
            y = self.se(F.silu(self.bn1(self.conv_dw(x))))
            y = self.bn2(self.conv_pw(y))
        return x + self.drop_path(y) if self.residual else y


class EfficientNetEncoder(nn.Module):
    """EfficientNet-B0 without its classifier; returns the features at 1/2, 1/4, 1/8, 1/16, 1/32."""

    def __init__(self, stages=B0_STAGES, drop_path_rate: float = 0.2):
        super().__init__()
        self.conv_stem = nn.Conv2d(3, STEM, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM)
        total, idx, cin = sum(s[-1] for s in stages), 0, STEM
        self.blocks = nn.ModuleList()
        for expand, kernel, stride, cout, repeats in stages:
            stage = []
            for j in range(repeats):
                stage.append(MBConv(cin, cout, expand, kernel, stride if j == 0 else 1, drop_path_rate * idx / total))
                cin, idx = cout, idx + 1
            self.blocks.append(nn.Sequential(*stage))
        self.conv_head = nn.Conv2d(cin, HEAD, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(HEAD)
        self.stage_expands = tuple(s[0] != 1 for s in stages)
        kaiming_init(self, zero_bias=True)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.silu(self.bn1(self.conv_stem(x)))
        feats = []
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in SKIP_STAGES:
                feats.append(x)
        feats.append(F.silu(self.bn2(self.conv_head(x))))
        return feats

    def torchvision_to_timm(self, state: dict) -> dict | None:
        """torchvision ``efficientnet_b0`` keys -> this encoder's (timm's) keys; None if not that layout."""
        if not any(k.startswith("features.") for k in state):
            return None
        last = len(self.blocks) + 1
        out = {}
        for key, v in state.items():
            m = re.match(r"^features\.(\d+)\.(\d+)\.(.*)$", key)
            if m and m[1] in ("0", str(last)):
                conv, bn = ("conv_stem", "bn1") if m[1] == "0" else ("conv_head", "bn2")
                out[f"{conv if m[2] == '0' else bn}.{m[3]}"] = v
                continue
            m = re.match(r"^features\.(\d+)\.(\d+)\.block\.(\d+)\.(.*)$", key)
            if not m:
                continue
            s, b, i, rest = int(m[1]) - 1, m[2], int(m[3]), m[4]
            parts = (["conv_pw", "bn1"], ["conv_dw", "bn2"], "se", ["conv_pwl", "bn3"])
            if not self.stage_expands[s]:
                parts = (["conv_dw", "bn1"], "se", ["conv_pw", "bn2"])
            part = parts[i]
            if part == "se":
                rest = rest.replace("fc1.", "conv_reduce.").replace("fc2.", "conv_expand.")
                out[f"blocks.{s}.{b}.se.{rest}"] = v
            else:
                sub, tail = rest.split(".", 1)
                out[f"blocks.{s}.{b}.{part[int(sub)]}.{tail}"] = v
        return out


class UNetDecoder(nn.ModuleList):
    """``vgg16_unet``'s decoder blocks from a bottleneck up through the skips (Keras-style init).

    ``skips`` are the skip widths from the shallowest; block ``i`` (key ``decoder.i``) upsamples x2,
    concatenates the skip one level up and applies two Conv3x3-BN-ReLU of ``widths[i]`` channels.
    ``forward(features, mode)`` takes the encoder's features shallowest first, the bottleneck last."""

    def __init__(self, bottleneck: int, skips, widths=DECODER_CHANNELS):
        blocks, cin = [], bottleneck
        for cskip, cout in zip(reversed(list(skips)), widths):
            blocks.append(DecoderBlock(cin, cskip, cout))
            cin = cout
        super().__init__(blocks)
        keras_init(self)
        self.out_channels = cin

    def forward(self, features, mode: str = "nearest") -> torch.Tensor:
        *skips, y = features
        for block, skip in zip(self, reversed(skips)):
            y = block(y, skip, mode)
        return y


class EfficientNetUNet(SegmentationModel):
    name = "efficientnet_unet"
    size_multiple = 32
    min_size = 32
    full_res_mode = "whole"

    def __init__(self, num_classes: int = 19, drop_path_rate: float = 0.2, upsample: str = "nearest", encoder_weights=None):
        super().__init__()
        self.upsample_mode = upsample
        self.encoder = EfficientNetEncoder(drop_path_rate=drop_path_rate)
        self.decoder = UNetDecoder(HEAD, [B0_STAGES[i][3] for i in SKIP_STAGES])
        self.head = keras_init(nn.Conv2d(self.decoder.out_channels, num_classes, 1))
        if encoder_weights is not None:
            load_weights(
                self.encoder, encoder_weights, {"timm efficientnet_b0": lambda state: state, "torchvision efficientnet_b0": self.encoder.torchvision_to_timm}
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return resize(self.head(self.decoder(self.encoder(x), self.upsample_mode)), x.shape[-2:])
