"""The model registry: one entry per name, ``build_model``, ``list_models``, ``describe``, ``model_info``.

An entry is a ``functools.partial`` of a model class (with the options that make a variant fixed) and a
one-line description, so adding a model is one line here. Each class validates its own options
(``SegmentationModel`` helpers) and raises ``CitysegError`` naming the bad value.
"""

from __future__ import annotations

import inspect
import os
from functools import partial
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cityseg.checkpoint import load_checkpoint
from cityseg.errors import CitysegError
from cityseg.models.base import SegmentationModel
from cityseg.models.bisenetv2 import BiSeNetV2
from cityseg.models.blocks import set_fused
from cityseg.models.ddrnet import DDRNet23, DDRNet23Slim
from cityseg.models.efficientnet_lite_seg import LiteSegModel
from cityseg.models.efficientnet_unet import EfficientNetUNet
from cityseg.models.espnet import ESPNet, ESPNetC
from cityseg.models.espnetv2 import ESPNetv2
from cityseg.models.pidnet import PIDNetL, PIDNetM, PIDNetS
from cityseg.models.residual_inception_unet import ResidualInceptionUNet
from cityseg.models.residual_unet import ResidualUNet
from cityseg.models.residual_unet_attn import ResidualUNetAttn
from cityseg.models.segception import Segception
from cityseg.models.segception_base import SegceptionBase
from cityseg.models.segception_deep import SegceptionDeep
from cityseg.models.segformer import SegFormerB0, SegFormerB1
from cityseg.models.vgg16_unet import VGG16UNet


class Entry(NamedTuple):
    build: partial  # the class, with the options a variant fixes
    description: str


#: name -> (partial(class, **fixed options), one-line description)
MODELS: dict[str, Entry] = {
    "residual_unet": Entry(partial(ResidualUNet), "seed Model A 'Residual U-Net': valid-padding stack modules, additive skips (~9 M)"),
    "residual_unet_same": Entry(partial(ResidualUNet, padding="same"), "Model A with same padding: any H, W multiple of 4"),
    "segception": Entry(partial(Segception), "seed Model C 'Segception30_base', the README's SegCeption, bugs kept (9.36 M)"),
    "segception_fixed": Entry(partial(Segception, fixed=True), "Model C with the inverse module's dropped BN restored"),
    "segception_deep": Entry(partial(SegceptionDeep), "seed Model D: deep (factorised 3x1/1x3) stack modules, 5 levels (13.6 M)"),
    "segception_deep_fixed": Entry(partial(SegceptionDeep, fixed=True), "Model D using the level-5 skip and with the 32-vs-34 typo fixed"),
    "segception_base": Entry(partial(SegceptionBase), "seed Model B 'Base SegCeption': 3-way modules, per-element PReLU, fixed input size (44 M)"),
    "vgg16_unet": Entry(partial(VGG16UNet), "VGG16 encoder (torchvision layout, loadable weights) + U-Net decoder, concatenated skips"),
    "residual_inception_unet": Entry(partial(ResidualInceptionUNet), "residual Inception U-Net (1x1/3x3/5x5 branches, BN, same padding)"),
    "residual_unet_attn": Entry(
        partial(ResidualUNetAttn), "Model A (same padding) + multi-head self-attention at the 1/4 bottleneck, 2-D sinusoidal positions"
    ),
    "ddrnet23_slim": Entry(partial(DDRNet23Slim), "DDRNet-23-slim (Hong et al. 2021): dual-resolution branches, DAPPM, aux head in training (5.7 M)"),
    "ddrnet23": Entry(partial(DDRNet23), "DDRNet-23: the same at full width (20.1 M)"),
    "pidnet_s": Entry(partial(PIDNetS), "PIDNet-S (Xu et al. 2023): P/I/D branches, Pag, PAPPM, Bag; aux and boundary heads in training (7.6 M)"),
    "pidnet_m": Entry(partial(PIDNetM), "PIDNet-M: the official M widths and depths"),
    "pidnet_l": Entry(partial(PIDNetL), "PIDNet-L: the official L widths and depths (36.9 M)"),
    "bisenetv2": Entry(partial(BiSeNetV2), "BiSeNetV2 (Yu et al. 2021): detail + semantic branches, guided aggregation, 4 booster heads in training (3.4 M)"),
    "segformer_b0": Entry(partial(SegFormerB0), "SegFormer-B0 (Xie et al. 2021): Mix Transformer encoder + all-MLP decoder (3.7 M)"),
    "segformer_b1": Entry(partial(SegFormerB1), "SegFormer-B1: the same encoder at B1 width (13.7 M)"),
    "espnet": Entry(partial(ESPNet), "ESPNet (Mehta et al. 2018): ESP modules (reduce, dilated pyramid, hierarchical sum), light decoder (0.36 M)"),
    "espnet_c": Entry(partial(ESPNetC), "ESPNet-C: the ESPNet encoder alone, 1/8 logits upsampled bilinearly"),
    "espnetv2": Entry(partial(ESPNetv2), "ESPNetv2 (Mehta et al. 2019): EESP units (grouped, depthwise dilated), pyramid-pool decoder (s=2.0: 0.79 M)"),
    "efficientnet_unet": Entry(partial(EfficientNetUNet), "EfficientNet-B0 encoder (MBConv, SE, SiLU) + U-Net decoder with convolved skips"),
    "lite0_fpn": Entry(
        partial(LiteSegModel, variant="lite0", decoder="fpn"),
        "ImageNet EfficientNet-Lite0 encoder (cityseg[pretrained]) + FPN semantic head at 1/4, 96 channels",
    ),
    "lite0_unet": Entry(partial(LiteSegModel, variant="lite0", decoder="unet"), "ImageNet EfficientNet-Lite0 encoder + efficientnet_unet's U-Net decoder"),
    "lite0_lraspp": Entry(
        partial(LiteSegModel, variant="lite0", decoder="lraspp"), "ImageNet EfficientNet-Lite0 encoder + MobileNetV3's LR-ASPP head (1/8 and 1/32 features)"
    ),
    "lite1_fpn": Entry(partial(LiteSegModel, variant="lite1", decoder="fpn"), "the same FPN on EfficientNet-Lite1 (21 blocks)"),
    "lite2_fpn": Entry(partial(LiteSegModel, variant="lite2", decoder="fpn"), "the same FPN on EfficientNet-Lite2 (width x1.1, 21 blocks)"),
}


