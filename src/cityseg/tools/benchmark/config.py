"""What a benchmark run measures and the keys of its results."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cityseg.errors import CitysegError
from cityseg.models import check_model_name

#: the per-model JSON keys, in order (None where a measurement was skipped or failed)
MODEL_KEYS = (
    "params",
    "gflops",
    "train_img_s_fp32",
    "train_img_s_fast",
    "infer_img_s_fp32",
    "infer_img_s_fast",
    "infer_img_s_onnx",
    "fullres_s_per_img",
    "loader_img_s_cache",
    "loader_img_s_png",
    "peak_rss_mb",
)
#: extra per-model keys: the fast path with the multi-branch blocks fused into one conv per shared input
#: (``set_fused(True)``; the default runs them branch by branch); None for models without such blocks
FUSED_KEYS = ("train_img_s_fast_fused", "infer_img_s_fast_fused")
#: extra per-model key: full-resolution prediction with the model exported to ONNX (onnxruntime)
ONNX_FULLRES_KEY = "fullres_s_per_img_onnx"
#: extra per-model keys: the statically quantised int8 ONNX model on onnxruntime (img/s, and the fraction of
#: pixels whose class it keeps against fp32 onnxruntime on the benchmark frame), and every inference variant
#: the measured fast path (``cityseg.infer.fastpath``) chooses from ({label: img/s}) with the one it picks
PERF_KEYS = ("infer_img_s_onnx_int8", "int8_argmax_agreement", "infer_variants_img_s", "infer_variant_pick")
#: extra per-model keys: the pick of an independent trial (what ``Predictor(fast="auto")`` runs) timed against
#: the fastest other variant: its label and the pick's time / that variant's time (<= 1.05 meets the target)
CHOICE_KEYS = ("infer_variant_best_alternative", "infer_variant_pick_ratio")
#: extra per-model key (``roofline=True``): inference at ``roofline_size``, batch 1, on the inference fast path:
#: {"gflops", "mbytes", "intensity", "achieved_gflop_s", "attainable_gflop_s", "attainable_fraction", ...,
#: "layers": {layer type: {"gflops", "mbytes", "intensity", ...}}, "time_by_layer_s": {layer type: s}}
ROOFLINE_KEY = "roofline"
#: every per-model key the JSON holds
ALL_KEYS = MODEL_KEYS + FUSED_KEYS + (ONNX_FULLRES_KEY,) + PERF_KEYS + CHOICE_KEYS + (ROOFLINE_KEY,)
#: what ``skip`` may name
SKIPPABLE = ("train", "infer", "onnx", "fullres", "loader", "fused", "eval", "int8", "variants", "augment")
#: the models docs/benchmarks.md reports, in its order
DEFAULT_MODELS = ("residual_unet", "segception", "segception_deep", "vgg16_unet", "residual_inception_unet")
FULLRES = (1024, 2048)
NUM_CLASSES = 34
#: markers of the generated part of a markdown file; text outside them is kept on rewrite
BEGIN, END = "<!-- cityseg-benchmark:begin -->", "<!-- cityseg-benchmark:end -->"


@dataclass
class BenchConfig:
    models: Sequence[str] = DEFAULT_MODELS
    size: tuple[int, int] = (128, 256)
    batch: int = 16
    infer_batch: int | None = None  # None: 4 on CPU (small batches are faster there), ``batch`` on CUDA
    iters: int = 5
    warmup: int = 2
    skip: frozenset[str] = field(default_factory=frozenset)
    device: str = "auto"
    threads: int | None = None
    data_root: str | None = None  # dataset for the loader figures; None: generate full-size SynthCity
    loader_images: int = 6
    eval_images: int = 12  # full-size val frames for the `evaluate --pred-dir` vs official-script timing
    isolate: bool = True
    work_dir: str | None = None  # where synthetic data, caches and ONNX files go (a temp dir by default)
    roof_max_n: int | None = None  # largest matmul side for the roof (None: 4096 CPU, 8192 CUDA)
    int8_checkpoints: Sequence[str] = ()  # trained checkpoints whose int8 val mIoU change is measured
    int8_data: str | None = None  # their dataset (train split calibrates, val split scores)
    int8_limit: int | None = None  # val frames scored (None: all)
    roofline: bool = False  # the roofline section: each model at ``roofline_size``, batch 1 (slow for big models)
    roofline_size: tuple[int, int] = FULLRES
    augment_crop: tuple[int, int] = (1024, 1024)  # the data-path section's crop (the real-time recipes')
    augment_workers: Sequence[int] = (0, 1, 2)
    augment_images: int = 16  # samples per timed pass of the data-path section

    def check(self) -> BenchConfig:
        self.models = list(self.models)
        if not self.models:
            raise CitysegError("no models to benchmark")
        for key in ("batch", "iters", "loader_images", "eval_images", "augment_images"):
            if int(getattr(self, key)) < 1:
                raise CitysegError(f"--{key.replace('_', '-')} must be >= 1; got {getattr(self, key)}")
        if self.warmup < 0:
            raise CitysegError(f"--warmup must be >= 0; got {self.warmup}")
        if self.infer_batch is not None and self.infer_batch < 1:
            raise CitysegError(f"--infer-batch must be >= 1; got {self.infer_batch}")
        bad = set(self.skip) - set(SKIPPABLE)
        if bad:
            raise CitysegError(f"cannot skip {', '.join(sorted(bad))}: choose from {', '.join(SKIPPABLE)}")
        self.skip = frozenset(self.skip)
        self.augment_workers = [int(w) for w in self.augment_workers]
        if not self.augment_workers or min(self.augment_workers) < 0:
            raise CitysegError(f"--augment-workers must be counts >= 0; got {self.augment_workers}")
        for m in self.models:
            check_model_name(m)
        return self


@dataclass
class BenchContext:
    """What the phases before the models hand to every model's measurement (it crosses into each model's
    own process, so it holds plain values): the device, the machine's limits, the shared inputs."""

    device: str
    infer_batch: int
    work_dir: Path
    roof: dict[str, float] = field(default_factory=dict)  # matmul GFLOP/s: {"fp32", "bf16"}
    bandwidth: dict[str, float] = field(default_factory=dict)  # GB/s: {"copy", "add"}
    data_root: Path | None = None  # full-size frames for the loader, full-resolution and int8 figures
    loader_split: str = "train"
    loader_img_s_cache: float | None = None
    loader_img_s_png: float | None = None
    fullres_image: Path | None = None  # one 1024x2048 frame (.npy) for full-resolution prediction
    calib_root: Path | None = None  # int8 calibration frames (None: no int8 measurement)
    calib_split: str = "train"

    @property
    def bandwidth_gb_s(self) -> float:
        return max(self.bandwidth.values())

    def fullres_frame(self) -> np.ndarray | None:
        return None if self.fullres_image is None else np.load(self.fullres_image)


def rounded(v: Any) -> Any:
    """Floats to 4 significant digits (NaN to None), inside dicts and lists too."""
    if isinstance(v, float):
        return None if math.isnan(v) else v if math.isinf(v) else float(f"{v:.4g}")
    if isinstance(v, dict):
        return {k: rounded(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [rounded(x) for x in v]
    return v
