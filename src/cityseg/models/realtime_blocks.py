"""Pieces shared by the real-time networks (DDRNet, PIDNet, BiSeNetV2).

ResNet ``BasicBlock`` / ``Bottleneck`` (expansion 2), ``make_layer``, the two-conv segmentation
head and the DAPPM / PAPPM pyramid pooling modules; the official initialisation is
``blocks.kaiming_init`` and backbone weights load through ``weights.load_weights``. Module and
attribute names are those of the official DDRNet and PIDNet code (``conv1``, ``bn1``,
``downsample``, ``scale0`` ... ``scale4``, ``compression`` ...) so that their checkpoints load by
key. BatchNorm keeps PyTorch's defaults (momentum 0.1, eps 1e-5), which is what the official code
sets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cityseg.models.blocks import resize


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, relu: bool = False) -> nn.Sequential:
    """Conv (no bias) -> BN [-> ReLU]: keys ``0.weight``, ``1.*`` as the official ``nn.Sequential`` blocks."""
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def bn_relu_conv(cin: int, cout: int, kernel: int = 1, groups: int = 1) -> list[nn.Module]:
    """Pre-activation BN -> ReLU -> Conv (no bias), the unit of DAPPM / PAPPM."""
    return [nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False)]


class BasicBlock(nn.Module):
    """ResNet basic block; ``no_relu`` leaves the sum un-activated (the last block of a stage, whose
    output is fused with the other branch before the next ReLU)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, no_relu: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        out = out + (x if self.downsample is None else self.downsample(x))
        return out if self.no_relu else F.relu(out)


class Bottleneck(nn.Module):
    """ResNet bottleneck with expansion 2 (DDRNet / PIDNet), un-activated output by default."""

    expansion = 2

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, no_relu: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + (x if self.downsample is None else self.downsample(x))
        return out if self.no_relu else F.relu(out)


def _shortcut(block, inplanes: int, planes: int, stride: int) -> nn.Module | None:
    if stride == 1 and inplanes == planes * block.expansion:
        return None
    return conv_bn(inplanes, planes * block.expansion, 1, stride)


def make_layer(block, inplanes: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    """A stage of ``blocks`` blocks as the official ``_make_layer``: the last of several has no ReLU."""
    layers = [block(inplanes, planes, stride, _shortcut(block, inplanes, planes, stride))]
    inplanes = planes * block.expansion
    for i in range(1, blocks):
        layers.append(block(inplanes, planes, no_relu=i == blocks - 1))
    return nn.Sequential(*layers)


def make_single_block(block, inplanes: int, planes: int) -> nn.Module:
    """One un-activated block outside a ``Sequential`` (PIDNet's ``_make_single_layer``)."""
    return block(inplanes, planes, 1, _shortcut(block, inplanes, planes, 1), no_relu=True)


class SegHead(nn.Module):
    """BN-ReLU-Conv3x3-BN-ReLU-Conv1x1 (with bias): the official ``segmenthead``, at the feature's size."""

    def __init__(self, inplanes: int, interplanes: int, outplanes: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, interplanes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(interplanes)
        self.conv2 = nn.Conv2d(interplanes, outplanes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))


class _PyramidPooling(nn.Module):
    """The scales both DAPPM and PAPPM pool: avg-pools 5/2, 9/4, 17/8 and a global average.

    Fixed-kernel ``AvgPool2d`` plus ``AdaptiveAvgPool2d((1, 1))`` (exported as GlobalAveragePool)
    are what the official code uses and export to ONNX at any input size.
    """

    def __init__(self, inplanes: int, branch_planes: int, outplanes: int):
        super().__init__()
        pools = [nn.AvgPool2d(5, 2, 2), nn.AvgPool2d(9, 4, 4), nn.AvgPool2d(17, 8, 8), nn.AdaptiveAvgPool2d((1, 1))]
        self.scale0 = nn.Sequential(*bn_relu_conv(inplanes, branch_planes))
        for i, pool in enumerate(pools, 1):
            setattr(self, f"scale{i}", nn.Sequential(pool, *bn_relu_conv(inplanes, branch_planes)))
        self.compression = nn.Sequential(*bn_relu_conv(branch_planes * 5, outplanes))
        self.shortcut = nn.Sequential(*bn_relu_conv(inplanes, outplanes))

    def pooled(self, x: torch.Tensor) -> list[torch.Tensor]:
        size = x.shape[-2:]
        return [resize(s(x), size) for s in (self.scale1, self.scale2, self.scale3, self.scale4)]


class DAPPM(_PyramidPooling):
    """Deep Aggregation PPM (DDRNet): each pooled scale is added to the previous level and refined by
    a 3x3 conv in sequence (hierarchical residual fusion), then concatenated and compressed."""

    def __init__(self, inplanes: int, branch_planes: int, outplanes: int):
        super().__init__(inplanes, branch_planes, outplanes)
        for i in range(1, 5):
            setattr(self, f"process{i}", nn.Sequential(*bn_relu_conv(branch_planes, branch_planes, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = [self.scale0(x)]
        for up, process in zip(self.pooled(x), (self.process1, self.process2, self.process3, self.process4)):
            levels.append(process(up + levels[-1]))
        return self.compression(torch.cat(levels, 1)) + self.shortcut(x)


class PAPPM(_PyramidPooling):
    """Parallel Aggregation PPM (PIDNet-S/M): the four pooled scales are each added to scale0 and
    refined together by one grouped 3x3 conv (groups 4), parallel instead of DAPPM's chain."""

    def __init__(self, inplanes: int, branch_planes: int, outplanes: int):
        super().__init__(inplanes, branch_planes, outplanes)
        self.scale_process = nn.Sequential(*bn_relu_conv(branch_planes * 4, branch_planes * 4, 3, groups=4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.scale0(x)
        scales = self.scale_process(torch.cat([up + x0 for up in self.pooled(x)], 1))
        return self.compression(torch.cat([x0, scales], 1)) + self.shortcut(x)
