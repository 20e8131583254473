"""Shared building blocks: those of the seed networks, with Keras defaults, and the bilinear
``resize`` and ``kaiming_init`` the newer networks share.

Keras conventions kept everywhere, as the seed models use them: every conv has a bias, also before BN;
BatchNorm momentum 0.99 (PyTorch ``momentum=0.01``) and ``eps=1e-3``; Glorot-uniform weights and
zero biases; ``MaxPool2D()`` floors; ``UpSampling2D()`` is x2 nearest. Modules are created only if
``forward`` uses them (Keras drops dead layers; PyTorch would count them).

Speed: parallel branches that read the same input (the 5x5 conv and the first 3x3 conv of a stack
module, the 3x1/1x3/3x3 convs of the deep stack) keep separate parameters (faithful counts and
state_dict keys) but can run as ONE conv call: ``fused_conv`` zero-pads the smaller kernels to the
largest one, concatenates the weights along the output channels, runs one convolution and slices
the result. It is exact (same sums, up to float rounding). Toggle with ``set_fused(model, flag)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BN_MOMENTUM = 0.01  # Keras momentum 0.99
BN_EPS = 1e-3
UPSAMPLE_MODES = ("nearest", "bilinear")


def keras_init(module: nn.Module) -> nn.Module:
    """Keras defaults: Glorot-uniform conv kernels, zero biases, BN gamma 1 / beta 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


