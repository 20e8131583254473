"""The whole run: every model (each in its own process by default), the loaders, the evaluation speed."""

from __future__ import annotations

import contextlib
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cityseg.errors import CitysegError
from cityseg.tools.benchmark.config import ALL_KEYS, FULLRES, MODEL_KEYS, BenchConfig, rounded
from cityseg.tools.benchmark.eval_speed import eval_speed
from cityseg.tools.benchmark.measure import (
    cpu_name,
    device_name,
    fast_name,
    fast_path,
    loader_throughput,
    measure_roof,
    memory_bandwidth,
    resolve_device,
    synth_data,
)
from cityseg.tools.benchmark.one_model import bench_model, bench_model_isolated, guard


# ---- the whole run --------------------------------------------------------------------------------
def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def run_benchmark(config: BenchConfig, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run every measurement; returns {"roof_gflops", "device", "models", "meta"}.

    ``meta`` (size, batch, fast path, commit, errors per model, ...) is what the markdown report needs;
    ``result_json`` drops it for the stable ``--json`` schema.
    """
    cfg = config.check()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    size = tuple(int(v) for v in cfg.size)
    infer_batch = cfg.infer_batch or (cfg.batch if device.type == "cuda" else min(cfg.batch, 4))
    started = time.time()
    with contextlib.ExitStack() as stack:
        work = Path(cfg.work_dir) if cfg.work_dir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cityseg-bench-")))
        work.mkdir(parents=True, exist_ok=True)
        log(f"device: {device_name(device)}; fast path: {fast_name(device)}")
        log("measuring the matmul roof ...")
        roof = measure_roof(device, iters=max(3, min(cfg.iters, 5)), max_n=cfg.roof_max_n)
        log(f"roof: fp32 {roof['fp32']:.0f} GFLOP/s, bf16 {roof['bf16']:.1f} GFLOP/s")
        bandwidth = memory_bandwidth(device, iters=max(3, min(cfg.iters, 5)))
        log(f"memory bandwidth: copy {bandwidth['copy']:.1f} GB/s, add {bandwidth['add']:.1f} GB/s")
        shared: dict[str, Any] = {
            "device": str(device),
            "infer_batch": infer_batch,
            "work_dir": str(work),
            "roof": roof,
            "bandwidth_gb_s": max(bandwidth.values()),
        }
        run_errors: dict[str, str] = {}
        need_frames = bool({"loader", "fullres", "int8", "augment"} - cfg.skip)
        data_root = None
        if need_frames:
            if cfg.data_root:
                from cityseg.data import layout

                data_root = layout.resolve_root(cfg.data_root)
            else:
                log(f"generating {cfg.loader_images} full-size SynthCity frames ...")
                data_root = synth_data(work, cfg.loader_images)
        loader_split = "train"
        if "loader" not in cfg.skip:
            from cityseg.data import layout

            splits = [s for s in ("train", "val") if _has_split(data_root, s)]
            if not splits:
                raise CitysegError(f"{data_root}: no labelled train or val images for the loader benchmark")
            loader_split = splits[0]
            log("measuring data loading (cache, PNG) ...")
            for key, cached in (("loader_img_s_cache", True), ("loader_img_s_png", False)):
                shared[key] = guard(
                    run_errors,
                    key,
                    lambda cached=cached: loader_throughput(
                        data_root, size, cfg.batch, cached, min(cfg.warmup, 1), cfg.iters, work / "cache", loader_split, cfg.loader_images
                    ),
                )
        augment = None
        if "augment" not in cfg.skip:
            from cityseg.tools.benchmark.augment import augment_loader

            log(f"measuring the training data path ({cfg.augment_crop[0]}x{cfg.augment_crop[1]} crops, workers {cfg.augment_workers}) ...")
            augment = guard(
                run_errors,
                "augment",
                lambda: augment_loader(data_root, loader_split, cfg.augment_crop, cfg.augment_workers, cfg.augment_images, iters=max(1, min(cfg.iters, 3))),
            )
        if "fullres" not in cfg.skip:
            from cityseg import io
            from cityseg.data import layout

            split = loader_split if _has_split(data_root, loader_split) else "test"
            sample = layout.find_samples(data_root, split, require_labels=False)[0]
            image = io.read_image(sample.image)
            if image.shape[:2] != FULLRES:
                import cv2

                image = cv2.resize(image, FULLRES[::-1], interpolation=cv2.INTER_LINEAR)
            shared["fullres_image"] = str(work / "fullres.npy")
            np.save(shared["fullres_image"], image)
        if data_root is not None and "int8" not in cfg.skip:
            shared["calib_root"], shared["calib_split"] = str(data_root), loader_split
        plain = {k: (sorted(v) if isinstance(v, frozenset) else v) for k, v in asdict(cfg).items()}
        plain["size"] = list(size)
        models: dict[str, dict[str, Any]] = {}
        errors: dict[str, dict[str, str]] = {}
        for name in cfg.models:
            log(f"benchmarking {name} ...")
            try:
                if cfg.isolate:
                    import multiprocessing

                    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                        res = pool.submit(bench_model_isolated, name, plain, shared).result()
                else:
                    res = bench_model(name, plain, shared)
            except CitysegError as e:
                res = {}
                res["errors"] = {"model": str(e)}
            except BrokenProcessPool:
                res = {}
                res["errors"] = {"model": "the benchmark process died (out of memory?)"}
            errors[name] = res.pop("errors", {})
            models[name] = {k: rounded(res.get(k)) for k in ALL_KEYS}
            log(f"  {name}: " + ", ".join(f"{k}={models[name][k]}" for k in MODEL_KEYS))
        int8_quality = []
        for ckpt in cfg.int8_checkpoints:
            from cityseg.tools.benchmark.int8 import int8_quality as quality

            log(f"int8 vs fp32 onnxruntime: {ckpt} on {cfg.int8_data or 'the default dataset'} ...")
            got = guard(run_errors, f"int8 {ckpt}", lambda ckpt=ckpt: quality(ckpt, cfg.int8_data, work, limit=cfg.int8_limit, iters=cfg.iters))
            if got:
                int8_quality.append(got)
                log(f"  {got['model']}: mIoU {got['miou_fp32']} -> {got['miou_int8']}, {got['img_s_fp32']:.1f} -> {got['img_s_int8']:.1f} img/s")
        evaluation = None
        if "eval" not in cfg.skip:
            log(f"timing `cityseg evaluate --pred-dir` vs the official script on {cfg.eval_images} full-size frames ...")
            evaluation = guard(run_errors, "eval", lambda: eval_speed(work, cfg.eval_images))
            if evaluation:
                log(f"  evaluate: cityseg {evaluation['cityseg_s']:.2f} s, official {evaluation['official_s']:.2f} s -> {evaluation['speedup']:.1f}x")
    meta = {
        "size": list(size),
        "batch": cfg.batch,
        "infer_batch": infer_batch,
        "iters": cfg.iters,
        "warmup": cfg.warmup,
        "skip": sorted(cfg.skip),
        "threads": torch.get_num_threads(),
        "fast_path": fast_name(device),
        "fast_dtype": str(fast_path(device)[1]).replace("torch.", ""),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "commit": git_commit(),
        "cpu": cpu_name(),
        "isolated": cfg.isolate,
        "loader_images": cfg.loader_images,
        "loader_img_s_cache": shared.get("loader_img_s_cache"),
        "loader_img_s_png": shared.get("loader_img_s_png"),
        "data": str(cfg.data_root) if cfg.data_root else "SynthCity 1024x2048 (generated)",
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "errors": errors,
        "run_errors": run_errors,
    }
    return {
        "roof_gflops": {k: round(v, 1) for k, v in roof.items()},
        "memory_bandwidth_gb_s": {k: round(v, 1) for k, v in bandwidth.items()},
        "device": device_name(device),
        "models": models,
        "eval_pred_dir": evaluation,
        "int8_quality": int8_quality,
        "augment_loader": rounded(augment),
        "meta": meta,
    }


def _has_split(root: Path, split: str) -> bool:
    from cityseg.data import layout

    try:
        return bool(layout.find_samples(root, split))
    except CitysegError:
        return False
