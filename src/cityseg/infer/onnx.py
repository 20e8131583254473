"""Checkpoint -> ONNX with a dynamic batch axis, plus the metadata inference needs without the checkpoint.

The input is ``image`` (Bx3xHxW float32, preprocessed exactly as in training), the output ``logits``
(BxCxHxW). Label mode, input size, interpolation, mean/std and class names are stored in the model's
``metadata_props``, so ``cityseg predict --onnx`` and ``Predictor.from_onnx`` run from the file alone.
The dynamo exporter is tried first; if it fails, the TorchScript exporter (``dynamo=False``) is used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cityseg import __version__
from cityseg.errors import CitysegError
from cityseg.io import atomic_path, prepare_target, reading
from cityseg.labels import LABEL_MODES, num_classes

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
#: metadata keys stored as JSON in ``metadata_props`` (all values are JSON strings)
_INPUT_KEYS = ("input_size", "interpolation", "mean", "std", "channel_order")  # what the preprocessing needs
METADATA_KEYS = ("model_name", "model_options", "label_mode", "num_classes", "class_names", *_INPUT_KEYS, "full_res_mode", "void_class")


def _metadata(ckpt: dict[str, Any], size: tuple[int, int], exporter: str, full_res_mode: str, void_class: bool = False) -> dict[str, str]:
    meta = {
        "model_name": ckpt["model_name"],
        "model_options": dict(ckpt.get("model_options") or {}),
        "label_mode": ckpt["label_mode"],
        "num_classes": int(ckpt["num_classes"]),
        "class_names": list(ckpt.get("class_names") or []),
        "input_size": [int(size[0]), int(size[1])],
        "interpolation": ckpt.get("interpolation") or "area",
        "mean": ckpt.get("mean"),
        "std": ckpt.get("std"),
        "channel_order": ckpt.get("channel_order") or "RGB",
        "full_res_mode": full_res_mode,
        "void_class": bool(void_class),
    }
    out = {k: json.dumps(v) for k, v in meta.items()}
    out["cityseg_version"] = json.dumps(__version__)
    out["exporter"] = json.dumps(exporter)
    return out


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The cityseg metadata of an exported ONNX file (one-line ``CitysegError`` if missing or unreadable)."""
    import onnx

    with reading(path, "ONNX model") as path:
        model = onnx.load(os.fspath(path), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
    missing = [k for k in ("label_mode", "num_classes", "input_size") if k not in props]
    if missing:
        raise CitysegError(f"{path}: not a cityseg ONNX export (metadata lacks {', '.join(missing)})")
    with reading(path, "cityseg metadata in the ONNX model"):
        meta = {k: json.loads(v) for k, v in props.items() if k in METADATA_KEYS or k in ("exporter", "cityseg_version", "quantization")}
    check_metadata(path, meta)
    return meta


def check_metadata(path: Path, meta: dict[str, Any]) -> None:
    """The values inference reads from the metadata have their kinds (a JSON string may hold anything)."""
    size = meta["input_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise CitysegError(f"{path}: corrupt cityseg metadata in the ONNX model (input_size {size!r} is not [H, W])")
    mode, n = meta["label_mode"], meta["num_classes"]
    if not isinstance(mode, str) or mode not in LABEL_MODES or n != num_classes(mode):
        raise CitysegError(f"{path}: corrupt cityseg metadata in the ONNX model (label_mode {mode!r} with num_classes {n!r})")
    for key in ("mean", "std"):
        value = meta.get(key)
        if value is not None and not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)):
            raise CitysegError(f"{path}: corrupt cityseg metadata in the ONNX model ({key} {value!r} is not 3 numbers)")


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' warnings and logged tracebacks (we report the outcome in one line)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def export_model(model: torch.nn.Module, x: torch.Tensor, path: Path, opset: int, dynamo: bool) -> None:
    common = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset)
    with _quiet():
        if dynamo:
            torch.onnx.export(
                model,
                (x,),
                os.fspath(path),
                dynamo=True,
                external_data=False,
                verbose=False,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                **common,
            )
        else:
            torch.onnx.export(model, (x,), os.fspath(path), dynamo=False, dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, **common)


