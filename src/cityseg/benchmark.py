"""``cityseg benchmark``: training, inference and data-loading speed, measured against the machine's limits.

One run measures, on the same inputs (a fixed random batch; one SynthCity frame at 1024x2048), with
``warmup`` untimed repetitions and then the median of ``iters`` timed ones:

* train step images/s (forward + cross-entropy + backward + Adam step): fp32 eager NCHW (the naive
  baseline) and the project's fast path (``cityseg.runtime.resolve_fast("auto", device)``:
  channels_last, plus bf16 autocast on CPUs with native bf16 / fp16 AMP on CUDA);
* inference images/s: fp32 eager, fast path, onnxruntime (the ``cityseg.export`` ONNX file);
* full-resolution prediction seconds per 1024x2048 image (``cityseg.inference.Predictor``: resize,
  model, bilinear upsampling, argmax);
* data loading images/s through a ``DataLoader`` (batch ``batch``, no workers) from the prepared uint8
  cache and from raw PNGs (full-size SynthCity frames unless ``data_root`` names a dataset);
* params, forward GFLOPs per image (``torch.utils.flop_counter.FlopCounterMode``), the fp32 and bf16
  matmul roof of the machine (large ``torch.mm``), and the peak resident memory (``ru_maxrss``).

Each model runs in its own spawned process by default (``isolate=True``), so ``peak_rss_mb`` is that
model's peak and one model running out of memory does not end the run. ``profile_model`` splits a
train step's time by operator type (convolutions by kernel shape, cat, batch norm, conversions, ...).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cityseg import labels
from cityseg.errors import CitysegError
from cityseg.runtime import autocast, native_bf16, resolve_fast

#: the per-model JSON keys, in order (None where a measurement was skipped or failed)
MODEL_KEYS = (
    "params", "gflops", "train_img_s_fp32", "train_img_s_fast", "infer_img_s_fp32", "infer_img_s_fast",
    "infer_img_s_onnx", "fullres_s_per_img", "loader_img_s_cache", "loader_img_s_png", "peak_rss_mb",
)
#: extra per-model keys: the fast path with the multi-branch blocks fused into one conv per shared input
#: (``set_fused(True)``; the default runs them branch by branch); None for models without such blocks
FUSED_KEYS = ("train_img_s_fast_fused", "infer_img_s_fast_fused")
#: extra per-model key: full-resolution prediction with the model exported to ONNX (onnxruntime)
ONNX_FULLRES_KEY = "fullres_s_per_img_onnx"
#: every per-model key the JSON holds
ALL_KEYS = MODEL_KEYS + FUSED_KEYS + (ONNX_FULLRES_KEY,)
#: what ``skip`` may name
SKIPPABLE = ("train", "infer", "onnx", "fullres", "loader", "fused", "eval")
#: the models of the issue's table, in the order they are reported
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

    def check(self) -> "BenchConfig":
        self.models = list(self.models)
        if not self.models:
            raise CitysegError("no models to benchmark")
        for key in ("batch", "iters", "loader_images", "eval_images"):
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
        from cityseg.models import check_model_name

        for m in self.models:
            check_model_name(m)
        return self


# ---- devices, timing, fast path -------------------------------------------------------------------
def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise CitysegError(f"unknown device {device!r}: choose auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CitysegError(f"device {device!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise CitysegError(f"unsupported device {device!r}: choose auto, cpu or cuda")
    return dev


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """'cpu: AMD EPYC (2 threads, AVX2, bf16 native: no)' or 'cuda: NVIDIA H100 80GB HBM3'."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return (f"cpu: {cpu_name()} ({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()},"
            f" bf16 native: {'yes' if native_bf16() else 'no'})")


def fast_path(device: torch.device, training: bool = True) -> tuple[bool, torch.dtype | None]:
    """The project's default fast path (``cityseg.runtime``): (channels_last, amp dtype)."""
    return resolve_fast("auto", device, training=training)


