"""SegFormer (Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with
Transformers", NeurIPS 2021): a Mix Transformer (MiT) encoder and an all-MLP decoder.

Built from the official code (NVlabs/SegFormer ``mix_transformer.py``, ``segformer_head.py``).
Choices, and why:

* **Encoder** = the official ``MixVisionTransformer``: four stages of overlapping patch embedding
  (7x7 stride 4, then 3x3 stride 2; conv + LayerNorm), transformer blocks with efficient
  self-attention (keys/values from a ``sr x sr`` stride-``sr`` conv of the tokens, ratios 8/4/2/1)
  and Mix-FFN (Linear -> 3x3 depthwise conv -> GELU -> Linear, the depthwise conv standing in for
  a position encoding, which is why any input size works), a LayerNorm after each stage. Module
  names follow the official code, so ``encoder_weights=PATH`` loads the official ImageNet file
  (``mit_b0.pth``: ``patch_embed1.proj.weight``, ``block1.0.attn.q.weight``, ``block1.0.attn.kv``,
  ``block1.0.mlp.dwconv.dwconv``, ``norm1`` ...; its ``head.*`` classifier is ignored) as is, and
  the Hugging Face layout (``nvidia/mit-b0``: ``segformer.encoder.patch_embeddings.0.proj``,
  ``block.0.0.attention.self.query`` / ``key`` / ``value``, ``attention.output.dense``,
  ``layer_norm_1``, ``mlp.dense1``, ``encoder.layer_norm.0`` ...) after renaming, key and value
  being concatenated into the official ``kv``. Nothing is downloaded; such weights expect
  ImageNet-normalised inputs. Official settings: LayerNorm eps 1e-6 in the blocks and after each
  stage, 1e-5 in the patch embeddings and after the reduction conv; qkv bias; MLP ratio 4;
  stochastic depth rising linearly to 0.1; truncated-normal (0.02) Linear init.
* Attention runs through ``F.scaled_dot_product_attention`` (same maths as the official
  ``softmax(q k^T / sqrt(d)) v``; on CPU it picks a fused kernel that does not hold the
  attention matrix).
* **Decoder** = the official head: per stage a Linear to 256 (``linear_c1..4``), bilinear to 1/4,
  concatenation, a 1x1 conv + BN + ReLU (``linear_fuse``), dropout 0.1 and a 1x1 classifier
  (``linear_pred``); the logits are upsampled bilinearly to the input size. mmseg also creates a
  ``conv_seg`` the SegFormer head never calls; it is not created here.
* **Parameter counts** (19 classes, measured): B0 3,719,027 (encoder 3,319,392), B1 13,682,131
  (encoder 13,151,424). Published: the paper's Table 1 gives 3.8 M / 13.7 M (encoder 3.4 M /
  13.1 M); mmseg's model zoo gives 3.72 M for B0. B0 is 2.1 % under the paper's total and matches
  mmseg's, B1 is 0.1 % under: no deviation in the network.
* **Cost** (``torch.utils.flop_counter`` on the meta device, where attention decomposes into
  matmuls it counts; MACs, FLOPs = 2 x MACs): B0 0.866 GMACs at 128x256 and 121.0 at 1024x2048;
  B1 1.689 / 239.1. The paper states 125.5 / 243.7 "GFLOPs" at 1024x2048, which are MACs too
  (mmcv's module counter plus the official script's attention term); the 2-4 % gap is in what
  each counter includes (norms, activations, resizes).
* **Memory**: one eval forward of a whole 1024x2048 frame at batch 1 fits in a few GiB of RAM
  (docs/benchmarks.md, "Measurements behind code comments"), so ``full_res_mode = "whole"``; the
  paper's 1024x1024 sliding windows remain available.
* H and W must be multiples of 32 (four stride-2 reductions after a stride 4, then the
  ``sr x sr`` reduction conv divides each stage exactly).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cityseg.models.base import SegmentationModel
from cityseg.models.blocks import resize
from cityseg.models.modern_blocks import DropPath
from cityseg.models.weights import load_weights


@dataclass(frozen=True)
class MiTConfig:
    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int] = (2, 2, 2, 2)
    num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    mlp_ratio: int = 4
    decoder_dim: int = 256


MIT_B0 = MiTConfig(embed_dims=(32, 64, 160, 256))
MIT_B1 = MiTConfig(embed_dims=(64, 128, 320, 512))

BLOCK_EPS = 1e-6  # the official ``partial(nn.LayerNorm, eps=1e-6)``; other LayerNorms keep 1e-5


def _to_map(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Tokens B x (H*W) x C -> feature map B x C x H x W."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


class OverlapPatchEmbed(nn.Module):
    def __init__(self, cin: int, dim: int, patch: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, patch, stride, patch // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys and values come from the tokens reduced by an
    ``sr x sr`` stride-``sr`` conv: cost N^2 / sr^2 instead of N^2."""

    def __init__(self, dim: int, heads: int, sr_ratio: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio) if sr_ratio > 1 else None
        self.norm = nn.LayerNorm(dim) if sr_ratio > 1 else None

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.heads, c // self.heads).transpose(1, 2)
        y = x if self.sr is None else self.norm(self.sr(_to_map(x, h, w)).flatten(2).transpose(1, 2))
        kv = self.kv(y).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class DWConv(nn.Module):
    """The 3x3 depthwise conv of Mix-FFN (wrapped so the key is ``mlp.dwconv.dwconv``, as the official)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.dwconv(_to_map(x, h, w)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.fc2(F.gelu(self.dwconv(self.fc1(x), h, w)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, sr_ratio: int, mlp_ratio: int, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_EPS)
        self.attn = EfficientSelfAttention(dim, heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_EPS)
        self.mlp = MixFFN(dim, dim * mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class MixTransformer(nn.Module):
    """The MiT encoder; returns the four stage outputs (1/4 ... 1/32) as B x C x H x W maps."""

    def __init__(self, cfg: MiTConfig, drop_path_rate: float = 0.1):
        super().__init__()
        self.num_stages = len(cfg.embed_dims)
        total = sum(cfg.depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # linear, as the official
        cin, start = 3, 0
        for i, (dim, depth) in enumerate(zip(cfg.embed_dims, cfg.depths), 1):
            patch, stride = (7, 4) if i == 1 else (3, 2)
            setattr(self, f"patch_embed{i}", OverlapPatchEmbed(cin, dim, patch, stride))
            setattr(
                self, f"block{i}", nn.ModuleList(Block(dim, cfg.num_heads[i - 1], cfg.sr_ratios[i - 1], cfg.mlp_ratio, rates[start + j]) for j in range(depth))
            )
            setattr(self, f"norm{i}", nn.LayerNorm(dim, eps=BLOCK_EPS))
            cin, start = dim, start + depth
        self.apply(_official_init)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(1, self.num_stages + 1):
            x, h, w = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                x = blk(x, h, w)
            x = _to_map(getattr(self, f"norm{i}")(x), h, w)
            outs.append(x)
        return outs


def _official_init(m: nn.Module) -> None:
    """The official init: truncated normal (std 0.02) Linear, He-normal (fan-out) conv, zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class MLP(nn.Module):
    """Per-pixel Linear (key ``proj``, as the official head) on a B x C x H x W map."""

    def __init__(self, cin: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(cin, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvModule(nn.Module):
    """1x1 conv (no bias) -> BN -> ReLU, with mmcv's ``ConvModule`` keys ``conv`` / ``bn``."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class SegFormerHead(nn.Module):
    """The all-MLP decoder: unify channels, upsample to 1/4, concatenate, fuse, classify."""

    def __init__(self, in_dims, dim: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        for i, cin in enumerate(in_dims, 1):
            setattr(self, f"linear_c{i}", MLP(cin, dim))
        self.num_inputs = len(in_dims)
        self.linear_fuse = ConvModule(dim * len(in_dims), dim)
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(dim, num_classes, 1)
        nn.init.normal_(self.linear_pred.weight, std=0.01)  # mmseg's classifier init
        nn.init.zeros_(self.linear_pred.bias)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        ys = []
        for i in range(self.num_inputs, 0, -1):  # official concat order: c4, c3, c2, c1
            y = getattr(self, f"linear_c{i}")(feats[i - 1])
            if i > 1:
                y = resize(y, size)
            ys.append(y)
        return self.linear_pred(self.dropout(self.linear_fuse(torch.cat(ys, 1))))


# ---- Hugging Face ``SegformerModel`` keys -> official keys ------------------------------------
_HF_RULES = [
    (r"^segformer\.encoder\.patch_embeddings\.(\d+)\.layer_norm\.", lambda m: f"patch_embed{int(m[1]) + 1}.norm."),
    (r"^segformer\.encoder\.patch_embeddings\.(\d+)\.", lambda m: f"patch_embed{int(m[1]) + 1}."),
    (r"^segformer\.encoder\.layer_norm\.(\d+)\.", lambda m: f"norm{int(m[1]) + 1}."),
    (r"^segformer\.encoder\.block\.(\d+)\.", lambda m: f"block{int(m[1]) + 1}."),
    (r"\.layer_norm_(\d)\.", lambda m: f".norm{m[1]}."),
    (r"\.attention\.self\.query\.", lambda m: ".attn.q."),
    (r"\.attention\.self\.layer_norm\.", lambda m: ".attn.norm."),
    (r"\.attention\.self\.sr\.", lambda m: ".attn.sr."),
    (r"\.attention\.output\.dense\.", lambda m: ".attn.proj."),
    (r"\.mlp\.dense(\d)\.", lambda m: f".mlp.fc{m[1]}."),
]


def _hf_layout(state: dict) -> dict | None:
    """Rename ``segformer.encoder.*`` keys; concatenate ``key`` and ``value`` into ``kv``."""
    if not any(k.startswith("segformer.encoder.") for k in state):
        return None
    out, kv = {}, {}
    for key, v in state.items():
        if not key.startswith("segformer.encoder."):
            continue
        for pattern, repl in _HF_RULES:
            key = re.sub(pattern, repl, key)
        m = re.match(r"^(.*)\.attention\.self\.(key|value)\.(weight|bias)$", key)
        if m:
            kv.setdefault(f"{m[1]}.attn.kv.{m[3]}", {})[m[2]] = v
        else:
            out[key] = v
    for key, parts in kv.items():
        if set(parts) == {"key", "value"}:
            out[key] = torch.cat([parts["key"], parts["value"]], 0)
    return out


MIT_LAYOUTS = {"official MiT (mit_b*.pth)": lambda state: state, "Hugging Face Segformer": _hf_layout}


class SegFormer(SegmentationModel):
    """SegFormer with a MiT encoder of size ``config``; subclasses fix the size."""

    name = "segformer"
    size_multiple = 32
    min_size = 32
    full_res_mode = "whole"
    config: MiTConfig = MIT_B0

    def __init__(self, num_classes: int = 19, drop_path_rate: float = 0.1, encoder_weights=None):
        super().__init__()
        self.backbone = MixTransformer(self.config, drop_path_rate)
        self.decode_head = SegFormerHead(self.config.embed_dims, self.config.decoder_dim, num_classes)
        if encoder_weights is not None:
            load_weights(self.backbone, encoder_weights, MIT_LAYOUTS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        logits = self.decode_head(self.backbone(x))
        return logits if self.training else resize(logits, x.shape[-2:])  # training: 1/4, the loss resizes


class SegFormerB0(SegFormer):
    name = "segformer_b0"
    config = MIT_B0


class SegFormerB1(SegFormer):
    name = "segformer_b1"
    config = MIT_B1