def export_onnx(
    checkpoint: dict[str, Any] | str | os.PathLike,
    out: str | os.PathLike,
    opset: int = 18,
    size: Sequence[int] | None = None,
    exporter: str = "auto",
    fold_bn: bool = True,
) -> dict[str, Any]:
    """Export ``checkpoint`` to ``out`` (written atomically).

    Returns {"path", "exporter", "opset", "input_size", "fallback_reason"}; "opset" is the one actually
    written (the dynamo exporter starts at 18 and keeps 18 when it cannot convert down).

    ``exporter``: "auto" (dynamo, then TorchScript on failure), "dynamo" or "torchscript".
    ``size`` defaults to the checkpoint's training size; only the batch axis is dynamic. ``fold_bn`` folds
    every Conv->BN pair first (``cityseg.models.fold``), so the graph, and an int8 version of it, holds
    no BatchNormalization a convolution can absorb.
    """
    import onnx

    from cityseg.models import model_from_checkpoint
    from cityseg.models.fold import fold_batchnorm

    if exporter not in ("auto", "dynamo", "torchscript"):
        raise CitysegError(f"unknown exporter {exporter!r}: choose auto, dynamo or torchscript")
    model, ckpt = model_from_checkpoint(checkpoint)
    full_res_mode, void_class = getattr(model, "full_res_mode", "whole"), getattr(model, "void_class", False)
    h, w = (int(v) for v in (size or ckpt.get("input_size") or ()))
    check = getattr(model, "check_input_shape", None)
    if check is not None:
        check(h, w)
    if fold_bn:
        model = fold_batchnorm(model, (h, w))
    x = torch.rand(2, 3, h, w)  # batch 2, so no exporter specialises the batch axis to 1
    tries = {"auto": [True, False], "dynamo": [True], "torchscript": [False]}[exporter]
    fallback_reason = None
    out = prepare_target(out, "the ONNX file")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmpdir:
        raw = Path(tmpdir) / "model.onnx"
        used = None
        for dynamo in tries:
            try:
                export_model(model, x, raw, opset, dynamo)
                used = "dynamo" if dynamo else "torchscript"
                break
            except Exception as e:  # exporter failures come in many types
                fallback_reason = f"{e.__class__.__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        if used is None:
            raise CitysegError(f"{out}: ONNX export failed ({fallback_reason})")
        proto = onnx.load(os.fspath(raw))  # pulls external data (if any) back into one self-contained file
        for key, value in _metadata(ckpt, (h, w), used, full_res_mode, void_class).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        with atomic_path(out) as tmp:
            onnx.save(proto, os.fspath(tmp))
        opset_used = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=opset)
    return {"path": out, "exporter": used, "opset": opset_used, "input_size": (h, w), "fallback_reason": fallback_reason if used != tries[0] else None}


def compare_onnx(
    model: torch.nn.Module, path: str | os.PathLike, size: Sequence[int], batches: Sequence[int] = (1, 3), seed: int = 0
) -> dict[int, dict[str, float]]:
    """Run PyTorch and onnxruntime on the same random inputs: {batch: {"max_abs_diff", "argmax_agreement"}}."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(os.fspath(path), opts, providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    result = {}
    model.eval()
    for b in batches:
        x = torch.rand(b, 3, int(size[0]), int(size[1]), generator=g)
        with torch.inference_mode():
            ref = model(x).float()
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        got = torch.from_numpy(np.asarray(got))
        if got.shape != ref.shape:
            raise CitysegError(f"{path}: onnxruntime returned shape {tuple(got.shape)}, PyTorch {tuple(ref.shape)}")
        result[b] = {"max_abs_diff": float((got - ref).abs().max()), "argmax_agreement": float((got.argmax(1) == ref.argmax(1)).float().mean())}
    return result


class OnnxModel:
    """Adapter: an onnxruntime ``InferenceSession`` called like a module (Bx3xHxW tensor -> logits tensor)."""

    def __init__(self, session: Any):
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        (out,) = self.session.run([self.output_name], {self.input_name: arr})
        return torch.from_numpy(out).to(x.device)

    def eval(self) -> OnnxModel:
        return self


def is_onnx_session(model: Any) -> bool:
    return hasattr(model, "run") and hasattr(model, "get_inputs") and not isinstance(model, torch.nn.Module)


def load_onnx(path: str | os.PathLike, threads: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Open an exported model with onnxruntime: (session, metadata dict from ``cityseg.infer.onnx``)."""
    import onnxruntime as ort

    meta = read_metadata(path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    with reading(path, "ONNX model with onnxruntime") as checked:
        # the bytes, not the name: onnxruntime takes names as UTF-8 only, and exports are self-contained
        session = ort.InferenceSession(checked.read_bytes(), opts, providers=["CPUExecutionProvider"])
    return session, meta
