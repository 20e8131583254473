"""Roofline position of one model's inference: FLOPs, bytes moved, arithmetic intensity, achieved vs attainable.

The bytes are a lower bound: every leaf module is assumed to read each of its input tensors and its weights
once and to write each of its outputs once, at the element size of the dtype the fast path computes in
(bf16 autocast: 2 bytes, fp32: 4). Functional glue between modules (``F.interpolate``, ``torch.cat``,
residual additions written in ``forward``) and re-reads of inputs that do not fit in cache are not counted,
so the real traffic is higher and the intensity lower. The attainable rate is the roofline's
``min(compute roof, intensity x memory bandwidth)``; a layer mix whose intensity puts it left of the ridge
(``roof / bandwidth`` FLOP/byte) cannot reach the compute roof however well its kernels are written.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cityseg.infer import fastpath
from cityseg.models import model_options
from cityseg.models.fold import leaves
from cityseg.tools.benchmark.machine import fast_path, time_fn
from cityseg.tools.benchmark.model_speed import build
from cityseg.tools.benchmark.profile import layer_category, op_self_times

#: leaf modules that move nothing in eval mode (they return their input)
NO_OP_LEAVES = (nn.Identity, nn.Dropout, nn.Dropout2d)
#: size at which BatchNorm folding traces the model (the fold does not depend on the size)
FOLD_TRACE_SIZE = (256, 512)


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    return (v for v in leaves(value) if isinstance(v, torch.Tensor))


def module_category(module: nn.Module) -> str:
    """A leaf module's layer type, named as ``profile.layer_category`` names the operators it runs."""
    if isinstance(module, nn.modules.conv._ConvNd):
        cin, groups = module.in_channels, module.groups
        if groups > 1 and groups == cin:
            return "conv depthwise"
        if groups > 1:
            return "conv grouped"
        return "conv 1x1" if all(k == 1 for k in module.kernel_size) else "conv dense kxk"
    if isinstance(module, (nn.Upsample,)):
        return "resize"
    if isinstance(module, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd)):
        return "pooling"
    if isinstance(module, (nn.Linear, nn.MultiheadAttention)):
        return "matmul / attention"
    return "norm / activation / element-wise" if not any(True for _ in module.parameters(recurse=False)) or _is_norm(module) else "other"


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm))


def count_traffic(model: nn.Module, x: torch.Tensor, itemsize: int) -> dict[str, Any]:
    """FLOPs and the lower-bound bytes of one forward of ``model`` on ``x``, in total and per layer type:
    {"flops", "bytes", "activation_bytes", "weight_bytes", "layers": [(category, flops, bytes), ...] one per
    leaf call, "unattributed_flops": FLOPs of functional ops outside leaf modules}. Elements are counted at
    ``itemsize`` bytes each whatever their stored dtype, so a model on the meta device (shapes only, no
    compute) gives the figures of any dtype."""
    counter = FlopCounterMode(display=False)
    totals = {"activation": 0, "weight": 0}
    layers: list[tuple[str, float, float]] = []
    started: dict[int, int] = {}

    def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        started[id(module)] = counter.get_total_flops()

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        moved = (sum(t.numel() for t in _tensors((args, kwargs))) + sum(t.numel() for t in _tensors(output))) * itemsize
        own = [*module.parameters(recurse=False), *(b for b in module.buffers(recurse=False) if b.is_floating_point())]
        weights = sum(p.numel() for p in own) * itemsize
        totals["activation"] += moved
        totals["weight"] += weights
        layers.append((module_category(module), float(counter.get_total_flops() - started.pop(id(module))), float(moved + weights)))

    leaves = [m for m in model.modules() if not any(True for _ in m.children()) and not isinstance(m, NO_OP_LEAVES)]
    handles = [m.register_forward_pre_hook(pre_hook, with_kwargs=True) for m in leaves]
    handles += [m.register_forward_hook(hook, with_kwargs=True) for m in leaves]
    try:
        with counter, torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    flops = float(counter.get_total_flops())
    return {
        "flops": flops,
        "bytes": float(totals["activation"] + totals["weight"]),
        "activation_bytes": float(totals["activation"]),
        "weight_bytes": float(totals["weight"]),
        "layers": layers,
        "unattributed_flops": flops - sum(f for _, f, _ in layers),
    }


def layerwise_seconds(layers: list[tuple[str, float, float]], unattributed_flops: float, compute_gflops: float, bandwidth_gb_s: float) -> float:
    """The least time the layers can take when each runs at its own roofline bound,
    ``max(flops / roof, bytes / bandwidth)``; FLOPs outside leaf modules count at the compute roof."""
    bound = sum(max(f / compute_gflops, b / bandwidth_gb_s) for _, f, b in layers) + unattributed_flops / compute_gflops
    return bound / 1e9


