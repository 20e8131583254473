"""The measurements: timing, the machine's matmul roof and memory bandwidth, train/infer/full-resolution/loading speed."""

from __future__ import annotations

import contextlib
import copy
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cityseg import labels
from cityseg.errors import CitysegError
from cityseg.runtime import autocast, native_bf16, resolve_fast
from cityseg.tools.benchmark.config import FULLRES, NUM_CLASSES


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
    return f"cpu: {cpu_name()} ({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}, bf16 native: {'yes' if native_bf16() else 'no'})"


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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], warmup: int, iters: int, device: torch.device = torch.device("cpu")) -> float:
    """Median seconds of ``iters`` calls of ``fn`` after ``warmup`` untimed calls (CUDA-synchronised)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


# ---- machine roof ---------------------------------------------------------------------------------
def matmul_gflops(dtype: torch.dtype, device: torch.device, iters: int = 3, max_n: int | None = None, target_s: float = 0.25) -> float:
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
    return {"fp32": matmul_gflops(torch.float32, device, iters, max_n), "bf16": matmul_gflops(torch.bfloat16, device, iters, max_n)}


def memory_bandwidth(device: torch.device, mib: int = 256, iters: int = 3) -> dict[str, float]:
    """Achieved GB/s of two streaming kernels on fp32 tensors of ``mib`` MiB each, best of ``iters``:
    "copy" (``c.copy_(a)``, 2 arrays moved) and "add" (``torch.add(a, b, out=c)``, 3 arrays moved).
    Bytes are counted as STREAM counts them (no write-allocate read), so these are the usable rates.
    The tensors are far larger than any cache, so the rates are the main memory's."""
    n = mib * 2**20 // 4
    a, b, c = (torch.full((n,), float(i + 1), device=device) for i in range(3))
    moved = 4 * n
    best = {}
    for key, fn, arrays in (("copy", lambda: c.copy_(a), 2), ("add", lambda: torch.add(a, b, out=c), 3)):
        seconds = min(time_fn(fn, 1 if not best else 0, 1, device) for _ in range(iters))
        best[key] = arrays * moved / seconds / 1e9
    return best


# ---- models ---------------------------------------------------------------------------------------
def build(name: str, size: tuple[int, int]) -> torch.nn.Module:
    """Build ``name`` for 34 classes (random weights: speed does not depend on them); models tied to one
    input size are built for ``size``."""
    from cityseg.models import build_model, model_options, weightless_options

    options = {"input_size": tuple(size)} if "input_size" in model_options(name) else {}
    model = build_model(name, num_classes=NUM_CLASSES, **options, **weightless_options(name))
    check = getattr(model, "check_input_shape", None)
    if check is not None:
        check(*size)
    return model


def has_fused_path(model: torch.nn.Module) -> bool:
    """True when ``model`` has multi-branch blocks that ``cityseg.models.set_fused`` switches."""
    from cityseg.models.blocks import ParallelBlock

    return any(isinstance(m, ParallelBlock) for m in model.modules())


def fused(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose multi-branch blocks run fused (same function, same weights)."""
    from cityseg.models import set_fused

    return set_fused(copy.deepcopy(model), True)


def make_batch(batch: int, size: tuple[int, int], device: torch.device, seed: int = 0):
    """The fixed random inputs every measurement uses: images in [0, 1) and labelIds 0..33."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, *size, generator=g)
    y = torch.randint(0, NUM_CLASSES, (batch, *size), generator=g)
    return x.to(device), y.to(device)


def train_step_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, fast: bool) -> Callable[[], float]:
    """One training step (forward + CE + backward + Adam) as a closure; ``model`` is trained in place.
    A model with training-only heads pays for them as in training: the CE is summed over every output
    with one channel per class (a one-channel boundary head gets a BCE), each resized to the full crop
    (``train.loss_scale = 1``, the papers' setting)."""
    from cityseg.train.losses import as_outputs, resize_outputs

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
        loss = sum(
            F.cross_entropy(v.float(), y, ignore_index=255) if v.shape[1] > 1 else F.binary_cross_entropy_with_logits(v.float()[:, 0], (y > 0).float())
            for v in resize_outputs(as_outputs(out), y.shape[-2:]).values()
        )
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
    """Export ``model`` with ``cityseg.infer.onnx.export_onnx`` (the same path as ``cityseg export``)."""
    from cityseg.checkpoint import Checkpoint
    from cityseg.infer.onnx import export_onnx
    from cityseg.models import model_options

    options = {"input_size": list(size)} if "input_size" in model_options(name) else {}
    ckpt = Checkpoint(
        model={k: v.detach().cpu() for k, v in model.state_dict().items()},
        model_name=name,
        model_options=options,
        label_mode="labelIds",
        num_classes=NUM_CLASSES,
        class_names=list(labels.LABELID_NAMES),
        input_size=list(size),
    )
    return Path(export_onnx(ckpt.to_dict(), folder / f"{name}-{size[0]}x{size[1]}.onnx", size=size)["path"])


