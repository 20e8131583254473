"""fp32 ONNX -> statically quantised int8 ONNX (QDQ, per-channel weights), calibrated on dataset frames.

``quantize_onnx`` runs onnxruntime's ``quantize_static``: activations uint8 and weights int8 (the U8S8
pair that onnxruntime's x86 kernels run fastest), per-output-channel weight scales, MinMax calibration
over frames of a dataset split, each read and preprocessed exactly as ``Predictor`` does it (resize to the
export size, /255, mean/std). The cityseg metadata of the fp32 file is carried over, plus a
``quantization`` entry, so ``predict --onnx`` and ``evaluate --checkpoint model.onnx`` run it unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from cityseg.errors import CitysegError
from cityseg.io import atomic_path, prepare_target

QUANTIZATION = {"format": "QDQ", "activations": "uint8", "weights": "int8 per-channel", "calibration": "MinMax"}


def calibration_frames(root: str | os.PathLike, split: str, count: int) -> list[Path]:
    """Up to ``count`` image paths of ``split``, spread evenly over the split (one-line error if none)."""
    from cityseg.data import layout

    if count < 1:
        raise CitysegError(f"calibration needs at least one frame; got {count}")
    samples = layout.require_samples(root, split, require_labels=False)
    step = max(1, len(samples) // count)
    return [s.image for s in samples[::step][:count]]


class FrameReader(CalibrationDataReader):
    """Calibration data: one preprocessed 1x3xHxW frame per ``get_next`` call."""

    def __init__(self, images: Sequence[Path], input_name: str, size: Sequence[int], interpolation: str, mean: Any, std: Any, channel_order: str = "RGB"):
        self.images, self.input_name = list(images), input_name
        self.size, self.interpolation, self.mean, self.std = tuple(size), interpolation, mean, std
        self.channel_order = channel_order
        self._it: Iterator[Path] = iter(self.images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        from cityseg import io
        from cityseg.data.transforms import preprocess

        path = next(self._it, None)
        if path is None:
            return None
        x = preprocess(io.read_image(path), self.size, self.interpolation, self.mean, self.std, self.channel_order)
        return {self.input_name: np.ascontiguousarray(x[None].numpy(), dtype=np.float32)}

    def rewind(self) -> None:
        self._it = iter(self.images)


def quantize_onnx(fp32: str | os.PathLike, out: str | os.PathLike, data: str | os.PathLike | None, split: str = "train", frames: int = 16) -> dict[str, Any]:
    """Write the int8 version of the cityseg ONNX file ``fp32`` to ``out`` (atomically); returns
    {"path", "frames"}. ``data`` is the dataset root (default: ``$CITYSCAPES_DATASET``)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from cityseg.data import layout
    from cityseg.infer.onnx import INPUT_NAME, read_metadata

    meta = read_metadata(fp32)
    images = calibration_frames(layout.resolve_root(data), split, frames)
    reader = FrameReader(
        images, INPUT_NAME, meta["input_size"], meta.get("interpolation") or "area", meta.get("mean"), meta.get("std"), meta.get("channel_order") or "RGB"
    )
    out = prepare_target(out, "the ONNX file")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmpdir:
        raw = Path(tmpdir) / "int8.onnx"
        logging.disable(logging.WARNING)  # the quantiser logs advice per tensor; the outcome is reported in one line
        try:
            quantize_static(
                os.fspath(fp32),
                os.fspath(raw),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
        except CitysegError:
            raise
        except Exception as e:  # onnxruntime's quantiser raises many types
            first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
            raise CitysegError(f"{out}: int8 quantisation failed ({first})") from None
        finally:
            logging.disable(logging.NOTSET)
        proto = onnx.load(os.fspath(raw))
        source = {p.key: p.value for p in onnx.load(os.fspath(fp32), load_external_data=False).metadata_props}
        del proto.metadata_props[:]
        for key, value in {**source, "quantization": json.dumps({**QUANTIZATION, "frames": len(images), "split": split})}.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        with atomic_path(out) as tmp:
            onnx.save(proto, os.fspath(tmp))
    return {"path": out, "frames": len(images)}


def count_qdq(path: str | os.PathLike) -> tuple[int, int]:
    """(QuantizeLinear, DequantizeLinear) node counts of an ONNX file."""
    import onnx

    nodes = onnx.load(os.fspath(path), load_external_data=False).graph.node
    return sum(n.op_type == "QuantizeLinear" for n in nodes), sum(n.op_type == "DequantizeLinear" for n in nodes)