def kaiming_init(module: nn.Module, zero_bias: bool = False) -> nn.Module:
    """Kaiming-normal (fan_out, ReLU) convs, BN gamma 1 / beta 0: the official init of DDRNet, PIDNet,
    BiSeNetV2 and torchvision's EfficientNet. Conv biases keep PyTorch's default unless
    ``zero_bias``, as each official code has it; a BN marked ``zero_init`` starts at gamma 0, so
    that its residual branch starts as the shortcut."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if zero_bias and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 0.0 if getattr(m, "zero_init", False) else 1.0)
            nn.init.zeros_(m.bias)
    return module


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def same_padding(kernel, dilation=1) -> tuple[int, int]:
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    return dilation * (kh - 1) // 2, dilation * (kw - 1) // 2


class ConvBNAct(nn.Module):
    """Conv (with bias) -> optional BN -> optional ReLU; ``padding`` is 'same' or 'valid'.

    ``transposed=True`` uses ``ConvTranspose2d`` (stride 1): 'valid' grows H and W by k-1 (Model A).
    """

    def __init__(self, cin, cout, kernel, padding="same", dilation=1, bn=True, act=True, transposed=False):
        super().__init__()
        pad = same_padding(kernel, dilation) if padding == "same" else 0
        cls = nn.ConvTranspose2d if transposed else nn.Conv2d
        self.conv = cls(cin, cout, kernel, padding=pad, dilation=dilation, bias=True)
        self.bn = batch_norm(cout) if bn else None
        self.act = bool(act)

    def post(self, y: torch.Tensor) -> torch.Tensor:
        """Everything after the convolution (used by the fused path)."""
        if self.bn is not None:
            y = self.bn(y)
        return F.relu(y) if self.act else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.conv(x))


def _as_conv(m: nn.Module):
    """(weight, bias, padding) of the plain convolution equivalent to ``m`` (stride 1, groups 1)."""
    if m.stride != (1, 1) or m.groups != 1 or m.dilation != (1, 1):
        raise ValueError("fused_conv needs stride-1, undilated, ungrouped convolutions")
    if isinstance(m, nn.ConvTranspose2d):  # stride-1 transposed conv == conv with flipped kernel
        w = m.weight.flip(2, 3).transpose(0, 1)
        kh, kw = w.shape[-2:]
        return w, m.bias, (kh - 1 - m.padding[0], kw - 1 - m.padding[1])
    return m.weight, m.bias, tuple(m.padding)


def fused_conv(convs, x: torch.Tensor) -> list[torch.Tensor]:
    """Run several convs that read the same ``x`` as one conv call; returns their outputs in order.

    Each kernel is zero-padded (centred) to the largest kernel size; the fused conv uses the
    padding that covers every member's output window, which is then sliced out (an offset crop
    handles 'valid' members, e.g. Model A's 5x5 next to its 3x3).
    """
    specs = [_as_conv(c) for c in convs]
    KH = max(w.shape[2] for w, _, _ in specs)
    KW = max(w.shape[3] for w, _, _ in specs)
    PH = max(KH // 2 - w.shape[2] // 2 + p[0] for w, _, p in specs)
    PW = max(KW // 2 - w.shape[3] // 2 + p[1] for w, _, p in specs)
    weights, biases = [], []
    for w, b, _ in specs:
        dh, dw = KH - w.shape[2], KW - w.shape[3]
        weights.append(F.pad(w, (dw // 2, dw // 2, dh // 2, dh // 2)) if dh or dw else w)
        biases.append(b if b is not None else w.new_zeros(w.shape[0]))
    y = F.conv2d(x, torch.cat(weights, 0), torch.cat(biases, 0), padding=(PH, PW))
    H, W = x.shape[-2:]
    outs, c0 = [], 0
    for w, _, (ph, pw) in specs:
        kh, kw = w.shape[2], w.shape[3]
        oh, ow = H + 2 * ph - kh + 1, W + 2 * pw - kw + 1
        th, tw = PH - KH // 2 + kh // 2 - ph, PW - KW // 2 + kw // 2 - pw
        outs.append(y[:, c0 : c0 + w.shape[0], th : th + oh, tw : tw + ow])
        c0 += w.shape[0]
    return outs


def run_parallel(blocks, x: torch.Tensor, fused: bool) -> list[torch.Tensor]:
    """Apply several ``ConvBNAct`` blocks to the same input, fused into one conv call if asked."""
    if not fused or len(blocks) < 2:
        return [b(x) for b in blocks]
    return [b.post(y) for b, y in zip(blocks, fused_conv([b.conv for b in blocks], x))]


class SqueezeExciteReLU(nn.Module):
    """Squeeze-and-excitation as Hu et al. 2018 define it: gate = sigmoid(fc2(ReLU(fc1(mean(x))))), the
    hidden width ``channels / reduction`` (at least 8). EfficientNet's SiLU variant is
    ``efficientnet_unet.SqueezeExciteSiLU``."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(8, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class ParallelBlock(nn.Module):
    """Mixin state for blocks with a fused path. Off by default: zero-padding smaller kernels into the largest
    costs more MACs than one conv call saves, so the fused path runs slower (docs/benchmarks.md, "SegCeption:
    why multi-branch blocks are slow per MAC")."""

    fused: bool = False

    def _finish(self, out: torch.Tensor) -> torch.Tensor:
        return self.se(out) if self.se is not None else out


class StackModule(ParallelBlock):
    """The seed's stack module: concat[5x5(x), 3x3(3x3(x))] -> 2f channels.

    * Model A: ``bn=False``, ``padding='valid'`` (shrinks H, W by 4); ``transposed=True`` gives the
      inverse stack module (grows H, W by 4).
    * Model C: ``bn=True``, same padding; the inverse module has ``first_bn=False`` (the seed drops
      the first 3x3 conv's BN but keeps its ReLU; no BN module is created).
    """

    def __init__(self, cin, f, bn=True, padding="same", transposed=False, first_bn=True, se=False):
        super().__init__()
        kw = dict(padding=padding, transposed=transposed)
        self.conv5 = ConvBNAct(cin, f, 5, bn=bn, **kw)
        self.conv3a = ConvBNAct(cin, f, 3, bn=bn and first_bn, **kw)
        self.conv3b = ConvBNAct(f, f, 3, bn=bn, **kw)
        self.se = SqueezeExciteReLU(2 * f) if se else None
        self.out_channels = 2 * f

    def forward(self, x):
        y5, y3 = run_parallel([self.conv5, self.conv3a], x, self.fused)
        return self._finish(torch.cat([y5, self.conv3b(y3)], 1))


