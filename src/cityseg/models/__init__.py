"""cityseg models: faithful ports of the seed networks, the ones it only named, improved variants.

``build_model(name, num_classes=34, **options)`` builds a registered model; ``list_models()`` and
``describe(name)`` list them. Every model is a ``SegmentationModel``: ``forward(x: Bx3xHxW)``
returns logits BxCxHxW at the input size (no softmax) and ``check_input_shape(h, w)`` raises a
``CitysegError`` naming the sizes that work.
"""

from __future__ import annotations

import inspect

from torch import nn

from cityseg.errors import CitysegError

from .base import SegmentationModel
from .blocks import UPSAMPLE_MODES, set_fused
from .residual_inception_unet import ResidualInceptionUNet
from .residual_unet import ResidualUNet
from .segception import Segception
from .segception_base import SegceptionBase
from .segception_deep import SegceptionDeep
from .vgg16_unet import VGG16UNet

__all__ = ["MODELS", "SegmentationModel", "build_model", "describe", "list_models", "set_fused"]


def _variant(cls, **fixed):
    def build(**options):
        return cls(**{**options, **fixed})

    build.cls, build.fixed = cls, fixed
    return build


#: name -> (builder, one-line description). A builder takes num_classes and the model's options.
MODELS: dict[str, tuple] = {
    "residual_unet": (_variant(ResidualUNet),
                      "seed Model A 'Residual U-Net': valid-padding stack modules, additive skips (~9 M)"),
    "residual_unet_same": (_variant(ResidualUNet, padding="same"),
                           "Model A with same padding: any H, W multiple of 4"),
    "segception": (_variant(Segception),
                   "seed Model C 'Segception30_base', the README's SegCeption, bugs kept (9.36 M)"),
    "segception_fixed": (_variant(Segception, fixed=True),
                         "Model C with the inverse module's dropped BN restored"),
    "segception_deep": (_variant(SegceptionDeep),
                        "seed Model D: deep (factorised 3x1/1x3) stack modules, 5 levels (13.6 M)"),
    "segception_deep_fixed": (_variant(SegceptionDeep, fixed=True),
                              "Model D using the level-5 skip and with the 32-vs-34 typo fixed"),
    "segception_base": (_variant(SegceptionBase),
                        "seed Model B 'Base SegCeption': 3-way modules, per-element PReLU, fixed input size (44 M)"),
    "vgg16_unet": (_variant(VGG16UNet),
                   "VGG16 encoder (torchvision layout, loadable weights) + U-Net decoder, concatenated skips"),
    "residual_inception_unet": (_variant(ResidualInceptionUNet),
                                "residual Inception U-Net (1x1/3x3/5x5 branches, BN, same padding)"),
}

_CHOICES = {"upsample": UPSAMPLE_MODES, "padding": ("valid", "same")}


def list_models() -> list[str]:
    return list(MODELS)


def describe(name: str) -> str:
    """One-line description of a registered model."""
    return MODELS[check_model_name(name)][1]


def model_options(name: str) -> dict:
    """Options of a model with their defaults (num_classes excluded)."""
    build = MODELS[check_model_name(name)][0]
    params = inspect.signature(build.cls.__init__).parameters
    return {k: p.default for k, p in params.items()
            if k not in ("self", "num_classes") and k not in build.fixed}


def check_model_name(name: str) -> str:
    if name not in MODELS:
        raise CitysegError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    return name


def build_model(name: str, num_classes: int = 34, **options) -> nn.Module:
    """Build a registered model with Keras-style initialisation."""
    valid = model_options(name)
    for key, value in options.items():
        if key not in valid:
            listed = ", ".join(valid) or "none"
            raise CitysegError(f"model {name!r} has no option {key!r}; valid options: {listed}")
        if key in _CHOICES and value not in _CHOICES[key]:
            raise CitysegError(f"model {name!r}: {key} must be one of {', '.join(_CHOICES[key])}; got {value!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise CitysegError(f"model {name!r}: num_classes must be a positive integer; got {num_classes!r}")
    for key in ("reduction", "base"):
        if key in options and (isinstance(options[key], bool) or not isinstance(options[key], int)
                               or options[key] < 1):
            raise CitysegError(f"model {name!r}: {key} must be a positive integer; got {options[key]!r}")
    return MODELS[name][0](num_classes=num_classes, **options)