def by_category(layers: list[tuple[str, float, float]], compute_gflops: float, bandwidth_gb_s: float) -> dict[str, dict[str, float]]:
    """Per layer type: GFLOPs, MB moved, FLOP/byte, and the fraction of its layers' least time that is
    memory-bound (layers whose bytes / bandwidth exceed their FLOPs / roof)."""
    out: dict[str, dict[str, float]] = {}
    for cat, f, b in layers:
        row = out.setdefault(cat, {"gflops": 0.0, "mbytes": 0.0, "bound_s": 0.0, "memory_bound_s": 0.0})
        row["gflops"] += f / 1e9
        row["mbytes"] += b / 1e6
        t_compute, t_memory = f / compute_gflops / 1e9, b / bandwidth_gb_s / 1e9
        row["bound_s"] += max(t_compute, t_memory)
        row["memory_bound_s"] += t_memory if t_memory > t_compute else 0.0
    for row in out.values():
        row["intensity"] = 1e3 * row["gflops"] / row["mbytes"] if row["mbytes"] else None
        row["memory_bound_share"] = row.pop("memory_bound_s") / row["bound_s"] if row["bound_s"] else 0.0
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["bound_s"]))


def attainable_gflops(intensity: float, compute_gflops: float, bandwidth_gb_s: float) -> float:
    """The roofline: ``min(compute roof, intensity [FLOP/byte] x bandwidth [GB/s])`` in GFLOP/s."""
    return min(compute_gflops, intensity * bandwidth_gb_s)


def roofline_position(flops: float, nbytes: float, seconds: float, compute_gflops: float, bandwidth_gb_s: float) -> dict[str, Any]:
    """Where one timed forward sits on the roofline of a machine with the given roofs (the whole model as
    one kernel of its mean intensity)."""
    intensity = flops / nbytes
    achieved = flops / seconds / 1e9
    attainable = attainable_gflops(intensity, compute_gflops, bandwidth_gb_s)
    return {
        "gflops": flops / 1e9,
        "mbytes": nbytes / 1e6,
        "intensity": intensity,
        "bytes_per_flop": nbytes / flops,
        "seconds": seconds,
        "achieved_gflop_s": achieved,
        "compute_roof_gflop_s": compute_gflops,
        "compute_fraction": achieved / compute_gflops,
        "bandwidth_gb_s": bandwidth_gb_s,
        "ridge_intensity": compute_gflops / bandwidth_gb_s,
        "attainable_gflop_s": attainable,
        "attainable_fraction": achieved / attainable,
        "bound": "memory" if intensity * bandwidth_gb_s < compute_gflops else "compute",
    }


def prepared(name: str, size: tuple[int, int], choice: Any) -> nn.Module:
    """The model as the measured fast path runs it (BN folded, the choice's layout); built for ``size``,
    folded at a smaller trace size unless the model is tied to one input size."""
    model = build(name, size)
    trace = size if "input_size" in model_options(name) or not _accepts(model, FOLD_TRACE_SIZE) else FOLD_TRACE_SIZE
    return fastpath.prepare(model, choice, trace)


def _accepts(model: nn.Module, size: tuple[int, int]) -> bool:
    accepts = getattr(model, "accepts", None)
    return accepts is None or bool(accepts(*size))


def roofline_model(
    name: str,
    size: tuple[int, int],
    roof_gflops: dict[str, float],
    bandwidth_gb_s: float,
    warmup: int = 1,
    iters: int = 3,
    batch: int = 1,
    profile: bool = True,
) -> dict[str, Any]:
    """One model's inference at ``size`` on the project's inference fast path (``runtime.resolve_fast``;
    BN folded): the roofline position against the roof of the dtype it computes in, and, with ``profile``,
    the self time of one forward per layer type ({category: seconds})."""
    device = torch.device("cpu")
    channels_last, dtype = fast_path(device, training=False)
    choice = fastpath.Choice(channels_last=channels_last, bf16=dtype == torch.bfloat16)
    torch.manual_seed(0)
    model = prepared(name, size, choice)
    itemsize = 2 if choice.bf16 else 4
    traffic = count_traffic(copy.deepcopy(model).to("meta"), torch.zeros(batch, 3, *size, device="meta"), itemsize)
    run = fastpath.run_fn(model, choice, torch.rand(batch, 3, *size))
    seconds = time_fn(run, warmup, iters)
    out = roofline_position(traffic["flops"] / batch, traffic["bytes"] / batch, seconds / batch, roof_gflops["bf16" if choice.bf16 else "fp32"], bandwidth_gb_s)
    layerwise = layerwise_seconds(traffic["layers"], traffic["unattributed_flops"], out["compute_roof_gflop_s"], bandwidth_gb_s) / batch
    out.update(
        layerwise_attainable_gflop_s=out["gflops"] / layerwise,
        layerwise_attainable_fraction=layerwise / out["seconds"],
        layers=by_category(traffic["layers"], out["compute_roof_gflop_s"], bandwidth_gb_s),
        size=list(size),
        batch=batch,
        variant=choice.label(),
        weight_mbytes=traffic["weight_bytes"] / 1e6 / batch,
        activation_mbytes=traffic["activation_bytes"] / 1e6 / batch,
    )
    if profile:
        by_layer, wall = op_self_times(run, layer_category)
        out["time_by_layer_s"] = {k: v / batch for k, v in by_layer.items()}
        out["profiled_seconds"] = wall / batch
    return out
