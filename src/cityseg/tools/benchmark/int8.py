"""int8 against fp32 onnxruntime for trained checkpoints: img/s and the val mIoU the quantisation costs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cityseg.eval.evaluate import score_checkpoint
from cityseg.infer.onnx import export_onnx, read_metadata
from cityseg.infer.predictor import Predictor
from cityseg.tools.benchmark.machine import time_fn
from cityseg.tools.benchmark.model_speed import onnx_infer_fn, quantized


def ort_rate(path: Path, size: tuple[int, int], batch: int, warmup: int, iters: int) -> float:
    """Images/s of one onnxruntime session on a fixed random batch (median of ``iters``)."""
    x = torch.from_numpy(np.random.default_rng(0).random((batch, 3, *size), dtype=np.float32))
    return batch / time_fn(onnx_infer_fn(path, x), warmup, iters)


def int8_quality(
    checkpoint: str | os.PathLike, data: str | os.PathLike, work: Path, calib_frames: int = 16, limit: int | None = None, batch: int = 4, iters: int = 5
) -> dict[str, Any]:
    """Export ``checkpoint`` to fp32 and int8 ONNX (calibrated on ``data``'s train split), score both on its
    val split (``limit`` frames) and time both: {"model", "miou_fp32", "miou_int8", "miou_delta_points",
    "img_s_fp32", "img_s_int8", "speedup"}."""
    stem = Path(checkpoint).stem
    fp32 = Path(export_onnx(checkpoint, work / f"{stem}-fp32.onnx")["path"])
    int8 = quantized(fp32, data, "train", calib_frames)
    out: dict[str, Any] = {"checkpoint": str(checkpoint)}
    for kind, path in (("fp32", fp32), ("int8", int8)):
        predictor = Predictor.from_onnx(path)
        out.setdefault("model", _model_name(path))
        t0 = time.perf_counter()
        full, _, _ = score_checkpoint(data, "val", None, predictor=predictor, limit=limit)
        out[f"eval_s_{kind}"] = round(time.perf_counter() - t0, 2)
        out[f"miou_{kind}"] = full.results()["mIoU"]
        out[f"img_s_{kind}"] = ort_rate(path, tuple(predictor.input_size), batch, 2, iters)
    out["miou_delta_points"] = None if None in (out["miou_fp32"], out["miou_int8"]) else round(100 * (out["miou_int8"] - out["miou_fp32"]), 2)
    out["speedup"] = round(out["img_s_int8"] / out["img_s_fp32"], 2)
    return out


def _model_name(path: Path) -> str:
    return str(read_metadata(path).get("model_name"))
