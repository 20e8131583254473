"""One model's whole measurement (run in its own process by default); a failed measurement is recorded, not raised."""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from cityseg.errors import CitysegError
from cityseg.infer.fastpath import has_fused_path
from cityseg.models import count_params, forward_gflops
from cityseg.tools.benchmark.config import ALL_KEYS, ONNX_FULLRES_KEY, BenchConfig, BenchContext
from cityseg.tools.benchmark.machine import peak_rss_mb, time_fn
from cityseg.tools.benchmark.model_speed import (
    argmax_agreement,
    build,
    export_for_ort,
    fullres_fn,
    fullres_onnx_fn,
    fused,
    infer_fn,
    make_batch,
    onnx_infer_fn,
    quantized,
    train_step_fn,
    variant_rates,
)
from cityseg.tools.benchmark.roofline import roofline_model


def guard(errors: dict[str, str], key: str, fn: Callable[[], Any]) -> Any:
    """Run one measurement; a failure is recorded (one line) and gives None, the run goes on."""
    try:
        return fn()
    except (CitysegError, RuntimeError, ValueError, MemoryError, ImportError, OSError) as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        errors[key] = f"{e.__class__.__name__}: {text}"[:300]
        if isinstance(e, MemoryError) or "out of memory" in str(e).lower():
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()
        return None


