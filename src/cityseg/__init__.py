"""cityseg: semantic segmentation of Cityscapes street scenes in PyTorch.

The package face: the names a user reaches for are importable from here (loaded on first use, so
``import cityseg`` stays cheap), and the modules that moved into layers keep their old short names
(``from cityseg import metrics`` is ``cityseg.eval.metrics``). ``docs/architecture.md`` draws the layers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from cityseg.errors import CitysegError

#: public name -> "module" (a module) or "module:attribute"
_FACE = {
    "metrics": "cityseg.eval.metrics",
    "evaluation": "cityseg.eval.evaluate",
    "losses": "cityseg.train.losses",
    "CityscapesDataset": "cityseg.data.dataset:CityscapesDataset",
    "CityscapesEvaluator": "cityseg.eval.metrics:CityscapesEvaluator",
    "Predictor": "cityseg.infer.predictor:Predictor",
    "build_model": "cityseg.models:build_model",
    "list_models": "cityseg.models:list_models",
    "load_checkpoint": "cityseg.checkpoint:load_checkpoint",
    "model_from_checkpoint": "cityseg.models:model_from_checkpoint",
    "adapt_batchnorm": "cityseg.infer.adapt:adapt_batchnorm",
    "adapt_checkpoint": "cityseg.infer.adapt:adapt_checkpoint",
    "CamVidEvaluator": "cityseg.eval.metrics:CamVidEvaluator",
}

__all__ = [  # noqa: RUF022 (the face's order: the package, then modules, then names)
    "CitysegError",
    "__version__",
    "metrics",
    "evaluation",
    "losses",
    "CityscapesDataset",
    "CityscapesEvaluator",
    "Predictor",
    "build_model",
    "list_models",
    "load_checkpoint",
    "model_from_checkpoint",
    "adapt_batchnorm",
    "adapt_checkpoint",
    "CamVidEvaluator",
]


def __getattr__(name: str) -> Any:
    target = _FACE.get(name)
    if target is None:
        raise AttributeError(f"module 'cityseg' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = importlib.import_module(module)
    return getattr(value, attr) if attr else value
