"""The benchmark's report: the stable JSON, the markdown tables between the markers of docs/benchmarks.md, the plot."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cityseg.io import atomic_path, atomic_write_text
from cityseg.tools.benchmark.config import ALL_KEYS, BEGIN, END, ONNX_FULLRES_KEY


def result_json(result: dict[str, Any]) -> dict[str, Any]:
    """The stable ``--json`` document: {"roof_gflops": {"fp32", "bf16"}, "memory_bandwidth_gb_s": {"copy", "add"},
    "device", "models": {NAME: {ALL_KEYS}}, "eval_pred_dir", "int8_quality", "augment_loader"}."""
    return {
        "roof_gflops": dict(result["roof_gflops"]),
        "memory_bandwidth_gb_s": dict(result.get("memory_bandwidth_gb_s") or {}),
        "device": result["device"],
        "models": {n: {k: m.get(k) for k in ALL_KEYS} for n, m in result["models"].items()},
        "eval_pred_dir": result.get("eval_pred_dir"),
        "int8_quality": result.get("int8_quality") or [],
        "augment_loader": result.get("augment_loader"),
    }


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


# ---- reports --------------------------------------------------------------------------------------
def _f(v: Any, fmt: str = "{:.1f}") -> str:
    return "—" if v is None else fmt.format(v)


def markdown(result: dict[str, Any], plot: str | None = None) -> str:
    """The generated part of docs/benchmarks.md: setup, the tables, the loaders and what was not measured."""
    lines = setup_lines(result) + throughput_lines(result) + achieved_lines(result) + fused_lines(result)
    lines += perf_lines(result) + roofline_lines(result) + augment_lines(result) + loader_lines(result) + error_lines(result)
    if plot:
        lines += ["", f"![throughput per model, baseline vs fast path]({plot})"]
    return "\n".join(lines) + "\n"


def setup_lines(result: dict[str, Any]) -> list[str]:
    """When, where and how the run measured, and the machine's roof."""
    meta, roof = result.get("meta", {}), result["roof_gflops"]
    h, w = meta.get("size", ["?", "?"])
    return [
        f"Measured {meta.get('date', '')} on **{result['device']}**, torch {meta.get('torch')}, commit "
        f"`{meta.get('commit')}`; input {h}x{w}, train batch {meta.get('batch')}, inference batch "
        f"{meta.get('infer_batch')}, median of {meta.get('iters')} after {meta.get('warmup')} warm-up; "
        f"fast path = {meta.get('fast_path')}; run took {meta.get('seconds')} s.",
        "",
        f"Matmul roof (large `torch.mm`, same run): fp32 **{roof['fp32']:.0f} GFLOP/s**, bf16 **{roof['bf16']:.1f} GFLOP/s**." + bandwidth_text(result),
    ]


def throughput_lines(result: dict[str, Any]) -> list[str]:
    """The main table: size, cost and every throughput per model."""
    lines = [
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
            f"{_f(m['peak_rss_mb'], '{:.0f}')} |"
        )
    return lines


