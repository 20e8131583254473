"""The machine: the device, the fast path in words, timing, peak memory, the matmul roof and the memory bandwidth."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from cityseg.errors import CitysegError
from cityseg.runtime import cpu_name, native_bf16, resolve_fast


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


def device_name(device: torch.device) -> str:
    """'cpu: AMD EPYC (2 threads, AVX2, bf16 native: no)' or 'cuda: NVIDIA H100 80GB HBM3'."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {cpu_name()} ({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}, bf16 native: {'yes' if native_bf16() else 'no'})"


def fast_path(device: torch.device, training: bool = True) -> tuple[bool, torch.dtype | None]:
    """The project's default fast path (``cityseg.runtime``): (channels_last, amp dtype)."""
    return resolve_fast("auto", device, training=training)


def _fast_words(channels_last: bool, dtype: torch.dtype | None) -> str:
    parts = (["channels_last"] if channels_last else ["NCHW"]) + ([f"{str(dtype).replace('torch.', '')} autocast"] if dtype else ["fp32"])
    return " + ".join(parts)


def fast_name(device: torch.device) -> str:
    """The fast path in words, for training and (where it differs) for inference."""
    train, infer = _fast_words(*fast_path(device)), _fast_words(*fast_path(device, training=False))
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
    emulated dtype (bf16 on a CPU without bf16 instructions) does not take minutes.
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