class StackModuleV2(ParallelBlock):
    """Model B's three-way stack module (every conv f filters, Conv-BN-ReLU, same padding).

    (a) concat[5x5(x), 3x3(3x3(x))] (2f); (b) 5x5 dilated-2 conv of x, or a plain 9x9 in the
    inverse module; (c) on (a): concat[5x5, 3x3-chain]; output concat[(c), (b)] = 3f channels.
    """

    def __init__(self, cin, f, inverse=False, se=False):
        super().__init__()
        self.conv5 = ConvBNAct(cin, f, 5)
        self.conv3a = ConvBNAct(cin, f, 3)
        self.conv3b = ConvBNAct(f, f, 3)
        self.wide = ConvBNAct(cin, f, 9) if inverse else ConvBNAct(cin, f, 5, dilation=2)
        self.conv5c = ConvBNAct(2 * f, f, 5)
        self.conv3c = ConvBNAct(2 * f, f, 3)
        self.conv3d = ConvBNAct(f, f, 3)
        self.se = SqueezeExciteReLU(3 * f) if se else None
        self.out_channels = 3 * f

    def forward(self, x):
        y5, y3 = run_parallel([self.conv5, self.conv3a], x, self.fused)
        a = torch.cat([y5, self.conv3b(y3)], 1)
        c5, c3 = run_parallel([self.conv5c, self.conv3c], a, self.fused)
        return self._finish(torch.cat([c5, self.conv3d(c3), self.wide(x)], 1))


class DeepStackModule(ParallelBlock):
    """Model D's deep stack module: a = 3x3(x); concat[5x5(x), 3x3(a), 3x1(a), 1x3(a)] -> 4f."""

    def __init__(self, cin, f, se=False):
        super().__init__()
        self.conv3a = ConvBNAct(cin, f, 3)
        self.conv5 = ConvBNAct(cin, f, 5)
        self.conv33 = ConvBNAct(f, f, 3)
        self.conv31 = ConvBNAct(f, f, (3, 1))
        self.conv13 = ConvBNAct(f, f, (1, 3))
        self.se = SqueezeExciteReLU(4 * f) if se else None
        self.out_channels = 4 * f

    def forward(self, x):
        y5, a = run_parallel([self.conv5, self.conv3a], x, self.fused)
        b33, b31, b13 = run_parallel([self.conv33, self.conv31, self.conv13], a, self.fused)
        return self._finish(torch.cat([y5, b33, b31, b13], 1))


class KerasPReLU(nn.Module):
    """Keras ``PReLU()``: one alpha per element, shape (C, H, W), initialised to 0 (starts as ReLU).

    Not ``nn.PReLU`` (one alpha, 0.25). Ties the model to the spatial size it was built for.
    """

    def __init__(self, shape):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(*shape))

    def forward(self, x):
        return torch.where(x >= 0, x, self.alpha * x)


class Reduction(nn.Module):
    """1x1 reduction: Conv1x1 (bias) -> [BN] -> ReLU | Keras PReLU | nothing (Model A: linear)."""

    def __init__(self, cin, f, bn=True, act="relu", prelu_shape=None):
        super().__init__()
        self.conv = nn.Conv2d(cin, f, 1)
        self.bn = batch_norm(f) if bn else None
        if act == "prelu":
            self.prelu = KerasPReLU((f, *prelu_shape))
        self.act = act

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.act == "relu":
            return F.relu(x)
        if self.act == "prelu":
            return self.prelu(x)
        return x


def upsample(x: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """x2 upsampling: 'nearest' (Keras ``UpSampling2D()``) or 'bilinear' (align_corners=False)."""
    if mode == "nearest":
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def resize(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize to ``size`` (H, W), align_corners=False as the official codes."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def max_pool(x: torch.Tensor) -> torch.Tensor:
    """Keras ``MaxPool2D()``: 2x2, stride 2, floor."""
    return F.max_pool2d(x, 2)


def set_fused(model: nn.Module, fused: bool = True) -> nn.Module:
    """Switch every multi-branch block of ``model`` between the fused and the per-branch path."""
    for m in model.modules():
        if isinstance(m, ParallelBlock):
            m.fused = bool(fused)
    return model