def fast_name(device: torch.device) -> str:
    """The fast path in words, for training and (where it differs) for inference."""
    def words(cl: bool, dtype: torch.dtype | None) -> str:
        parts = (["channels_last"] if cl else ["NCHW"]) + ([f"{str(dtype).replace('torch.', '')} autocast"] if dtype else ["fp32"])
        return " + ".join(parts)

    train, infer = words(*fast_path(device)), words(*fast_path(device, training=False))
    return train if train == infer else f"training {train}, inference {infer}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], warmup: int, iters: int, device: torch.device = torch.device("cpu")) -> float:
    """Median seconds of ``iters`` calls of ``fn`` after ``warmup`` untimed calls (CUDA-synchronised)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


# ---- machine roof ---------------------------------------------------------------------------------
def matmul_gflops(dtype: torch.dtype, device: torch.device, iters: int = 3, max_n: int | None = None,
                  target_s: float = 0.25) -> float:
    """Achieved GFLOP/s of a square ``torch.mm`` in ``dtype``, best of ``iters`` (a roof is a peak: on a
    shared machine the fastest repetition is the one least disturbed by other processes).

    The side grows from 256 (doubling) until one product takes ``target_s`` or reaches ``max_n``, so an
    emulated dtype (bf16 on a CPU without bf16 instructions, ~100x slower) does not take minutes.
    """
    max_n = max_n or (8192 if device.type == "cuda" else 4096)
    g = torch.Generator().manual_seed(0)
    n = 256
    while True:
        a = torch.randn(n, n, generator=g).to(device, dtype)
        b = torch.randn(n, n, generator=g).to(device, dtype)
        t = time_fn(lambda: torch.mm(a, b), 1, 1, device)
        if t >= target_s or n * 2 > max_n:
            break
        n *= 2
    best = min(time_fn(lambda: torch.mm(a, b), 0, 1, device) for _ in range(iters))
    return 2 * n**3 / best / 1e9


def measure_roof(device: torch.device, iters: int = 3, max_n: int | None = None) -> dict[str, float]:
    return {"fp32": matmul_gflops(torch.float32, device, iters, max_n),
            "bf16": matmul_gflops(torch.bfloat16, device, iters, max_n)}


# ---- models ---------------------------------------------------------------------------------------
def build(name: str, size: tuple[int, int]) -> torch.nn.Module:
    """Build ``name`` for 34 classes; models tied to one input size are built for ``size``."""
    from cityseg.models import build_model, model_options

    options = {"input_size": tuple(size)} if "input_size" in model_options(name) else {}
    model = build_model(name, num_classes=NUM_CLASSES, **options)
    check = getattr(model, "check_input_shape", None)
    if check is not None:
        check(*size)
    return model


def has_fused_path(model: torch.nn.Module) -> bool:
    """True when ``model`` has multi-branch blocks that ``cityseg.models.set_fused`` switches."""
    from cityseg.models.blocks import _Parallel

    return any(isinstance(m, _Parallel) for m in model.modules())


def fused(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose multi-branch blocks run fused (same function, same weights)."""
    from cityseg.models import set_fused

    return set_fused(copy.deepcopy(model), True)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def forward_gflops(model: torch.nn.Module, size: tuple[int, int]) -> float:
    """Forward FLOPs per image (one 3xHxW image, batch 1) in GFLOP, as FlopCounterMode counts them (2 per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    from cityseg.models.blocks import set_fused

    # the model's own FLOPs: the fused path zero-pads smaller kernels, which would inflate the count
    model = set_fused(copy.deepcopy(model).eval(), False)
    x = torch.rand(1, 3, *size, device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops() / 1e9


def make_batch(batch: int, size: tuple[int, int], device: torch.device, seed: int = 0):
    """The fixed random inputs every measurement uses: images in [0, 1) and labelIds 0..33."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, *size, generator=g)
    y = torch.randint(0, NUM_CLASSES, (batch, *size), generator=g)
    return x.to(device), y.to(device)


def train_step_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, fast: bool) -> Callable[[], float]:
    """One training step (forward + CE + backward + Adam) as a closure; ``model`` is trained in place."""
    device = x.device
    channels_last, dtype = fast_path(device) if fast else (False, None)
    model.train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and dtype == torch.float16)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            out = model(x)
        loss = F.cross_entropy(out.float(), y, ignore_index=255)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def infer_fn(model: torch.nn.Module, x: torch.Tensor, fast: bool) -> Callable[[], Any]:
    device = x.device
    channels_last, dtype = fast_path(device, training=False) if fast else (False, None)
    model.eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def run():
        with torch.inference_mode(), autocast(device, dtype):
            return model(x)

    return run


def export_for_ort(name: str, model: torch.nn.Module, size: tuple[int, int], folder: Path) -> Path:
    """Export ``model`` with ``cityseg.export.export_onnx`` (the same path as ``cityseg export``)."""
    from cityseg.checkpoint import Checkpoint
    from cityseg.export import export_onnx
    from cityseg.models import model_options

    options = {"input_size": list(size)} if "input_size" in model_options(name) else {}
    ckpt = Checkpoint(model={k: v.detach().cpu() for k, v in model.state_dict().items()}, model_name=name,
                      model_options=options, label_mode="labelIds", num_classes=NUM_CLASSES,
                      class_names=list(labels.LABELID_NAMES), input_size=list(size))
    return Path(export_onnx(ckpt.to_dict(), folder / f"{name}-{size[0]}x{size[1]}.onnx", size=size)["path"])


def onnx_infer_fn(path: Path, x: torch.Tensor) -> Callable[[], Any]:
    from cityseg.inference import load_onnx

    session, _ = load_onnx(path, threads=torch.get_num_threads())
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(x.detach().cpu().numpy())}
    return lambda: session.run(None, feed)


def fullres_fn(model: torch.nn.Module, size: tuple[int, int], image: np.ndarray, device: torch.device):
    """Full-resolution prediction with the fast path (``Predictor.predict``: resize, model, upsample, argmax)."""
    from cityseg.inference import Predictor

    channels_last, dtype = fast_path(device, training=False)
    predictor = Predictor(model, "labelIds", size, device=device, channels_last=channels_last,
                          bf16=dtype == torch.bfloat16, num_classes=NUM_CLASSES)
    return lambda: predictor.predict(image)


def fullres_onnx_fn(path: Path, image: np.ndarray):
    """The same full-resolution prediction with the model exported to ONNX, run on onnxruntime."""
    from cityseg.inference import Predictor

    predictor = Predictor.from_onnx(path)
    return lambda: predictor.predict(image)


