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

import os

import torch
from torch import nn

from cityseg.errors import CitysegError
from cityseg.models.base import SegmentationModel, check_option
from cityseg.models.blocks import UPSAMPLE_MODES, ConvBNAct, keras_init, upsample

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
            load_vgg16_weights(self.features, encoder_weights)

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


def load_vgg16_weights(features: nn.Sequential, path: str | os.PathLike) -> None:
    """Load a local torchvision-style vgg16 state_dict into ``features``; CitysegError on mismatch."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CitysegError(f"{path}: encoder weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CitysegError(f"{path}: cannot read a torch state_dict ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CitysegError(f"{path}: not a vgg16 state_dict (expected a dict of tensors)")
    own = features.state_dict()
    if any(k.startswith("features.") for k in state):
        state = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    missing = [k for k in own if k not in state]
    if missing:
        raise CitysegError(f"{path}: not a torchvision vgg16 state_dict: missing features.{missing[0]} ({len(missing)} of {len(own)} encoder tensors missing)")
    extra = [k for k in state if k not in own]
    if extra:
        raise CitysegError(f"{path}: unexpected encoder tensor features.{extra[0]} (not a vgg16 layout)")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise CitysegError(f"{path}: features.{k} has shape {tuple(state[k].shape)}, vgg16 needs {tuple(v.shape)}")
    features.load_state_dict({k: state[k].to(v.dtype) for k, v in own.items()})
