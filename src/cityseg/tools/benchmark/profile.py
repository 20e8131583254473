"""Where a train step's or a forward's time goes, by operator type (convolutions by kernel shape or by
depthwise / dense, cat, batch norm, resizes, ...)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from cityseg.models import set_fused
from cityseg.tools.benchmark.machine import resolve_device, sync
from cityseg.tools.benchmark.model_speed import build, make_batch, train_step_fn


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
        return {"1x1": "conv 1x1", "3x3": "conv 3x3"}.get(k, "conv other (kxk, 3x1/1x3, transposed)") if k else "conv (unknown shape)"
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


def _four_d(shapes: list) -> list:
    return [s for s in shapes if isinstance(s, (list, tuple)) and len(s) == 4]


def layer_category(name: str, shapes: list) -> str:
    """An inference operator's layer type: convolutions split into depthwise (one input channel per
    group), grouped, 1x1 and dense kxk by their input and weight shapes; then norm / activation /
    element-wise, resize, pooling, matmul (attention, linear), copies, cat / slicing, other."""
    n = name.lower()
    if "conv" in n:
        four = _four_d(shapes)
        if len(four) < 2:
            return "conv (unknown shape)"
        x, w = four[0], four[-1]
        if w[1] == 1 and x[1] > 1:
            return "conv depthwise"
        if w[1] < x[1]:
            return "conv grouped"
        return "conv 1x1" if tuple(w[2:]) == (1, 1) else "conv dense kxk"
    if any(t in n for t in ("upsample", "interpolate", "grid_sampler")):
        return "resize"
    if "pool" in n:
        return "pooling"
    if any(t in n for t in ("matmul", "bmm", "aten::mm", "addmm", "linear", "softmax", "attention")):
        return "matmul / attention"
    if any(t in n for t in ("copy_", "_to_copy", "aten::to", "contiguous", "clone")):
        return "copies / dtype conversions"
    if n in ("aten::cat", "aten::_cat") or any(t in n for t in ("cat_", "slice", "narrow", "split", "select")):
        return "cat / slicing"
    if any(t in n for t in ("norm", "relu", "gelu", "silu", "hardswish", "sigmoid", "tanh", "clamp", "threshold", "add", "mul", "sub", "div")):
        return "norm / activation / element-wise"
    return "other"


def op_self_times(fn: Callable[[], object], categorise: Callable[[str, list], str], steps: int = 1, cuda: bool = False) -> tuple[dict[str, float], float]:
    """Self CPU seconds per call of ``fn`` by operator category (torch.profiler, shapes recorded), largest
    first, and the wall seconds per call while profiled."""
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts, record_shapes=True) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        wall = (time.perf_counter() - t0) / steps
    cats: dict[str, float] = {}
    for ev in prof.key_averages(group_by_input_shape=True):
        c = categorise(ev.key, list(ev.input_shapes or []))
        cats[c] = cats.get(c, 0.0) + ev.self_cpu_time_total / 1e6 / steps
    return dict(sorted(cats.items(), key=lambda kv: -kv[1])), wall


def profile_model(
    name: str, size: tuple[int, int] = (128, 256), batch: int = 16, fast: bool = True, steps: int = 2, fused: bool | None = None, device: str = "cpu"
) -> dict[str, Any]:
    """Self time per operator category of a train step: {"step_s", "categories": {cat: seconds per step}}."""
    dev = resolve_device(device)
    torch.manual_seed(0)
    model = build(name, size).to(dev)
    if fused is not None:
        set_fused(model, fused)
    x, y = make_batch(batch, size, dev)
    step = train_step_fn(model, x, y, fast=fast)
    step()
    sync(dev)

    def synced_step() -> None:
        step()
        sync(dev)

    cats, wall = op_self_times(synced_step, op_category, steps, cuda=dev.type == "cuda")
    return {"model": name, "fast": fast, "fused": fused, "step_s": wall, "profiled_s": sum(cats.values()), "categories": cats}


def profile_markdown(profiles: Sequence[dict[str, Any]]) -> str:
    cats: list[str] = []
    for p in profiles:
        cats += [c for c in p["categories"] if c not in cats]
    head = [
        f"{p['model']} ({'fast' if p['fast'] else 'fp32'}" + ("" if p["fused"] is None else (", fused" if p["fused"] else ", per-branch")) + ")"
        for p in profiles
    ]
    lines = ["| op type (self time, ms per step) | " + " | ".join(head) + " |", "|---|" + "---:|" * len(profiles)]
    for c in cats:
        row = []
        for p in profiles:
            v = p["categories"].get(c)
            row.append("—" if v is None else f"{1e3 * v:.0f} ({100 * v / p['profiled_s']:.0f}%)")
        lines.append(f"| {c} | " + " | ".join(row) + " |")
    lines.append("| **step wall time (profiled)** | " + " | ".join(f"**{1e3 * p['step_s']:.0f}**" for p in profiles) + " |")
    return "\n".join(lines) + "\n"