# ---- data loading ---------------------------------------------------------------------------------
def synth_data(folder: Path, images: int) -> Path:
    """Full-size (1024x2048) SynthCity frames in ``folder`` (generated once; reused when present)."""
    from cityseg.data import layout
    from cityseg.data.synth import generate

    root = folder / f"synth-{images}"
    try:
        if len(layout.find_samples(root, "train")) == images:
            return root
    except CitysegError:
        pass
    generate(root, train=images, val=0, test=0, size=FULLRES, seed=0)
    return root


def loader_throughput(root: Path, size: tuple[int, int], batch: int, cache: bool, warmup: int, iters: int,
                      cache_dir: Path | None = None, split: str = "train", limit: int | None = None) -> float:
    """Images/s of a single-process ``DataLoader`` over the split, from the uint8 cache or the PNGs."""
    from torch.utils.data import DataLoader, Subset

    from cityseg.data.dataset import CityscapesDataset

    ds = CityscapesDataset(root, split, size=size, cache=cache, cache_dir=cache_dir)  # builds the cache (untimed)
    n = len(ds) if limit is None else min(limit, len(ds))
    # a cached pass over a handful of images takes microseconds: cycle over them to at least 4 batches
    count = max(n, 4 * batch) if cache else n
    sampler = [i % n for i in range(count)]
    loader = DataLoader(Subset(ds, range(n)) if n < len(ds) else ds, batch_size=batch, sampler=sampler,
                        num_workers=0)

    def run():
        for _ in loader:
            pass

    return count / time_fn(run, warmup, iters)


# ---- `cityseg evaluate --pred-dir` vs the official script ----------------------------------------
#: the official evaluator as its console script runs it (``csEvalPixelLevelSemanticLabeling``); NumPy 2.4
#: removed ``np.in1d``, which cityscapesScripts still calls, so it is restored (same semantics) first
OFFICIAL_EVAL = (
    "import numpy as np\n"
    "if not hasattr(np, 'in1d'):\n"
    "    np.in1d = lambda a, b, invert=False: np.isin(np.asarray(a).ravel(), b, invert=invert)\n"
    "from cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling import main\n"
    "main()\n"
)


