"""cityseg models: faithful ports of the seed networks, the ones it only named, improved variants.

``build_model(name, num_classes=34, **options)`` builds a registered model; ``list_models()`` and
``describe(name)`` list them. Every model is a ``SegmentationModel``: ``forward(x: Bx3xHxW)``
returns logits BxCxHxW at the input size (no softmax) and ``check_input_shape(h, w)`` raises a
``CitysegError`` naming the sizes that work. In training mode a model may instead return a dict of
logits at the input size, ``{"out": ..., <training-only heads>}``; in eval mode it returns one tensor.
"""

from cityseg.models.base import SegmentationModel
from cityseg.models.blocks import set_fused
from cityseg.models.registry import (
    MODELS,
    Entry,
    build_model,
    check_model_name,
    count_params,
    describe,
    forward_gflops,
    list_models,
    model_from_checkpoint,
    model_info,
    model_options,
    weightless_options,
)

__all__ = [
    "MODELS",
    "Entry",
    "SegmentationModel",
    "build_model",
    "check_model_name",
    "count_params",
    "describe",
    "forward_gflops",
    "list_models",
    "model_from_checkpoint",
    "model_info",
    "model_options",
    "set_fused",
    "weightless_options",
]