def achieved_lines(result: dict[str, Any]) -> list[str]:
    """Achieved GFLOP/s per model and measurement, with the fraction of the roof it computes against."""
    roof = result["roof_gflops"]
    roof_key, fr = fast_roof(result)
    lines = [
        "",
        f"Achieved GFLOP/s (training = 3x forward FLOPs x img/s, inference = 1x) and the fraction of the roof "
        f"(fp32 eager vs the fp32 roof; fast path vs the {roof_key} roof):",
        "",
        "| model | train fp32 | train fast | infer fp32 | infer fast | infer ORT |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    columns = (
        ("train_img_s_fp32", roof["fp32"]),
        ("train_img_s_fast", fr),
        ("infer_img_s_fp32", roof["fp32"]),
        ("infer_img_s_fast", fr),
        ("infer_img_s_onnx", roof["fp32"]),
    )
    for name, m in result["models"].items():
        cells = []
        for key, r in columns:
            a = achieved(m, key)
            cells.append("—" if a is None else f"{a:.0f} ({100 * a / r:.0f}%)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def fused_lines(result: dict[str, Any]) -> list[str]:
    """Per-branch against fused multi-branch blocks, for the models that have them."""
    both = [(n, m) for n, m in result["models"].items() if m.get("train_img_s_fast_fused") or m.get("infer_img_s_fast_fused")]
    if not both:
        return []
    lines = [
        "",
        "Multi-branch blocks, per-branch (the models' default) vs fused (parallel convolutions that read the same"
        " input run as one convolution, smaller kernels zero-padded; `cityseg.models.set_fused(model, True)`),"
        " fast path:",
        "",
        "| model | train img/s per-branch | train img/s fused | fused/per-branch | infer img/s per-branch | infer img/s fused | fused/per-branch |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n, m in both:

        def gain(a: str, b: str) -> str:
            return f"{m[a] / m[b]:.2f}x" if m.get(a) and m.get(b) else "—"

        lines.append(
            f"| {n} | {_f(m['train_img_s_fast'], '{:.2f}')} | {_f(m.get('train_img_s_fast_fused'), '{:.2f}')}"
            f" | {gain('train_img_s_fast_fused', 'train_img_s_fast')} | {_f(m['infer_img_s_fast'])} | "
            f"{_f(m.get('infer_img_s_fast_fused'))} | {gain('infer_img_s_fast_fused', 'infer_img_s_fast')} |"
        )
    return lines


def loader_lines(result: dict[str, Any]) -> list[str]:
    """The data-loading figures and what the peak memory column means."""
    meta = result.get("meta", {})
    h, w = meta.get("size", ["?", "?"])
    first = {k: meta.get(k) for k in ("loader_img_s_cache", "loader_img_s_png")}
    if first["loader_img_s_cache"] is None:
        first = next(iter(result["models"].values()), {})
    where = (
        "each model ran in its own process, so it is that model's peak."
        if meta.get("isolated")
        else "all models ran in one process, so later rows include earlier peaks."
    )
    return [
        "",
        f"Data loading ({meta.get('data')}, {meta.get('loader_images')} images resized to {h}x{w}, "
        f"`DataLoader` batch {meta.get('batch')}, no workers): prepared cache "
        f"**{_f(first.get('loader_img_s_cache'), '{:.0f}')} img/s**, raw PNGs "
        f"**{_f(first.get('loader_img_s_png'), '{:.1f}')} img/s**.",
        "",
        "Peak RSS is `ru_maxrss`, the process peak: " + where,
    ]


def error_lines(result: dict[str, Any]) -> list[str]:
    """What was not measured, per model (and for the run), one line each."""
    meta = result.get("meta", {})
    errs = {n: e for n, e in meta.get("errors", {}).items() if e}
    if meta.get("run_errors"):
        errs = {"(run)": meta["run_errors"], **errs}
    if not errs:
        return []
    return ["", "Not measured:", ""] + [f"- {n} / {k}: {v}" for n, e in errs.items() for k, v in e.items()]


def perf_lines(result: dict[str, Any]) -> list[str]:
    """The int8 table and the inference variants the measured fast path chooses from (with its pick)."""
    lines: list[str] = []
    rows = [(n, m) for n, m in result["models"].items() if m.get("infer_img_s_onnx_int8")]
    if rows:
        lines += [
            "",
            "Static int8 ONNX (`cityseg export --int8`: QDQ, uint8 activations, per-channel int8 weights, calibrated on the"
            " benchmark's frames) vs fp32 on onnxruntime; agreement = pixels whose class int8 keeps on the benchmark frame:",
            "",
            "| model | ORT fp32 img/s | ORT int8 img/s | int8/fp32 | argmax agreement |",
            "|---|---:|---:|---:|---:|",
        ]
        for n, m in rows:
            ratio = m["infer_img_s_onnx_int8"] / m["infer_img_s_onnx"] if m.get("infer_img_s_onnx") else None
            agree = m.get("int8_argmax_agreement")
            lines.append(
                f"| {n} | {_f(m.get('infer_img_s_onnx'))} | {_f(m['infer_img_s_onnx_int8'])} | {_f(ratio, '{:.2f}x')} | {_f(agree and 100 * agree, '{:.1f}%')} |"
            )
    quality = result.get("int8_quality") or []
    if quality:
        lines += ["", "Trained checkpoints, int8 vs fp32 onnxruntime (val mIoU in points):", ""]
        lines += ["| model | mIoU fp32 | mIoU int8 | change | img/s fp32 | img/s int8 | int8/fp32 |", "|---|---:|---:|---:|---:|---:|---:|"]
        for q in quality:
            pct = [None if q.get(k) is None else 100 * q[k] for k in ("miou_fp32", "miou_int8")]
            lines.append(
                f"| {q['model']} | {_f(pct[0], '{:.2f}')} | {_f(pct[1], '{:.2f}')} | {_f(q.get('miou_delta_points'), '{:+.2f}')} | "
                f"{_f(q.get('img_s_fp32'))} | {_f(q.get('img_s_int8'))} | {_f(q.get('speedup'), '{:.2f}x')} |"
            )
    variants = [(n, m) for n, m in result["models"].items() if m.get("infer_variants_img_s")]
    if variants:
        labels = sorted({k for _, m in variants for k in m["infer_variants_img_s"]})
        lines += [
            "",
            'Inference variants (img/s; BN folded in all), as `Predictor(fast="auto")` / `predict --fast auto` times them; **bold** = the one it picks:',
            "",
            "| model | " + " | ".join(labels) + " |",
            "|---|" + "---:|" * len(labels),
        ]
        for n, m in variants:
            cells = []
            for k in labels:
                v = m["infer_variants_img_s"].get(k)
                cells.append(("**{}**" if k == m.get("infer_variant_pick") else "{}").format(_f(v)) if v is not None else "—")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    chosen = [(n, m) for n, m in variants if m.get("infer_variant_pick_ratio") is not None]
    if chosen:
        lines += [
            "",
            "The measured fast path's pick (its own trial, as on a first use) against the fastest other variant in the timing"
            " above; time ratio = pick / alternative (the pick is never more than 5% slower when <= 1.05):",
            "",
            "| model | pick | pick ms/img | best alternative | alternative ms/img | time ratio |",
            "|---|---|---:|---|---:|---:|",
        ]
        for n, m in chosen:
            rates, pick, alt = m["infer_variants_img_s"], m["infer_variant_pick"], m["infer_variant_best_alternative"]
            lines.append(f"| {n} | {pick} | {1e3 / rates[pick]:.1f} | {alt} | {1e3 / rates[alt]:.1f} | {m['infer_variant_pick_ratio']:.2f} |")
    return lines


def bandwidth_text(result: dict[str, Any]) -> str:
    bw = result.get("memory_bandwidth_gb_s") or {}
    if not bw:
        return ""
    return f" Memory bandwidth (fp32 tensors far larger than the caches, STREAM byte counts): copy **{bw['copy']:.1f} GB/s**, add **{bw['add']:.1f} GB/s**."


def roofline_lines(result: dict[str, Any]) -> list[str]:
    """The roofline table (one row per model) and the per-layer-type split of FLOPs, bytes and time."""
    rows = [(n, m["roofline"]) for n, m in result["models"].items() if m.get("roofline")]
    if not rows:
        return []
    r0 = rows[0][1]
    h, w = r0["size"]
    lines = [
        "",
        f"Roofline, inference at {h}x{w}, batch 1, inference fast path, BN folded. Bytes: a lower bound (each leaf module"
        " reads its inputs and weights once and writes its outputs once, at the element size of the dtype used;"
        " functional glue not counted). Attainable = min(compute roof, FLOP/byte x bandwidth) with the bandwidth"
        f" above ({r0['bandwidth_gb_s']:.1f} GB/s; ridge {r0['ridge_intensity']:.1f} FLOP/byte); layer-wise ="
        " each leaf layer at its own bound, max(FLOPs / roof, bytes / bandwidth), summed:",
        "",
        "| model | variant | GFLOPs | MB moved | FLOP/byte | s/img | GFLOP/s | % of compute roof | attainable GFLOP/s |"
        " achieved / attainable | layer-wise attainable | achieved / layer-wise |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, r in rows:
        lines.append(
            f"| {n} | {r['variant']} | {r['gflops']:.1f} | {r['mbytes']:.0f} | {r['intensity']:.1f} | {r['seconds']:.3f} | "
            f"{r['achieved_gflop_s']:.0f} | {100 * r['compute_fraction']:.0f}% | {r['attainable_gflop_s']:.0f} | "
            f"{100 * r['attainable_fraction']:.0f}% | {r['layerwise_attainable_gflop_s']:.0f} | {100 * r['layerwise_attainable_fraction']:.0f}% |"
        )
    lines += [
        "",
        "Per layer type (leaf modules; time = torch.profiler self time of one forward, grouped by operator, so the"
        " functional glue and the autocast copies appear as their own rows); memory-bound = share of the type's"
        " layer-wise least time spent in layers left of the ridge:",
        "",
        "| model | layer type | time ms | time share | GFLOPs | MB moved | FLOP/byte | memory-bound |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n, r in rows:
        times, layers = r.get("time_by_layer_s") or {}, r.get("layers") or {}
        total = sum(times.values()) or None
        for cat in list(layers) + [c for c in times if c not in layers]:
            t, lay = times.get(cat), layers.get(cat, {})
            share = None if t is None or total is None else 100 * t / total
            mb = lay.get("memory_bound_share")
            lines.append(
                f"| {n} | {cat} | {_f(t and 1e3 * t)} | {_f(share, '{:.0f}%')} | {_f(lay.get('gflops'), '{:.2f}')} | "
                f"{_f(lay.get('mbytes'), '{:.0f}')} | {_f(lay.get('intensity'))} | {_f(mb and 100 * mb, '{:.0f}%')} |"
            )
    return lines


def augment_lines(result: dict[str, Any]) -> list[str]:
    """The training data path: loader img/s per worker count and each step's cost per image."""
    a = result.get("augment_loader")
    if not a:
        return []
    ch, cw = a["crop"]
    lines = [
        "",
        f"Training data path: the `{a['recipe']}` recipe's dataset from the full-resolution cache ({a['frames']} frames),"
        f" random scale, {ch}x{cw} crop, flip, photometric jitter, normalised tensors; `DataLoader` batch {a['batch']},"
        f" {a['images']} images per pass:",
        "",
        "| workers | " + " | ".join(a["img_s_by_workers"]) + " |",
        "|---|" + "---:|" * len(a["img_s_by_workers"]),
        "| img/s | " + " | ".join(_f(v) for v in a["img_s_by_workers"].values()) + " |",
        "",
        "Per step, one sample at a time in this process with one torch thread (as a worker runs it):",
        "",
        "| step | ms/img | share |",
        "|---|---:|---:|",
    ]
    total = sum(a["step_ms"].values()) or 1.0
    for k, v in a["step_ms"].items():
        lines.append(f"| {k} | {v:.1f} | {100 * v / total:.0f}% |")
    lines.append(f"| **total** | **{total:.1f}** | |")
    return lines


def write_markdown(path: str | os.PathLike, text: str, title: str = "# Benchmarks") -> None:
    """Write ``text`` between the benchmark markers of ``path``, keeping everything outside them."""
    path = Path(path)
    block = f"{BEGIN}\n{text.rstrip()}\n{END}"
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if BEGIN in old and END in old and old.index(BEGIN) < old.index(END):
        new = old[: old.index(BEGIN)] + block + old[old.index(END) + len(END) :]
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else f"{title}\n\n") + block + "\n"
    atomic_write_text(path, new)


def plot(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Bar chart: train and inference img/s per model, fp32 eager baseline vs fast path (vs ORT)."""
    names = list(result["models"])
    meta = result.get("meta", {})
    fig = Figure(figsize=(10, 3.6), dpi=90)
    axes = fig.subplots(1, 2)
    panels = [
        ("training img/s", [("fp32 eager", "train_img_s_fp32"), ("fast path", "train_img_s_fast")]),
        ("inference img/s", [("fp32 eager", "infer_img_s_fp32"), ("fast path", "infer_img_s_fast"), ("onnxruntime", "infer_img_s_onnx")]),
    ]
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
    fig.suptitle(f"{result['device']} — {size[0]}x{size[1]}, train batch {meta.get('batch')}, fast path: {meta.get('fast_path')}", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