def onnx_infer_fn(path: Path, x: torch.Tensor) -> Callable[[], Any]:
    from cityseg.infer.onnx import load_onnx

    session, _ = load_onnx(path, threads=torch.get_num_threads())
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(x.detach().cpu().numpy())}
    return lambda: session.run(None, feed)


def int8_rates(path: Path, shared: dict[str, Any], xi: torch.Tensor, rate: Callable, out: dict[str, Any]) -> None:
    """Quantise the fp32 export ``path`` (calibrated on the benchmark's frames) and time it like fp32 ORT;
    the argmax agreement with fp32 is taken on the full-resolution benchmark frame at the model's size."""
    from cityseg.infer.predictor import Predictor
    from cityseg.infer.quantize import quantize_onnx

    int8 = quantize_onnx(path, path.with_name(path.stem + "-int8.onnx"), shared["calib_root"], shared.get("calib_split", "train"), 8)["path"]
    try:
        out["infer_img_s_onnx_int8"] = rate(xi.shape[0], lambda: onnx_infer_fn(int8, xi))
        if shared.get("fullres_image") is not None:
            image = np.load(shared["fullres_image"])
        else:
            from cityseg import io
            from cityseg.data import layout

            image = io.read_image(layout.find_samples(shared["calib_root"], shared.get("calib_split", "train"), require_labels=False)[-1].image)
        a, b = (Predictor.from_onnx(p).predict_model_size(image) for p in (path, int8))
        out["int8_argmax_agreement"] = float((a == b).mean())
    finally:
        with contextlib.suppress(OSError):
            int8.unlink()


def variant_rates(model: torch.nn.Module, x: torch.Tensor, iters: int, cache: Path) -> dict[str, Any]:
    """Every inference variant the measured fast path chooses from, timed (wall clock) in interleaved rounds,
    and the variant ``fastpath.choose`` picks in its own, earlier trial (a fresh ``cache`` file, as on a
    first use): {"infer_variants_img_s": {label: img/s}, "infer_variant_pick", and, where there is an
    alternative, "infer_variant_best_alternative" (the fastest other variant) and
    "infer_variant_pick_ratio" (the pick's time over that variant's time)}."""
    from cityseg.infer import fastpath

    with contextlib.suppress(OSError):
        cache.unlink()
    pick = fastpath.choose(model, tuple(x.shape), x.device, path=cache).label()
    _, times = fastpath.trial(model, tuple(x.shape), x.device, rounds=iters, timer=time.perf_counter)
    out: dict[str, Any] = {"infer_variants_img_s": {k: x.shape[0] / v for k, v in times.items()}, "infer_variant_pick": pick}
    others = {k: v for k, v in times.items() if k != pick}
    if others:
        best = min(others, key=others.__getitem__)
        out["infer_variant_best_alternative"], out["infer_variant_pick_ratio"] = best, times[pick] / others[best]
    return out


def fullres_fn(model: torch.nn.Module, size: tuple[int, int], image: np.ndarray, device: torch.device):
    """Full-resolution prediction with the fast path (``Predictor.predict``: resize, model, upsample, argmax)."""
    from cityseg.infer.predictor import Predictor

    channels_last, dtype = fast_path(device, training=False)
    predictor = Predictor(model, "labelIds", size, device=device, channels_last=channels_last, bf16=dtype == torch.bfloat16, num_classes=NUM_CLASSES)
    return lambda: predictor.predict(image)


def fullres_onnx_fn(path: Path, image: np.ndarray):
    """The same full-resolution prediction with the model exported to ONNX, run on onnxruntime."""
    from cityseg.infer.predictor import Predictor

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


def loader_throughput(
    root: Path,
    size: tuple[int, int],
    batch: int,
    cache: bool,
    warmup: int,
    iters: int,
    cache_dir: Path | None = None,
    split: str = "train",
    limit: int | None = None,
) -> float:
    """Images/s of a single-process ``DataLoader`` over the split, from the uint8 cache or the PNGs."""
    from cityseg.data.dataset import CityscapesDataset

    ds = CityscapesDataset(root, split, size=size, cache=cache, cache_dir=cache_dir)  # builds the cache (untimed)
    n = len(ds) if limit is None else min(limit, len(ds))
    # a cached pass over a handful of images takes microseconds: cycle over them to at least 4 batches
    return dataloader_rate(ds, batch, max(n, 4 * batch) if cache else n, 0, warmup, iters, limit=n)


def dataloader_rate(ds: Any, batch: int, count: int, workers: int, warmup: int, iters: int, limit: int | None = None) -> float:
    """Images/s of a ``DataLoader`` with ``workers`` processes drawing ``count`` samples, cycling over the
    first ``limit`` of ``ds``. Workers persist across the passes, so their start-up is in the warm-up only."""
    from torch.utils.data import DataLoader

    n = len(ds) if limit is None else min(limit, len(ds))
    sampler = [i % n for i in range(count)]
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, persistent_workers=workers > 0)

    def run():
        for _ in loader:
            pass

    return count / time_fn(run, max(warmup, 1 if workers else 0), iters)
