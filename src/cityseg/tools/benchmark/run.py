"""The whole run as a list of phases over one typed state: the machine (roof, bandwidth), the frames and the
loaders, the training data path, every model (each in its own process by default), int8 quality of trained
checkpoints, and the evaluation speed."""

from __future__ import annotations

import contextlib
import multiprocessing
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from cityseg import io
from cityseg.data import layout
from cityseg.errors import CitysegError
from cityseg.runtime import cpu_name
from cityseg.tools.benchmark.augment import augment_loader
from cityseg.tools.benchmark.config import ALL_KEYS, FULLRES, MODEL_KEYS, BenchConfig, BenchContext, rounded
from cityseg.tools.benchmark.eval_speed import eval_speed
from cityseg.tools.benchmark.int8 import int8_quality
from cityseg.tools.benchmark.loader_speed import has_split, loader_throughput, synth_data
from cityseg.tools.benchmark.machine import device_name, fast_name, fast_path, measure_roof, memory_bandwidth, resolve_device
from cityseg.tools.benchmark.one_model import bench_model, bench_model_isolated, guard


@dataclass
class BenchRun:
    """A run in progress: its configuration, the context the models share, and each phase's results."""

    cfg: BenchConfig
    ctx: BenchContext
    log: Callable[[str], None]
    started: float = field(default_factory=time.time)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)  # per model: {measurement: one line}
    run_errors: dict[str, str] = field(default_factory=dict)  # measurements outside the models
    augment: dict[str, Any] | None = None
    int8_quality: list[dict[str, Any]] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None

    @property
    def device(self) -> torch.device:
        return torch.device(self.ctx.device)

    def wants(self, part: str) -> bool:
        return part not in self.cfg.skip


# ---- the phases -----------------------------------------------------------------------------------
def machine_phase(run: BenchRun) -> None:
    """The matmul roof and the memory bandwidth: the limits every model is measured against."""
    iters = max(3, min(run.cfg.iters, 5))
    run.log(f"device: {device_name(run.device)}; fast path: {fast_name(run.device)}")
    run.log("measuring the matmul roof ...")
    run.ctx.roof = measure_roof(run.device, iters=iters, max_n=run.cfg.roof_max_n)
    run.log(f"roof: fp32 {run.ctx.roof['fp32']:.0f} GFLOP/s, bf16 {run.ctx.roof['bf16']:.1f} GFLOP/s")
    run.ctx.bandwidth = memory_bandwidth(run.device, iters=iters)
    run.log(f"memory bandwidth: copy {run.ctx.bandwidth['copy']:.1f} GB/s, add {run.ctx.bandwidth['add']:.1f} GB/s")


def data_phase(run: BenchRun) -> None:
    """The full-size frames (a dataset, or SynthCity generated once), the loader figures, the full-resolution
    frame and the int8 calibration frames."""
    cfg, ctx = run.cfg, run.ctx
    if not {"loader", "fullres", "int8", "augment"} - cfg.skip:
        return
    if cfg.data_root:
        ctx.data_root = layout.resolve_root(cfg.data_root)
    else:
        run.log(f"generating {cfg.loader_images} full-size SynthCity frames ...")
        ctx.data_root = synth_data(ctx.work_dir, cfg.loader_images)
    splits = [s for s in ("train", "val") if has_split(ctx.data_root, s)]
    ctx.loader_split = splits[0] if splits else "train"
    if run.wants("loader"):
        if not splits:
            raise CitysegError(f"{ctx.data_root}: no labelled train or val images for the loader benchmark")
        run.log("measuring data loading (cache, PNG) ...")
        for cached in (True, False):
            key = "loader_img_s_cache" if cached else "loader_img_s_png"
            rate = guard(run.run_errors, key, lambda cached=cached: loader_rate(run, cached))
            setattr(ctx, key, rate)
    if run.wants("fullres") or run.wants("int8"):
        ctx.fullres_image = fullres_frame(ctx)
    if run.wants("int8"):
        ctx.calib_root, ctx.calib_split = ctx.data_root, ctx.loader_split


def loader_rate(run: BenchRun, cached: bool) -> float:
    cfg, ctx = run.cfg, run.ctx
    return loader_throughput(
        ctx.data_root, tuple(cfg.size), cfg.batch, cached, min(cfg.warmup, 1), cfg.iters, ctx.work_dir / "cache", ctx.loader_split, cfg.loader_images
    )


def fullres_frame(ctx: BenchContext) -> Path:
    """The first frame of the loader split (else of the test split) at 1024x2048, saved for the models' processes."""
    split = ctx.loader_split if has_split(ctx.data_root, ctx.loader_split) else "test"
    image = io.read_image(layout.find_samples(ctx.data_root, split, require_labels=False)[0].image)
    if image.shape[:2] != FULLRES:
        image = cv2.resize(image, FULLRES[::-1], interpolation=cv2.INTER_LINEAR)
    path = ctx.work_dir / "fullres.npy"
    np.save(path, image)
    return path


def augment_phase(run: BenchRun) -> None:
    """The training data path at full resolution: a recipe's augmentation per worker count and per step."""
    cfg, ctx = run.cfg, run.ctx
    if not run.wants("augment"):
        return
    run.log(f"measuring the training data path ({cfg.augment_crop[0]}x{cfg.augment_crop[1]} crops, workers {cfg.augment_workers}) ...")
    iters = max(1, min(cfg.iters, 3))
    run.augment = guard(
        run.run_errors,
        "augment",
        lambda: augment_loader(ctx.data_root, ctx.loader_split, cfg.augment_crop, cfg.augment_workers, cfg.augment_images, iters=iters),
    )


