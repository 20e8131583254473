"""One model's whole measurement (run in its own process by default); a failed measurement is recorded, not raised."""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cityseg.errors import CitysegError
from cityseg.models import count_params, forward_gflops
from cityseg.tools.benchmark.config import ALL_KEYS, FULLRES, ONNX_FULLRES_KEY
from cityseg.tools.benchmark.measure import (
    build,
    export_for_ort,
    fullres_fn,
    fullres_onnx_fn,
    fused,
    has_fused_path,
    infer_fn,
    int8_rates,
    make_batch,
    onnx_infer_fn,
    peak_rss_mb,
    time_fn,
    train_step_fn,
    variant_rates,
)


# ---- one model ------------------------------------------------------------------------------------
def guard(errors: dict[str, str], key: str, fn: Callable[[], Any]) -> Any:
    """Run one measurement; a failure is recorded (one line) and gives None, the run goes on."""
    try:
        return fn()
    except (CitysegError, RuntimeError, ValueError, MemoryError, ImportError, OSError) as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        errors[key] = f"{e.__class__.__name__}: {text}"[:300]
        if isinstance(e, (RuntimeError, MemoryError)) and x_is_oom(e):
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()
        return None


def x_is_oom(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or "out of memory" in str(e).lower()


def bench_model(name: str, cfg: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """Measure one model; returns {key: value for MODEL_KEYS} plus "errors" {measurement: one line}."""
    threads = cfg.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    device = torch.device(shared["device"])
    size, batch, skip = tuple(cfg["size"]), int(cfg["batch"]), set(cfg["skip"])
    warmup, iters = int(cfg["warmup"]), int(cfg["iters"])
    infer_batch = int(shared["infer_batch"])
    torch.manual_seed(0)
    out: dict[str, Any] = dict.fromkeys(ALL_KEYS)
    errors: dict[str, str] = {}
    model = build(name, size).to(device)
    out["params"] = count_params(model)
    out["gflops"] = guard(errors, "gflops", lambda: forward_gflops(model, size))
    x, y = make_batch(batch, size, device)
    xi = x[:infer_batch].clone()

    def rate(n: int, fn_factory: Callable[[], Callable[[], Any]], it: int = iters) -> float:
        return n / time_fn(fn_factory(), warmup, it, device)

    if "train" not in skip:
        out["train_img_s_fp32"] = guard(errors, "train_fp32", lambda: rate(batch, lambda: train_step_fn(copy.deepcopy(model), x, y, fast=False)))
        out["train_img_s_fast"] = guard(errors, "train_fast", lambda: rate(batch, lambda: train_step_fn(copy.deepcopy(model), x, y, fast=True)))
    if "infer" not in skip:
        out["infer_img_s_fp32"] = guard(errors, "infer_fp32", lambda: rate(infer_batch, lambda: infer_fn(copy.deepcopy(model), xi, fast=False)))
        out["infer_img_s_fast"] = guard(errors, "infer_fast", lambda: rate(infer_batch, lambda: infer_fn(copy.deepcopy(model), xi, fast=True)))
    if "variants" not in skip and "infer" not in skip:
        out.update(guard(errors, "variants", lambda: variant_rates(model, xi, iters, Path(shared["work_dir"]) / f"fast_path-{name}.json")) or {})
    if cfg.get("roofline"):
        from cityseg.tools.benchmark.roofline import roofline_model

        rsize = tuple(cfg.get("roofline_size") or FULLRES)
        out["roofline"] = guard(errors, "roofline", lambda: roofline_model(name, rsize, shared["roof"], shared["bandwidth_gb_s"], warmup, iters))
    if "fused" not in skip and has_fused_path(model):
        if "train" not in skip:
            out["train_img_s_fast_fused"] = guard(errors, "train_fast_fused", lambda: rate(batch, lambda: train_step_fn(fused(model), x, y, fast=True)))
        if "infer" not in skip:
            out["infer_img_s_fast_fused"] = guard(errors, "infer_fast_fused", lambda: rate(infer_batch, lambda: infer_fn(fused(model), xi, fast=True)))
    if "onnx" not in skip:
        if device.type == "cuda":
            errors["onnx"] = "skipped: onnxruntime runs on the CPU execution provider only here"
        else:

            def onnx_rates():
                path = export_for_ort(name, model.cpu(), size, Path(shared["work_dir"]))
                try:
                    out["infer_img_s_onnx"] = rate(infer_batch, lambda: onnx_infer_fn(path, xi))
                    if "int8" not in skip and shared.get("calib_root"):
                        guard(errors, "int8", lambda: int8_rates(path, shared, xi, rate, out))
                    if "fullres" not in skip and shared.get("fullres_image") is not None:
                        image = np.load(shared["fullres_image"])
                        out[ONNX_FULLRES_KEY] = time_fn(fullres_onnx_fn(path, image), warmup, iters)
                finally:
                    with contextlib.suppress(OSError):
                        path.unlink()

            guard(errors, "onnx", onnx_rates)
            model.to(device)
    if "fullres" not in skip and shared.get("fullres_image") is not None:
        image = np.load(shared["fullres_image"])
        out["fullres_s_per_img"] = guard(errors, "fullres", lambda: time_fn(fullres_fn(copy.deepcopy(model), size, image, device), warmup, iters, device))
    out["loader_img_s_cache"] = shared.get("loader_img_s_cache")
    out["loader_img_s_png"] = shared.get("loader_img_s_png")
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    out["errors"] = errors
    return out


def bench_model_isolated(name: str, cfg: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.get("threads") or torch.get_num_threads()))
    return bench_model(name, cfg, shared)