def write_eval_predictions(root: Path, out: Path, seed: int = 0) -> Path:
    """One labelId prediction per val frame (``<city>/<stem>_pred.png``): the ground truth with a third of
    it replaced by random labelId blocks, so every score is below 1 and every class path is exercised."""
    from cityseg import io
    from cityseg.data import layout

    rng = np.random.default_rng(seed)
    for s in layout.find_samples(root, "val"):
        pred = io.read_label(s.label).copy()
        h, w = pred.shape
        blocks = rng.integers(0, labels.NUM_LABEL_IDS, (h // 64, w // 64), dtype=np.uint8)
        noise = np.kron(blocks, np.ones((64, 64), np.uint8))
        mask = np.kron(rng.random((h // 64, w // 64)) < 1 / 3, np.ones((64, 64), bool))
        pred[: noise.shape[0], : noise.shape[1]][mask] = noise[mask]
        io.write_png(out / s.city / f"{s.stem}_pred.png", pred)
    return out


def _link_first_frame(root: Path, out: Path) -> Path:
    """A one-frame view of ``root``'s val split (symlinks): with it the per-process start-up is measured."""
    from cityseg.data import layout

    sample = layout.find_samples(root, "val")[0]
    for src in sorted(sample.label.parent.glob(f"{sample.stem}_*")) + [sample.image]:
        dst = out / src.relative_to(root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.symlink_to(src.resolve())
    return out


def eval_speed(work: Path, images: int = 3, repeats: int = 3, val_frames: int = 500) -> dict[str, Any]:
    """Wall time of ``cityseg evaluate --pred-dir`` and of the official ``csEvalPixelLevelSemanticLabeling``
    on full-size (1024x2048) SynthCity val frames, each run as its own process (median of ``repeats``).

    Both are timed on ``images`` frames and on the first frame alone; the difference gives the cost per
    frame without the process start-up, and the projection to the ``val_frames``-frame Cityscapes val split
    (start-up + ``val_frames`` x per frame) is what the target is judged on. The mIoU both report on the
    ``images`` frames must agree (it is the same protocol).
    """
    import json

    from cityseg.data import layout
    from cityseg.data.synth import generate

    if images < 2:
        raise CitysegError(f"--eval-images must be >= 2 (one-frame and {images}-frame runs are compared); got {images}")
    root = work / f"eval-{images}"
    try:
        ok = len(layout.find_samples(root, "val")) == images
    except CitysegError:
        ok = False
    if not ok:
        generate(root, train=0, val=images, test=0, size=FULLRES, seed=2)
    one = _link_first_frame(root, work / f"eval-{images}-first")
    preds = work / f"eval-{images}-pred"
    if not preds.is_dir():
        write_eval_predictions(root, preds)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSCAPES_")}

    def timed(cmd: list[str], env: dict[str, str], what: str) -> float:
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=work)
        elapsed = time.perf_counter() - t0
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise CitysegError(f"{what} failed: {tail}")
        return elapsed

    def ours(data: Path, out_json: Path) -> float:
        cmd = [sys.executable, "-m", "cityseg", "evaluate", "--data", str(data), "--split", "val",
               "--pred-dir", str(preds), "--json", str(out_json), "--no-confusion"]
        return statistics.median(timed(cmd, env, "cityseg evaluate") for _ in range(repeats))

    def official(data: Path, out_dir: Path) -> float:
        out_dir.mkdir(exist_ok=True)
        e = {**env, "CITYSCAPES_DATASET": str(data), "CITYSCAPES_RESULTS": str(preds),
             "CITYSCAPES_EXPORT_DIR": str(out_dir)}
        return statistics.median(timed([sys.executable, "-c", OFFICIAL_EVAL], e, "official evaluator")
                                 for _ in range(repeats))

    ours_n, ours_1 = ours(root, work / "eval-cityseg.json"), ours(one, work / "eval-cityseg-1.json")
    off_n, off_1 = official(root, work / "eval-official"), official(one, work / "eval-official-1")
    ref = json.loads((work / "eval-official" / "resultPixelLevelSemanticLabeling.json").read_text())
    mine = json.loads((work / "eval-cityseg.json").read_text())
    per_ours = max(ours_n - ours_1, 1e-6) / (images - 1)
    per_off = max(off_n - off_1, 1e-6) / (images - 1)
    proj_ours = ours_1 - per_ours + val_frames * per_ours
    proj_off = off_1 - per_off + val_frames * per_off
    return {"images": images, "cityseg_s": round(ours_n, 3), "official_s": round(off_n, 3),
            "speedup": round(off_n / ours_n, 2),
            "cityseg_s_per_frame": round(per_ours, 4), "official_s_per_frame": round(per_off, 4),
            "cityseg_startup_s": round(ours_1 - per_ours, 3), "official_startup_s": round(off_1 - per_off, 3),
            "val_frames": val_frames, "speedup_val_split": round(proj_off / proj_ours, 2),
            "miou_cityseg": mine["mIoU"], "miou_official": ref["averageScoreClasses"],
            "same_miou": bool(abs(mine["mIoU"] - ref["averageScoreClasses"]) < 1e-6)}


# ---- one model ------------------------------------------------------------------------------------
def _guard(errors: dict[str, str], key: str, fn: Callable[[], Any]) -> Any:
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
    out["gflops"] = _guard(errors, "gflops", lambda: forward_gflops(model, size))
    x, y = make_batch(batch, size, device)
    xi = x[:infer_batch].clone()

    def rate(n: int, fn_factory: Callable[[], Callable[[], Any]], it: int = iters) -> float:
        return n / time_fn(fn_factory(), warmup, it, device)

    if "train" not in skip:
        out["train_img_s_fp32"] = _guard(errors, "train_fp32", lambda: rate(
            batch, lambda: train_step_fn(copy.deepcopy(model), x, y, fast=False)))
        out["train_img_s_fast"] = _guard(errors, "train_fast", lambda: rate(
            batch, lambda: train_step_fn(copy.deepcopy(model), x, y, fast=True)))
    if "infer" not in skip:
        out["infer_img_s_fp32"] = _guard(errors, "infer_fp32", lambda: rate(
            infer_batch, lambda: infer_fn(copy.deepcopy(model), xi, fast=False)))
        out["infer_img_s_fast"] = _guard(errors, "infer_fast", lambda: rate(
            infer_batch, lambda: infer_fn(copy.deepcopy(model), xi, fast=True)))
    if "fused" not in skip and has_fused_path(model):
        if "train" not in skip:
            out["train_img_s_fast_fused"] = _guard(errors, "train_fast_fused", lambda: rate(
                batch, lambda: train_step_fn(fused(model), x, y, fast=True)))
        if "infer" not in skip:
            out["infer_img_s_fast_fused"] = _guard(errors, "infer_fast_fused", lambda: rate(
                infer_batch, lambda: infer_fn(fused(model), xi, fast=True)))
    if "onnx" not in skip:
        if device.type == "cuda":
            errors["onnx"] = "skipped: onnxruntime runs on the CPU execution provider only here"
        else:
            def onnx_rates():
                path = export_for_ort(name, model.cpu(), size, Path(shared["work_dir"]))
                try:
                    out["infer_img_s_onnx"] = rate(infer_batch, lambda: onnx_infer_fn(path, xi))
                    if "fullres" not in skip and shared.get("fullres_image") is not None:
                        image = np.load(shared["fullres_image"])
                        out[ONNX_FULLRES_KEY] = time_fn(fullres_onnx_fn(path, image), warmup, iters)
                finally:
                    with contextlib.suppress(OSError):
                        path.unlink()

            _guard(errors, "onnx", onnx_rates)
            model.to(device)
    if "fullres" not in skip and shared.get("fullres_image") is not None:
        image = np.load(shared["fullres_image"])
        out["fullres_s_per_img"] = _guard(errors, "fullres", lambda: time_fn(
            fullres_fn(copy.deepcopy(model), size, image, device), warmup, iters, device))
    out["loader_img_s_cache"] = shared.get("loader_img_s_cache")
    out["loader_img_s_png"] = shared.get("loader_img_s_png")
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    out["errors"] = errors
    return out


def _bench_model_isolated(name: str, cfg: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.get("threads") or torch.get_num_threads()))
    return bench_model(name, cfg, shared)


# ---- the whole run --------------------------------------------------------------------------------
def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
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
        shared: dict[str, Any] = {"device": str(device), "infer_batch": infer_batch, "work_dir": str(work)}
        run_errors: dict[str, str] = {}
        need_frames = "loader" not in cfg.skip or "fullres" not in cfg.skip
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
                shared[key] = _guard(run_errors, key, lambda cached=cached: loader_throughput(
                    data_root, size, cfg.batch, cached, min(cfg.warmup, 1), cfg.iters, work / "cache",
                    loader_split, cfg.loader_images))
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
                        res = pool.submit(_bench_model_isolated, name, plain, shared).result()
                else:
                    res = bench_model(name, plain, shared)
            except CitysegError as e:
                res = {}
                res["errors"] = {"model": str(e)}
            except BrokenProcessPool:
                res = {}
                res["errors"] = {"model": "the benchmark process died (out of memory?)"}
            errors[name] = res.pop("errors", {})
            models[name] = {k: _round(res.get(k)) for k in ALL_KEYS}
            log(f"  {name}: " + ", ".join(f"{k}={models[name][k]}" for k in MODEL_KEYS))
        evaluation = None
        if "eval" not in cfg.skip:
            log(f"timing `cityseg evaluate --pred-dir` vs the official script on {cfg.eval_images} full-size frames ...")
            evaluation = _guard(run_errors, "eval", lambda: eval_speed(work, cfg.eval_images))
            if evaluation:
                log(f"  evaluate: cityseg {evaluation['cityseg_s']:.2f} s, official {evaluation['official_s']:.2f} s"
                    f" -> {evaluation['speedup']:.1f}x")
    meta = {
        "size": list(size), "batch": cfg.batch, "infer_batch": infer_batch, "iters": cfg.iters,
        "warmup": cfg.warmup, "skip": sorted(cfg.skip), "threads": torch.get_num_threads(),
        "fast_path": fast_name(device), "fast_dtype": str(fast_path(device)[1]).replace("torch.", ""),
        "torch": str(torch.__version__), "python": platform.python_version(), "commit": git_commit(),
        "cpu": cpu_name(), "isolated": cfg.isolate, "loader_images": cfg.loader_images,
        "loader_img_s_cache": shared.get("loader_img_s_cache"), "loader_img_s_png": shared.get("loader_img_s_png"),
        "data": str(cfg.data_root) if cfg.data_root else "SynthCity 1024x2048 (generated)",
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
        "seconds": round(time.time() - started, 1), "errors": errors, "run_errors": run_errors,
    }
    return {"roof_gflops": {k: round(v, 1) for k, v in roof.items()}, "device": device_name(device),
            "models": models, "eval_pred_dir": evaluation, "meta": meta}


def _has_split(root: Path, split: str) -> bool:
    from cityseg.data import layout

    try:
        return bool(layout.find_samples(root, split))
    except CitysegError:
        return False


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return None if math.isnan(v) else float(f"{v:.4g}")
    return v


def result_json(result: dict[str, Any]) -> dict[str, Any]:
    """The stable ``--json`` document: {"roof_gflops": {"fp32", "bf16"}, "device", "models": {NAME: {MODEL_KEYS}}}."""
    return {"roof_gflops": dict(result["roof_gflops"]), "device": result["device"],
            "models": {n: {k: m.get(k) for k in ALL_KEYS} for n, m in result["models"].items()},
            "eval_pred_dir": result.get("eval_pred_dir")}


# ---- derived figures and targets ------------------------------------------------------------------
def achieved(m: dict[str, Any], key: str) -> float | None:
    """Achieved GFLOP/s of a throughput key: training counts 3x the forward FLOPs, inference 1x."""
    if m.get("gflops") is None or m.get(key) is None:
        return None
    return (3 if key.startswith("train") else 1) * m["gflops"] * m[key]


def fast_roof(result: dict[str, Any]) -> tuple[str, float]:
    """The roof the fast path computes at: bf16 when it autocasts to bf16, else fp32 (fp16 CUDA: bf16 roof)."""
    dtype = result.get("meta", {}).get("fast_dtype", "None")
    key = "bf16" if dtype in ("bfloat16", "float16") else "fp32"
    return key, result["roof_gflops"][key]


def targets(result: dict[str, Any], eval_speedup: float | None = None) -> list[tuple[str, str, bool | None]]:
    """The issue's targets: (target, measured, passed or None when not measured)."""
    rows: list[tuple[str, str, bool | None]] = []
    models = result["models"]
    ru = models.get("residual_unet")
    roof_key, roof = fast_roof(result)
    if ru and ru.get("train_img_s_fp32") and ru.get("train_img_s_fast"):
        ratio = ru["train_img_s_fast"] / ru["train_img_s_fp32"]
        rows.append(("residual_unet train, fast path >= 2.5x fp32 eager", f"{ratio:.2f}x", ratio >= 2.5))
        frac = achieved(ru, "train_img_s_fast") / roof if achieved(ru, "train_img_s_fast") else None
        bf = result["roof_gflops"]["bf16"]
        if frac is not None:
            rows.append((f"residual_unet train, fast path >= 40% of the {roof_key} matmul roof"
                         + ("" if roof_key == "bf16" else " (bf16 not native: the fast path runs fp32)"),
                         f"{100 * frac:.0f}% of {roof:.0f} GFLOP/s" + (
                             "" if roof_key == "bf16" else f" (bf16 matmul here: {bf:.1f} GFLOP/s, emulated)"),
                         frac >= 0.4))
    else:
        rows.append(("residual_unet train, fast path >= 2.5x fp32 eager", "not measured", None))
    consume = [m["train_img_s_fast"] for m in models.values() if m.get("train_img_s_fast")]
    cache = result.get("meta", {}).get("loader_img_s_cache") or next(
        (m["loader_img_s_cache"] for m in models.values() if m.get("loader_img_s_cache")), None)
    if consume and cache:
        r = cache / max(consume)
        rows.append(("cache loading >= 10x the fastest model's training consumption",
                     f"{cache:.0f} img/s vs {max(consume):.1f} img/s = {r:.0f}x", r >= 10))
    else:
        rows.append(("cache loading >= 10x the fastest model's training consumption", "not measured", None))
    full = [(f"{n}, {backend}", m[key]) for n, m in models.items()
            for key, backend in (("fullres_s_per_img", "PyTorch"), (ONNX_FULLRES_KEY, "onnxruntime")) if m.get(key)]
    size = result.get("meta", {}).get("size", [128, 256])
    if full:
        best = min(full, key=lambda t: t[1])
        others = ", ".join(f"{n} {v:.3f} s" for n, v in full if n != best[0])
        rows.append((f"full-res prediction with a {size[0]}x{size[1]} model < 0.25 s/img",
                     f"{best[1]:.3f} s ({best[0]})" + (f"; {others}" if others else ""), best[1] < 0.25))
    else:
        rows.append(("full-res prediction < 0.25 s/img", "not measured", None))
    ev = result.get("eval_pred_dir")
    what = "`cityseg evaluate --pred-dir` >= 2x faster than the official script"
    if eval_speedup:
        rows.append((what, f"{eval_speedup:.1f}x (given with --eval-speedup)", eval_speedup >= 2))
    elif ev:
        rows.append((what + f" (projected to the {ev['val_frames']}-frame val split)",
                     f"per frame {ev['official_s_per_frame']:.3f} s vs {ev['cityseg_s_per_frame']:.3f} s, start-up "
                     f"{ev['official_startup_s']:.2f} s vs {ev['cityseg_startup_s']:.2f} s -> "
                     f"{ev['speedup_val_split']:.1f}x on {ev['val_frames']} frames; measured on {ev['images']} "
                     f"full-size frames: {ev['official_s']:.2f} s vs {ev['cityseg_s']:.2f} s = {ev['speedup']:.1f}x;"
                     f" same mIoU: {'yes' if ev['same_miou'] else 'NO'}",
                     ev["speedup_val_split"] >= 2 and ev["same_miou"]))
    else:
        rows.append((what, "not measured", None))
    gains = [(n, m["train_img_s_fast"] / m["train_img_s_fast_fused"]) for n, m in models.items()
             if n.startswith("segception") and m.get("train_img_s_fast") and m.get("train_img_s_fast_fused")]
    if gains:
        rows.append(("SegCeption: the default multi-branch path at least as fast as the fused one (train, fast path)",
                     ", ".join(f"{n} {r:.2f}x" for n, r in gains), all(r >= 1 for _, r in gains)))
    return rows


# ---- reports --------------------------------------------------------------------------------------
def _f(v: Any, fmt: str = "{:.1f}") -> str:
    return "—" if v is None else fmt.format(v)


def markdown(result: dict[str, Any], eval_speedup: float | None = None, plot: str | None = None) -> str:
    """The generated part of docs/benchmarks.md: setup, the table, achieved FLOP/s and the targets."""
    meta = result.get("meta", {})
    roof = result["roof_gflops"]
    roof_key, fr = fast_roof(result)
    h, w = meta.get("size", ["?", "?"])
    lines = [
        f"Measured {meta.get('date', '')} on **{result['device']}**, torch {meta.get('torch')}, commit "
        f"`{meta.get('commit')}`; input {h}x{w}, train batch {meta.get('batch')}, inference batch "
        f"{meta.get('infer_batch')}, median of {meta.get('iters')} after {meta.get('warmup')} warm-up; "
        f"fast path = {meta.get('fast_path')}; run took {meta.get('seconds')} s.",
        "",
        f"Matmul roof (large `torch.mm`, same run): fp32 **{roof['fp32']:.0f} GFLOP/s**, bf16 "
        f"**{roof['bf16']:.1f} GFLOP/s**.",
        "",
        "| model | params | GFLOPs/img | train img/s fp32 | train img/s fast | speed-up | infer img/s fp32 | "
        "infer img/s fast | infer img/s ORT | full-res s/img | full-res s/img ORT | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in result["models"].items():
        sp = (m["train_img_s_fast"] / m["train_img_s_fp32"]) if m.get("train_img_s_fast") and m.get("train_img_s_fp32") else None
        lines.append(
            f"| {name} | {_f(m['params'] and m['params'] / 1e6, '{:.2f} M')} | {_f(m['gflops'])} | "
            f"{_f(m['train_img_s_fp32'], '{:.2f}')} | {_f(m['train_img_s_fast'], '{:.2f}')} | {_f(sp, '{:.2f}x')} | "
            f"{_f(m['infer_img_s_fp32'])} | {_f(m['infer_img_s_fast'])} | {_f(m['infer_img_s_onnx'])} | "
            f"{_f(m['fullres_s_per_img'], '{:.3f}')} | {_f(m.get(ONNX_FULLRES_KEY), '{:.3f}')} | "
            f"{_f(m['peak_rss_mb'], '{:.0f}')} |")
    lines += [
        "",
        f"Achieved GFLOP/s (training = 3x forward FLOPs x img/s, inference = 1x) and the fraction of the roof "
        f"(fp32 eager vs the fp32 roof; fast path vs the {roof_key} roof):",
        "",
        "| model | train fp32 | train fast | infer fp32 | infer fast | infer ORT |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in result["models"].items():
        def cell(key: str, r: float) -> str:
            a = achieved(m, key)
            return "—" if a is None else f"{a:.0f} ({100 * a / r:.0f}%)"

        lines.append(f"| {name} | {cell('train_img_s_fp32', roof['fp32'])} | {cell('train_img_s_fast', fr)} | "
                     f"{cell('infer_img_s_fp32', roof['fp32'])} | {cell('infer_img_s_fast', fr)} | "
                     f"{cell('infer_img_s_onnx', roof['fp32'])} |")
    first = {k: meta.get(k) for k in ("loader_img_s_cache", "loader_img_s_png")}
    if first["loader_img_s_cache"] is None:
        first = next(iter(result["models"].values()), {})
    both = [(n, m) for n, m in result["models"].items()
            if m.get("train_img_s_fast_fused") or m.get("infer_img_s_fast_fused")]
    if both:
        lines += [
            "",
            "Multi-branch blocks, per-branch (the models' default) vs fused (parallel convolutions that read the same"
            " input run as one convolution, smaller kernels zero-padded; `cityseg.models.set_fused(model, True)`),"
            " fast path:",
            "",
            "| model | train img/s per-branch | train img/s fused | fused/per-branch | infer img/s per-branch | "
            "infer img/s fused | fused/per-branch |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for n, m in both:
            def gain(a: str, b: str) -> str:
                return f"{m[a] / m[b]:.2f}x" if m.get(a) and m.get(b) else "—"

            lines.append(f"| {n} | {_f(m['train_img_s_fast'], '{:.2f}')} | {_f(m.get('train_img_s_fast_fused'), '{:.2f}')}"
                         f" | {gain('train_img_s_fast_fused', 'train_img_s_fast')} | {_f(m['infer_img_s_fast'])} | "
                         f"{_f(m.get('infer_img_s_fast_fused'))} | {gain('infer_img_s_fast_fused', 'infer_img_s_fast')} |")
    lines += [
        "",
        f"Data loading ({meta.get('data')}, {meta.get('loader_images')} images resized to {h}x{w}, "
        f"`DataLoader` batch {meta.get('batch')}, no workers): prepared cache "
        f"**{_f(first.get('loader_img_s_cache'), '{:.0f}')} img/s**, raw PNGs "
        f"**{_f(first.get('loader_img_s_png'), '{:.1f}')} img/s**.",
        "",
        "Peak RSS is `ru_maxrss`, the process peak: "
        + ("each model ran in its own process, so it is that model's peak." if meta.get("isolated")
           else "all models ran in one process, so later rows include earlier peaks."),
        "",
        "| target | measured | status |",
        "|---|---|---|",
    ]
    for what, measured, ok in targets(result, eval_speedup):
        lines.append(f"| {what} | {measured} | {'n/a' if ok is None else ('PASS' if ok else 'FAIL')} |")
    errs = {n: e for n, e in meta.get("errors", {}).items() if e}
    if meta.get("run_errors"):
        errs = {"(run)": meta["run_errors"], **errs}
    if errs:
        lines += ["", "Not measured:", ""]
        for n, e in errs.items():
            for k, v in e.items():
                lines.append(f"- {n} / {k}: {v}")
    if plot:
        lines += ["", f"![throughput per model, baseline vs fast path]({plot})"]
    return "\n".join(lines) + "\n"


def write_markdown(path: str | os.PathLike, text: str, title: str = "# Benchmarks") -> None:
    """Write ``text`` between the benchmark markers of ``path``, keeping everything outside them."""
    from cityseg.io import atomic_write_text

    path = Path(path)
    block = f"{BEGIN}\n{text.rstrip()}\n{END}"
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if BEGIN in old and END in old and old.index(BEGIN) < old.index(END):
        new = old[: old.index(BEGIN)] + block + old[old.index(END) + len(END):]
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else f"{title}\n\n") + block + "\n"
    atomic_write_text(path, new)


def plot(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Bar chart: train and inference img/s per model, fp32 eager baseline vs fast path (vs ORT)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cityseg.io import atomic_path

    names = list(result["models"])
    meta = result.get("meta", {})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=90)
    panels = [("training img/s", [("fp32 eager", "train_img_s_fp32"), ("fast path", "train_img_s_fast")]),
              ("inference img/s", [("fp32 eager", "infer_img_s_fp32"), ("fast path", "infer_img_s_fast"),
                                   ("onnxruntime", "infer_img_s_onnx")])]
    colors = {"fp32 eager": "#9e9e9e", "fast path": "#1f77b4", "onnxruntime": "#ff7f0e"}
    x = np.arange(len(names))
    for ax, (title, series) in zip(axes, panels):
        width = 0.8 / len(series)
        for i, (label, key) in enumerate(series):
            vals = [result["models"][n].get(key) or 0.0 for n in names]
            ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=label, color=colors[label])
        ax.set_title(title, fontsize=10)
        ax.set_xticks(x, [n.replace("_", "_\n", 1) for n in names], fontsize=7)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    size = meta.get("size", ["?", "?"])
    fig.suptitle(f"{result['device']} — {size[0]}x{size[1]}, train batch {meta.get('batch')}, "
                 f"fast path: {meta.get('fast_path')}", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


# ---- operator profile -----------------------------------------------------------------------------
def _conv_kernel(shapes: list) -> str | None:
    """Kernel 'kh x kw' from a convolution event's input shapes (the first 4-D tensor after the input)."""
    four = [s for s in shapes if isinstance(s, (list, tuple)) and len(s) == 4]
    if len(four) >= 2:
        # forward: (input, weight, ...); backward: (grad_out, input, weight, ...): the weight is the last 4-D one
        k = four[-1][2:]
        return f"{k[0]}x{k[1]}"
    return None


def op_category(name: str, shapes: list) -> str:
    n = name.lower()
    if "conv" in n:
        k = _conv_kernel(shapes)
        return {"1x1": "conv 1x1", "3x3": "conv 3x3"}.get(k, "conv other (kxk, 3x1/1x3, transposed)") \
            if k else "conv (unknown shape)"
    if "batch_norm" in n:
        return "batch norm"
    if n in ("aten::cat", "aten::_cat") or "cat_" in n:
        return "cat / slicing"
    if any(t in n for t in ("copy_", "_to_copy", "aten::to", "contiguous", "clone")):
        return "copies / dtype conversions"
    if any(t in n for t in ("pool", "upsample", "interpolate")):
        return "pooling / upsampling"
    if any(t in n for t in ("_foreach", "adam", "addcdiv", "lerp", "sqrt")):
        return "optimizer"
    if any(t in n for t in ("nll", "log_softmax", "cross_entropy")):
        return "loss"
    if any(t in n for t in ("relu", "threshold", "prelu", "sigmoid", "add", "mul", "sub", "div", "fill", "zero")):
        return "element-wise (act, add, mul)"
    if "slice" in n or "narrow" in n or "split" in n or "select" in n:
        return "cat / slicing"
    return "other"


def profile_model(name: str, size: tuple[int, int] = (128, 256), batch: int = 16, fast: bool = True,
                  steps: int = 2, fused: bool | None = None, device: str = "cpu") -> dict[str, Any]:
    """Self time per operator category of a train step: {"step_s", "categories": {cat: seconds per step}}."""
    from torch.profiler import ProfilerActivity, profile

    dev = resolve_device(device)
    torch.manual_seed(0)
    model = build(name, size).to(dev)
    if fused is not None:
        from cityseg.models import set_fused

        set_fused(model, fused)
    x, y = make_batch(batch, size, dev)
    step = train_step_fn(model, x, y, fast=fast)
    step()
    _sync(dev)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    t0 = time.perf_counter()
    with profile(activities=acts, record_shapes=True) as prof:
        for _ in range(steps):
            step()
        _sync(dev)
    wall = (time.perf_counter() - t0) / steps
    cats: dict[str, float] = {}
    for ev in prof.key_averages(group_by_input_shape=True):
        c = op_category(ev.key, list(ev.input_shapes or []))
        cats[c] = cats.get(c, 0.0) + ev.self_cpu_time_total / 1e6 / steps
    total = sum(cats.values())
    return {"model": name, "fast": fast, "fused": fused, "step_s": wall, "profiled_s": total,
            "categories": dict(sorted(cats.items(), key=lambda kv: -kv[1]))}


def profile_markdown(profiles: Sequence[dict[str, Any]]) -> str:
    cats: list[str] = []
    for p in profiles:
        cats += [c for c in p["categories"] if c not in cats]
    head = [f"{p['model']} ({'fast' if p['fast'] else 'fp32'}"
            + ("" if p["fused"] is None else (", fused" if p["fused"] else ", per-branch")) + ")" for p in profiles]
    lines = ["| op type (self time, ms per step) | " + " | ".join(head) + " |",
             "|---|" + "---:|" * len(profiles)]
    for c in cats:
        row = []
        for p in profiles:
            v = p["categories"].get(c)
            row.append("—" if v is None else f"{1e3 * v:.0f} ({100 * v / p['profiled_s']:.0f}%)")
        lines.append(f"| {c} | " + " | ".join(row) + " |")
    lines.append("| **step wall time (profiled)** | " + " | ".join(f"**{1e3 * p['step_s']:.0f}**" for p in profiles) + " |")
    return "\n".join(lines) + "\n"