def models_phase(run: BenchRun) -> None:
    """Every model, each in its own spawned process unless ``isolate`` is off."""
    for name in run.cfg.models:
        run.log(f"benchmarking {name} ...")
        try:
            res = measure_model(name, run.cfg, run.ctx)
        except CitysegError as e:
            res = {"errors": {"model": str(e)}}
        except BrokenProcessPool:
            res = {"errors": {"model": "the benchmark process died (out of memory?)"}}
        run.errors[name] = res.pop("errors", {})
        run.models[name] = {k: rounded(res.get(k)) for k in ALL_KEYS}
        run.log(f"  {name}: " + ", ".join(f"{k}={run.models[name][k]}" for k in MODEL_KEYS))


def measure_model(name: str, cfg: BenchConfig, ctx: BenchContext) -> dict[str, Any]:
    if not cfg.isolate:
        return bench_model(name, cfg, ctx)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(bench_model_isolated, name, cfg, ctx).result()


def int8_phase(run: BenchRun) -> None:
    """int8 against fp32 onnxruntime on trained checkpoints: speed and the val mIoU it costs."""
    cfg = run.cfg
    for ckpt in cfg.int8_checkpoints:
        run.log(f"int8 vs fp32 onnxruntime: {ckpt} on {cfg.int8_data or 'the default dataset'} ...")
        got = guard(
            run.run_errors, f"int8 {ckpt}", lambda ckpt=ckpt: int8_quality(ckpt, cfg.int8_data, run.ctx.work_dir, limit=cfg.int8_limit, iters=cfg.iters)
        )
        if got:
            run.int8_quality.append(got)
            run.log(f"  {got['model']}: mIoU {got['miou_fp32']} -> {got['miou_int8']}, {got['img_s_fp32']:.1f} -> {got['img_s_int8']:.1f} img/s")


def evaluation_phase(run: BenchRun) -> None:
    """``cityseg evaluate --pred-dir`` against the official script on full-size frames."""
    if not run.wants("eval"):
        return
    run.log(f"timing `cityseg evaluate --pred-dir` vs the official script on {run.cfg.eval_images} full-size frames ...")
    run.evaluation = ev = guard(run.run_errors, "eval", lambda: eval_speed(run.ctx.work_dir, run.cfg.eval_images))
    if ev:
        run.log(f"  evaluate: cityseg {ev['cityseg_s']:.2f} s, official {ev['official_s']:.2f} s -> {ev['speedup']:.1f}x")


#: the run, in order; each phase reads what the earlier ones left in the ``BenchRun``
PHASES: tuple[Callable[[BenchRun], None], ...] = (machine_phase, data_phase, augment_phase, models_phase, int8_phase, evaluation_phase)


# ---- the whole run --------------------------------------------------------------------------------
def run_benchmark(config: BenchConfig, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run every phase; returns {"roof_gflops", "memory_bandwidth_gb_s", "device", "models", "eval_pred_dir",
    "int8_quality", "augment_loader", "meta"}.

    ``meta`` (size, batch, fast path, commit, errors per model, ...) is what the markdown report needs;
    ``result_json`` drops it for the stable ``--json`` schema.
    """
    cfg = config.check()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    infer_batch = cfg.infer_batch or (cfg.batch if device.type == "cuda" else min(cfg.batch, 4))
    with contextlib.ExitStack() as stack:
        work = Path(cfg.work_dir) if cfg.work_dir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cityseg-bench-")))
        work.mkdir(parents=True, exist_ok=True)
        run = BenchRun(cfg, BenchContext(str(device), infer_batch, work), log)
        for phase in PHASES:
            phase(run)
    return {
        "roof_gflops": {k: round(v, 1) for k, v in run.ctx.roof.items()},
        "memory_bandwidth_gb_s": {k: round(v, 1) for k, v in run.ctx.bandwidth.items()},
        "device": device_name(device),
        "models": run.models,
        "eval_pred_dir": run.evaluation,
        "int8_quality": run.int8_quality,
        "augment_loader": rounded(run.augment),
        "meta": run_meta(run),
    }


def run_meta(run: BenchRun) -> dict[str, Any]:
    """How the run was made, for the markdown report."""
    cfg, ctx = run.cfg, run.ctx
    return {
        "size": list(cfg.size),
        "batch": cfg.batch,
        "infer_batch": ctx.infer_batch,
        "iters": cfg.iters,
        "warmup": cfg.warmup,
        "skip": sorted(cfg.skip),
        "threads": torch.get_num_threads(),
        "fast_path": fast_name(run.device),
        "fast_dtype": str(fast_path(run.device)[1]).replace("torch.", ""),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "commit": git_commit(),
        "cpu": cpu_name(),
        "isolated": cfg.isolate,
        "loader_images": cfg.loader_images,
        "loader_img_s_cache": ctx.loader_img_s_cache,
        "loader_img_s_png": ctx.loader_img_s_png,
        "data": str(cfg.data_root) if cfg.data_root else "SynthCity 1024x2048 (generated)",
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started)),
        "seconds": round(time.time() - run.started, 1),
        "errors": run.errors,
        "run_errors": run.run_errors,
    }


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
