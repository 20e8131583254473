"""VGG16-U-Net: the seed README's "VGG16 encoder + U-Net decoder with convolved skip connections".

The seed only loaded a Keras ``VGG16(include_top=False)`` (14,714,688 params, output 1/32); no
decoder was ever written, so this one is designed here. Choices, and why:

* **Encoder** = torchvision's ``vgg16().features`` exactly (the 13 convs at the same indices, ReLU
  and max-pool modules in between, no BN), so that its state_dict keys and shapes match
  torchvision's: ``encoder_weights=PATH`` loads a local torchvision vgg16 state_dict
  (``features.N.weight/bias``; a full vgg16 state_dict is accepted and its classifier ignored).
  Nothing is downloaded. Such weights expect ImageNet-normalised inputs (mean 0.485/0.456/0.406,
  std 0.229/0.224/0.225). Plain VGG16 rather than VGG16-BN because that is what the seed loaded.
* **Decoder**: five U-Net blocks, as smp's ``Unet`` (a well-tested reference for this exact
  encoder): upsample x2 -> concatenate the encoder feature of that scale -> 2x Conv3x3-BN-ReLU.
  "Convolved skip connections" is read as concatenate-then-convolve (the original U-Net), because
  the seed's additive skips would force the decoder to VGG's wide 512-channel widths. Widths 256,
  128, 64, 32, 16 (smp's defaults) keep the decoder at 4.3 M params next to the 14.7 M encoder.
  The skips are the last ReLU of each VGG block (64 ch at 1/1 ... 512 at 1/16), the features just
  before each pool, as smp's VGG encoder returns them; the bottleneck is the final pool (512 ch at
  1/32, 4x8 at 128x256 as in the seed's printed summary).
* Keras-style init (Glorot uniform, zero bias, BN momentum 0.01 / eps 1e-3) where no weights are
  loaded, and nearest x2 upsampling by default, like the seed's other models. H and W must be
  multiples of 32 (five poolings).
"""

from __future__ import annotations

import torch
from torch import nn

from cityseg.models.base import SegmentationModel, check_option
from cityseg.models.blocks import UPSAMPLE_MODES, ConvBNAct, keras_init, upsample
from cityseg.models.weights import load_weights

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
DECODER_CHANNELS = (256, 128, 64, 32, 16)


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` layout (indices 0..30)."""
    layers, cin = [], 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    return nn.Sequential(*layers)


def _vgg16_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A full vgg16 state_dict keeps its keys; one saved from ``vgg16().features`` alone has bare
    ``0.weight`` keys, which get their ``features.`` prefix back."""
    if any(k.startswith("features.") for k in state):
        return state
    return {f"features.{k}": v for k, v in state.items()}


class DecoderBlock(nn.Module):
    def __init__(self, cin, cskip, cout):
        super().__init__()
        self.conv1 = ConvBNAct(cin + cskip, cout, 3)
        self.conv2 = ConvBNAct(cout, cout, 3)

    def forward(self, x, skip, mode):
        return self.conv2(self.conv1(torch.cat([upsample(x, mode), skip], 1)))


class VGG16UNet(SegmentationModel):
    name = "vgg16_unet"
    size_multiple = 32
    min_size = 32

    def __init__(self, num_classes=34, encoder_weights=None, upsample="nearest"):
        super().__init__()
        check_option(self.name, "upsample", upsample, UPSAMPLE_MODES)
        self.upsample_mode = upsample
        self.features = vgg16_features()
        # indices of the last ReLU of each block: the skip features (before each pool)
        self.skip_at = [i - 1 for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        cskips = (512, 512, 256, 128, 64)
        blocks, cin = [], 512
        for cskip, cout in zip(cskips, DECODER_CHANNELS):
            blocks.append(DecoderBlock(cin, cskip, cout))
            cin = cout
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(cin, num_classes, 1)
        keras_init(self)
        if encoder_weights is not None:
            load_weights(self, encoder_weights, {"torchvision vgg16": _vgg16_keys}, required=("features",), strict=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        skips = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.skip_at:
                skips.append(x)
        for block, skip in zip(self.decoder, reversed(skips)):
            x = block(x, skip, self.upsample_mode)
        return self.head(x)