@dataclass
class ModelBench:
    """One model, its fixed inputs and what has been measured on it so far."""

    name: str
    cfg: BenchConfig
    ctx: BenchContext
    model: torch.nn.Module
    x: torch.Tensor  # the training batch
    y: torch.Tensor
    xi: torch.Tensor  # the inference batch (the first ``infer_batch`` images of ``x``)
    out: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(ALL_KEYS))
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.x.device

    def wants(self, *parts: str) -> bool:
        return not set(parts) & set(self.cfg.skip)

    def rate(self, images: int, fn_factory: Callable[[], Callable[[], Any]]) -> float:
        """Images/s of the function ``fn_factory`` builds (median of ``iters`` after ``warmup``)."""
        return images / time_fn(fn_factory(), self.cfg.warmup, self.cfg.iters, self.device)

    def seconds(self, fn: Callable[[], Any]) -> float:
        """Median seconds of one call of ``fn``."""
        return time_fn(fn, self.cfg.warmup, self.cfg.iters, self.device)

    def record(self, key: str, error_key: str, fn: Callable[[], Any]) -> None:
        self.out[key] = guard(self.errors, error_key, fn)

    def copy(self) -> torch.nn.Module:
        """A fresh copy of the model, so each measurement starts from the same weights."""
        return copy.deepcopy(self.model)

    def fused_copy(self) -> torch.nn.Module:
        return fused(self.model)

    def train_rate(self, model: Callable[[], torch.nn.Module], fast: bool) -> float:
        """Training images/s of the model ``model()`` returns."""
        return self.rate(self.x.shape[0], lambda: train_step_fn(model(), self.x, self.y, fast, self.ctx.work_dir))

    def infer_rate(self, model: Callable[[], torch.nn.Module], fast: bool) -> float:
        """Inference images/s of the model ``model()`` returns."""
        return self.rate(self.xi.shape[0], lambda: infer_fn(model(), self.xi, fast))

    def train(self) -> None:
        self.record("train_img_s_fp32", "train_fp32", lambda: self.train_rate(self.copy, False))
        self.record("train_img_s_fast", "train_fast", lambda: self.train_rate(self.copy, True))

    def infer(self) -> None:
        self.record("infer_img_s_fp32", "infer_fp32", lambda: self.infer_rate(self.copy, False))
        self.record("infer_img_s_fast", "infer_fast", lambda: self.infer_rate(self.copy, True))

    def variants(self) -> None:
        cache = self.ctx.work_dir / f"fast_path-{self.name}.json"
        self.out.update(guard(self.errors, "variants", lambda: variant_rates(self.model, self.xi, self.cfg.iters, cache)) or {})

    def roofline(self) -> None:
        size, roof, bandwidth = tuple(self.cfg.roofline_size), self.ctx.roof, self.ctx.bandwidth_gb_s
        self.record("roofline", "roofline", lambda: roofline_model(self.name, size, roof, bandwidth, self.cfg.warmup, self.cfg.iters))

    def fused(self) -> None:
        """The fast path with the multi-branch blocks fused (for models that have them)."""
        if self.wants("train"):
            self.record("train_img_s_fast_fused", "train_fast_fused", lambda: self.train_rate(self.fused_copy, True))
        if self.wants("infer"):
            self.record("infer_img_s_fast_fused", "infer_fast_fused", lambda: self.infer_rate(self.fused_copy, True))

    def onnx(self) -> None:
        """onnxruntime on the CPU: inference img/s, int8 beside it, and full-resolution prediction."""
        if self.device.type == "cuda":
            self.errors["onnx"] = "skipped: onnxruntime runs on the CPU execution provider only here"
            return
        size = tuple(self.cfg.size)
        path = guard(self.errors, "onnx", lambda: export_for_ort(self.name, self.model.cpu(), size, self.ctx.work_dir))
        self.model.to(self.device)
        if path is None:
            return
        try:
            self.record("infer_img_s_onnx", "onnx", lambda: self.rate(self.xi.shape[0], lambda: onnx_infer_fn(path, self.xi)))
            if self.wants("int8") and self.ctx.calib_root is not None:
                guard(self.errors, "int8", lambda: self.int8(path))
            image = self.ctx.fullres_frame()
            if self.wants("fullres") and image is not None:
                self.record(ONNX_FULLRES_KEY, "onnx_fullres", lambda: self.seconds(fullres_onnx_fn(path, image)))
        finally:
            with contextlib.suppress(OSError):
                path.unlink()

    def int8(self, fp32: os.PathLike) -> None:
        """The int8 export timed like fp32 onnxruntime, and its argmax agreement on the benchmark frame."""
        int8 = quantized(fp32, self.ctx.calib_root, self.ctx.calib_split)
        try:
            self.out["infer_img_s_onnx_int8"] = self.rate(self.xi.shape[0], lambda: onnx_infer_fn(int8, self.xi))
            image = self.ctx.fullres_frame()
            if image is not None:
                self.out["int8_argmax_agreement"] = argmax_agreement(fp32, int8, image)
        finally:
            with contextlib.suppress(OSError):
                int8.unlink()

    def fullres(self) -> None:
        image = self.ctx.fullres_frame()
        if image is not None:
            self.record("fullres_s_per_img", "fullres", lambda: self.seconds(fullres_fn(self.copy(), tuple(self.cfg.size), image, self.device)))

    def steps(self) -> list[Callable[[], None]]:
        """The measurements this configuration asks for, in order."""
        steps = [self.train] if self.wants("train") else []
        steps += [self.infer] if self.wants("infer") else []
        steps += [self.variants] if self.wants("variants", "infer") else []
        steps += [self.roofline] if self.cfg.roofline else []
        steps += [self.fused] if self.wants("fused") and has_fused_path(self.model) else []
        steps += [self.onnx] if self.wants("onnx") else []
        steps += [self.fullres] if self.wants("fullres") else []
        return steps


def bench_model(name: str, cfg: BenchConfig, ctx: BenchContext) -> dict[str, Any]:
    """Measure one model; returns {key: value for ALL_KEYS} plus "errors" {measurement: one line}."""
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device, size = torch.device(ctx.device), tuple(cfg.size)
    torch.manual_seed(0)
    model = build(name, size).to(device)
    x, y = make_batch(cfg.batch, size, device)
    bench = ModelBench(name, cfg, ctx, model, x, y, x[: ctx.infer_batch].clone())
    bench.out["params"] = count_params(model)
    bench.record("gflops", "gflops", lambda: forward_gflops(model, size))
    for step in bench.steps():
        step()
    bench.out.update(loader_img_s_cache=ctx.loader_img_s_cache, loader_img_s_png=ctx.loader_img_s_png, peak_rss_mb=round(peak_rss_mb(), 1))
    return {**bench.out, "errors": bench.errors}


def bench_model_isolated(name: str, cfg: BenchConfig, ctx: BenchContext) -> dict[str, Any]:
    """``bench_model`` in a spawned process: OpenMP is limited to the run's thread count before torch starts it."""
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.threads or torch.get_num_threads()))
    return bench_model(name, cfg, ctx)
