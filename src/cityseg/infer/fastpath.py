"""The inference fast path chosen per model and per CPU by a short timed trial, cached on disk.

Which variant runs fastest (NCHW or channels_last, fp32 or bf16 autocast where the CPU has native bf16,
multi-branch blocks per-branch or fused) differs between models and machines, so ``choose`` times each
candidate on the real input shape the first time and remembers the winner in
``$XDG_CACHE_HOME/cityseg/fast_path.json`` (``~/.cache``), keyed by model, input shape, CPU model, torch
version and thread count. The candidates are timed in interleaved rounds with ``time.process_time`` by
default, so a neighbour's load on a shared machine shifts them all alike. BatchNorm folding is exact and
never slower, so every candidate runs folded. A broken cache file is ignored and rewritten.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from cityseg.errors import CitysegError
from cityseg.io import atomic_write_json, read_json_dict
from cityseg.models.blocks import ParallelBlock
from cityseg.runtime import autocast, cpu_name, native_bf16

CACHE_NAME = "fast_path.json"


@dataclass(frozen=True)
class Choice:
    """One inference variant; ``fused`` is None for models without multi-branch blocks."""

    channels_last: bool = False
    bf16: bool = False
    fused: bool | None = None

    def label(self) -> str:
        parts = ["channels_last" if self.channels_last else "NCHW", "bf16" if self.bf16 else "fp32"]
        if self.fused is not None:
            parts.append("fused" if self.fused else "per-branch")
        return " + ".join(parts)


def has_fused_path(model: torch.nn.Module) -> bool:
    """True when ``model`` has multi-branch blocks that ``cityseg.models.set_fused`` switches."""
    return any(isinstance(m, ParallelBlock) for m in model.modules())


def candidates(model: torch.nn.Module, device: torch.device) -> list[Choice]:
    """Every variant worth timing on ``device``: bf16 only where it is native (emulated bf16 is far slower)."""
    dtypes = (False, True) if device.type == "cpu" and native_bf16() else (False,)
    fused = (False, True) if has_fused_path(model) else (None,)
    return [Choice(cl, bf, fu) for cl in (False, True) for bf in dtypes for fu in fused]


def prepare(model: torch.nn.Module, choice: Choice, size: Sequence[int]) -> torch.nn.Module:
    """An eval-mode copy of ``model`` set up for ``choice``: BN folded, fused setting, memory format."""
    from cityseg.models import set_fused
    from cityseg.models.fold import fold_batchnorm

    model = fold_batchnorm(model, (int(size[0]), int(size[1])))
    if choice.fused is not None:
        set_fused(model, choice.fused)
    return model.to(memory_format=torch.channels_last) if choice.channels_last else model


def run_fn(model: torch.nn.Module, choice: Choice, x: torch.Tensor) -> Callable[[], Any]:
    """One forward pass of a prepared model as a closure, with the input in the choice's layout."""
    if choice.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if choice.bf16 else None

    def run():
        with torch.inference_mode(), autocast(x.device, dtype):
            return model(x)

    return run


def trial(
    model: torch.nn.Module,
    shape: Sequence[int],
    device: torch.device,
    rounds: int = 3,
    timer: Callable[[], float] = time.process_time,
    choices: Sequence[Choice] | None = None,
) -> tuple[Choice, dict[str, float]]:
    """Time every candidate on a ``shape`` input in ``rounds`` interleaved rounds after one warm-up each:
    (fastest choice, {label: median seconds per pass})."""
    choices = list(choices or candidates(model, device))
    x = torch.rand(*shape, device=device)
    runs = [run_fn(prepare(model, c, shape[-2:]).to(device), c, x) for c in choices]
    for fn in runs:
        fn()
    times: list[list[float]] = [[] for _ in choices]
    for _ in range(max(1, rounds)):
        for fn, t in zip(runs, times):
            t0 = timer()
            fn()
            t.append(timer() - t0)
    medians = [statistics.median(t) for t in times]
    best = min(range(len(choices)), key=lambda i: medians[i])
    return choices[best], {c.label(): m for c, m in zip(choices, medians)}


# ---- the cache ----------------------------------------------------------------------------------------
def cache_path() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cityseg" / CACHE_NAME


def device_model(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def cache_key(model: torch.nn.Module, shape: Sequence[int], device: torch.device) -> str:
    """Model class and size, input shape, CPU (or GPU) model, torch version and threads."""
    params = sum(p.numel() for p in model.parameters())
    dims = "x".join(str(int(v)) for v in shape)
    return f"{type(model).__name__}/{params}|{dims}|{device_model(device)}|torch {torch.__version__}|threads {torch.get_num_threads()}"


def read_cache(path: Path) -> dict[str, Any]:
    """The cache as a dict; a missing, unreadable or malformed file reads as empty."""
    return read_json_dict(path) or {}


def _from_entry(entry: Any) -> Choice | None:
    """The choice a cache entry holds, or None when the entry has any other shape (a damaged cache)."""
    c = entry.get("choice") if isinstance(entry, dict) else None
    if not isinstance(c, dict) or "fused" not in c:
        return None
    values = c.get("channels_last"), c.get("bf16"), c["fused"]
    if not all(isinstance(v, bool) for v in values[:2]) or not (values[2] is None or isinstance(values[2], bool)):
        return None
    return Choice(*values)


def choose(
    model: torch.nn.Module, shape: Sequence[int], device: torch.device, path: Path | None = None, timer: Callable[[], float] = time.process_time
) -> Choice:
    """The cached choice for this model, shape and machine, or a fresh trial whose winner is cached."""
    path = path or cache_path()
    key = cache_key(model, shape, device)
    data = read_cache(path)
    cached = _from_entry(data.get(key))
    if cached is not None and cached in candidates(model, device):
        return cached
    best, times = trial(model, shape, device, timer=timer)
    data = read_cache(path)  # another process may have written meanwhile
    data[key] = {"choice": asdict(best), "seconds": {k: round(v, 6) for k, v in times.items()}, "date": time.strftime("%Y-%m-%d %H:%M")}
    with contextlib.suppress(OSError, CitysegError):  # a read-only cache folder (or a folder in the file's place) costs a trial per run, not the prediction
        atomic_write_json(path, data)
    return best
