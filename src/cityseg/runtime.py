"""Hardware policy in one place: the device, native bf16, the fast-path choice, autocast, worker counts.

Training, inference and the benchmark all ask this module, so "what runs fast on this machine" is decided
once. The fast path is channels_last memory layout plus autocast; which parts of it pay off depends on the
device and on whether the model trains or infers (docs/benchmarks.md has the measurements). torch is
imported inside the functions that need it, so the data layer and ``evaluate --pred-dir`` use the worker
helpers here without paying torch's start-up.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import sys
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

FastSetting = bool | str  # True, False or "auto"


def native_bf16() -> bool:
    """True where the CPU has bf16 instructions (AVX512-BF16 / AMX); elsewhere bf16 is emulated and slow."""
    import torch

    return bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())


def resolve_fast(fast: FastSetting, device: torch.device, training: bool = True) -> tuple[bool, torch.dtype | None]:
    """``(channels_last, autocast dtype or None)`` for the ``fast`` setting on ``device``.

    ``auto`` on CPU turns on channels_last + bf16 autocast where the CPU has native bf16. Without it bf16
    is emulated and stays off, and channels_last is used for inference only, because in fp32 it slows the
    training of the seed models while it speeds up their inference. CUDA: channels_last + fp16 autocast
    (training pairs it with a GradScaler).
    """
    import torch

    if device.type == "cuda":
        return (True, torch.float16) if fast in (True, "auto") else (False, None)
    if fast is True:
        return True, torch.bfloat16
    if fast == "auto":
        if native_bf16():
            return True, torch.bfloat16
        return (not training), None
    return False, None


def train_channels_last(model: Any, channels_last: bool) -> bool:
    """Whether training ``model`` uses channels_last: when the fast path asks for it and the model does not
    opt out (``train_channels_last = False``, for layers whose gradients that layout gets wrong)."""
    return channels_last and bool(getattr(model, "train_channels_last", True))


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """A model input on ``device``, in channels_last layout when the fast path uses it."""
    import torch

    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def default_workers(limit: int = 4) -> int:
    """Worker threads/processes for decoding: the CPU count, at most ``limit`` (more only contend)."""
    return max(1, min(limit, os.cpu_count() or 1))


def process_context() -> multiprocessing.context.BaseContext:
    """Start method for worker processes: fork where the platform has it (no re-import), else spawn."""
    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


def environment(data_root: str | os.PathLike | None = None) -> dict[str, object]:
    """What a run was made with, for ``environment.json`` and the run report: the command line, package
    versions and the CPU / GPU names (the hardware explains the speed and the bf16 path)."""
    import torch

    versions = {}
    for name in ("cityseg", "torch", "numpy", "opencv-python-headless", "pillow", "matplotlib", "onnxruntime"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    if program == "__main__.py":  # ``python -m cityseg`` runs the same command as the console script
        program = "cityseg"
    return {
        "command": " ".join([program, *sys.argv[1:]]),
        "data_root": None if data_root is None else os.fspath(data_root),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "native_bf16": native_bf16(),
        "gpus": gpus,
        "packages": versions,
    }


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"