def list_models() -> list[str]:
    """The registered model names, in the order ``cityseg models`` lists them."""
    return list(MODELS)


def describe(name: str) -> str:
    """One-line description of a registered model."""
    return MODELS[check_model_name(name)].description


def model_options(name: str) -> dict:
    """Options of a model with their defaults (num_classes excluded)."""
    build = MODELS[check_model_name(name)].build
    params = inspect.signature(build.func.__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "num_classes") and k not in build.keywords}


def check_model_name(name: str) -> str:
    """``name`` if it is registered, else the one unknown-model error of the project."""
    if name not in MODELS:
        raise CitysegError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    return name


def weightless_options(name: str) -> dict[str, Any]:
    """Options that keep a model from reading pretrained weights it does not need: weights that a
    checkpoint overwrites anyway, or a model on the meta device that only counts."""
    return {"pretrained": False} if "pretrained" in model_options(name) else {}


def build_model(name: str, num_classes: int = 34, **options: Any) -> SegmentationModel:
    """Build a registered model; an unknown name or option is a one-line ``CitysegError``."""
    valid = model_options(name)
    for key in options:
        if key not in valid:
            listed = ", ".join(valid) or "none"
            raise CitysegError(f"model {name!r} has no option {key!r}; valid options: {listed}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise CitysegError(f"model {name!r}: num_classes must be a positive integer; got {num_classes!r}")
    return MODELS[name].build(num_classes=num_classes, **options)


def count_params(model: nn.Module) -> int:
    """Trainable parameters of the deployed model: without the training-only heads (what inference runs)."""
    heads = tuple(f"{h}." for h in getattr(model, "training_heads", ()))
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and not n.startswith(heads))


def forward_gflops(model: nn.Module, size: tuple[int, int]) -> float:
    """Forward GFLOPs of one 3xHxW image as ``FlopCounterMode`` counts them (a multiply-add is 2 FLOPs),
    on the model's per-branch path (the fused path zero-pads smaller kernels, which would inflate it)."""
    import copy

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if device.type != "meta":
        model = copy.deepcopy(model)
    model = set_fused(model.eval(), False)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, *size, device=device))
    return counter.get_total_flops() / 1e9


def model_info(name: str, size: tuple[int, int] = (128, 256), num_classes: int = 34) -> dict[str, Any]:
    """Params and GFLOPs per image (FlopCounterMode, 1 multiply-add = 2 FLOPs) of one model.

    The model runs on the meta device (no memory, no compute) with its per-branch path, so the
    figures are the network's own arithmetic. A model that does not accept ``size`` (e.g.
    ``segception_base``, built for one size) is counted at the size it accepts; ``note`` says so.
    """
    h, w = size
    rebuilt = False
    with torch.device("meta"):
        model = build_model(name, num_classes=num_classes, **weightless_options(name))
        if not model.accepts(h, w) and "input_size" in model_options(name):
            try:  # a model tied to one input size (segception_base) is rebuilt for this one
                model = build_model(name, num_classes=num_classes, input_size=(h, w))
                rebuilt = True
            except CitysegError:
                pass
    note = ""
    run_h, run_w = h, w
    if not model.accepts(h, w):
        run_h, run_w = model.valid_size(h, w)
        note = f"needs {model.size_rule()}; counted at {run_h}x{run_w}"
    elif rebuilt:
        note = f"built with input_size={h}x{w}"
    return {
        "name": name,
        "params": count_params(model),
        "gflops": forward_gflops(model, (run_h, run_w)),
        "size": [run_h, run_w],
        "note": note,
        "description": describe(name),
    }


def model_from_checkpoint(
    ckpt: dict[str, Any] | str | os.PathLike, expect_model: str | None = None, expect_label_mode: str | None = None, map_location: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights; returns (model in eval mode, ckpt)."""
    where = ""
    if not isinstance(ckpt, dict):
        where = f"{ckpt}: "
        ckpt = load_checkpoint(ckpt, map_location=map_location)
    if expect_model is not None and ckpt["model_name"] != expect_model:
        raise CitysegError(f"{where}checkpoint holds model {ckpt['model_name']!r}, not {expect_model!r}")
    if expect_label_mode is not None and ckpt["label_mode"] != expect_label_mode:
        raise CitysegError(f"{where}checkpoint was trained on {ckpt['label_mode']}, not {expect_label_mode}")
    options = {**(ckpt.get("model_options") or {}), **weightless_options(ckpt["model_name"])}
    model = build_model(ckpt["model_name"], num_classes=int(ckpt["num_classes"]), **options)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CitysegError(f"{where}weights do not fit model {ckpt['model_name']!r} ({first})") from None
    model.eval()
    return model, ckpt
