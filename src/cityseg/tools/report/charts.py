"""The page's charts as inline SVG strings: line curves per epoch, a sorted bar chart, a heatmap.

Every mark a reader may want the number of carries ``data-tip`` (the page's script shows it on hover) and
a ``<title>`` (the browser's own tooltip, and what a screen reader says). Coordinates are in a fixed
``viewBox``; the page scales the SVG to its column width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

#: viridis at five stops: enough for a smooth 0..1 ramp without importing matplotlib for a colour map
_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float64)


@dataclass
class Series:
    """One line of a chart: its name, CSS colour and (x, y) points; y None is a gap."""

    name: str
    color: str
    points: list[tuple[float, float | None]]
    dashed: bool = False


def hex_color(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb))


def viridis(v: float) -> str:
    """The colour of ``v`` in 0..1 on the viridis ramp (grey for NaN)."""
    if v is None or not math.isfinite(v):
        return "#e5e5e5"
    x = min(max(v, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    i = min(int(x), len(_VIRIDIS) - 2)
    return hex_color(np.rint(_VIRIDIS[i] + (x - i) * (_VIRIDIS[i + 1] - _VIRIDIS[i])))


def _mark(tip: str) -> str:
    """Attributes and child of a hoverable mark: the tip for the page's script and a ``<title>``."""
    return f' data-tip="{escape(tip)}"', f"<title>{escape(tip)}</title>"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering lo..hi (1, 2, 5 x a power of ten apart)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    v = first
    while v <= hi + step * 0.5:
        ticks.append(round(v, 12))
        v += step
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """1, 2, 5 x powers of ten between lo and hi (at least the decades around them)."""
    ticks = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10.0**e
            if lo / 1.0001 <= v <= hi * 1.0001:
                ticks.append(v)
    if len(ticks) < 2:
        ticks = sorted({lo, hi, *ticks})
    return ticks


def line_chart(
    series: list[Series],
    title: str,
    fmt: Callable[[float], str] = lambda v: f"{v:.4g}",
    log_y: bool = False,
    y_range: tuple[float, float] | None = None,
    width: int = 460,
    height: int = 250,
) -> str:
    """Lines over epochs with a dot per value (hover shows it); ``log_y`` when every value is positive."""
    left, right, top, bottom = 52, 12, 30, 34
    values = [y for s in series for _, y in s.points if y is not None and math.isfinite(y)]
    xs = [x for s in series for x, _ in s.points]
    if not values or not xs:
        return f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}"><text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="muted">{escape(title)}: no values</text></svg>'
    log_y = log_y and min(values) > 0
    if y_range is not None:
        lo, hi = y_range
    elif log_y:
        lo, hi = min(values), max(values)
        if hi / lo < 1.5:
            lo, hi = lo / 1.25, hi * 1.25
    else:
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
        if min(values) >= 0 > lo:
            lo = 0.0
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    ticks = log_ticks(lo, hi) if log_y else nice_ticks(lo, hi)
    if not log_y:
        lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])
    fy = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + ph - (fy(y) - fy(lo)) / ((fy(hi) - fy(lo)) or 1.0) * ph

    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">']
    out.append(f'<text x="{left}" y="16" class="chart-title">{escape(title)}{" (log scale)" if log_y else ""}</text>')
    for t in ticks:
        y = py(t)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{escape(fmt(t))}</text>')
    for x in nice_ticks(x0, x1, min(8, int(x1 - x0) or 1)):
        if x0 <= x <= x1 and float(x).is_integer():
            out.append(f'<text x="{px(x):.1f}" y="{height - bottom + 16}" text-anchor="middle" class="tick">{int(x)}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle" class="tick">epoch</text>')
    out.append(
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}" class="axis"/><line x1="{left}" x2="{width - right}" y1="{top + ph}" y2="{top + ph}" class="axis"/>'
    )
    legend_x = width - right
    for s in reversed(series):
        legend_x -= 14 + 6.2 * len(s.name)
        out.append(
            f'<g class="legend"><rect x="{legend_x:.1f}" y="8" width="10" height="10" fill="{s.color}"/><text x="{legend_x + 13:.1f}" y="17" class="tick">{escape(s.name)}</text></g>'
        )
    for s in series:
        pts = [(x, y) for x, y in s.points if y is not None and math.isfinite(y) and (not log_y or y > 0)]
        if len(pts) > 1:
            path = " ".join(f"{px(x):.1f},{py(min(max(y, lo), hi)):.1f}" for x, y in pts)
            dash = ' stroke-dasharray="5 4"' if s.dashed else ""
            out.append(f'<polyline points="{path}" fill="none" stroke="{s.color}" stroke-width="2"{dash}/>')
        for x, y in pts:
            attrs, title_el = _mark(f"{s.name}, epoch {x:g}: {fmt(y)}")
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(min(max(y, lo), hi)):.1f}" r="4" fill="{s.color}" class="pt"{attrs}>{title_el}</circle>')
    out.append("</svg>")
    return "".join(out)


def bar_chart(rows: list[dict], title: str, width: int = 620) -> str:
    """Horizontal bars, one row per class in the given order: ``{"name", "color", "iou", "iiou"}`` with
    values in 0..1 or None; iIoU (instance classes only) is a thin dark bar under the IoU bar."""
    left, right, row_h, top = 118, 60, 24, 34
    height = top + row_h * len(rows) + 26
    pw = width - left - right
    out = [f'<svg class="chart bars" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">']
    out.append(f'<text x="4" y="16" class="chart-title">{escape(title)}</text>')
    out.append(
        f'<g class="legend"><rect x="{width - 190}" y="7" width="10" height="10" fill="#888"/><text x="{width - 176}" y="16" class="tick">IoU</text>'
        f'<rect x="{width - 140}" y="10" width="10" height="4" fill="#222"/><text x="{width - 126}" y="16" class="tick">iIoU (instances)</text></g>'
    )
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + t * pw
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{height - 22}" class="grid"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle" class="tick">{100 * t:.0f}%</text>')
    for i, r in enumerate(rows):
        y = top + i * row_h
        iou, iiou = r.get("iou"), r.get("iiou")
        tip = f"{r['name']}: IoU {_pct(iou)}" + (f", iIoU {_pct(iiou)}" if iiou is not None else "")
        attrs, title_el = _mark(tip)
        out.append(f'<g class="bar-row"{attrs}>{title_el}')
        out.append(f'<rect x="0" y="{y}" width="{width}" height="{row_h}" class="hit"/>')
        out.append(f'<text x="{left - 8}" y="{y + 16}" text-anchor="end" class="label">{escape(r["name"])}</text>')
        if iou is not None:
            out.append(f'<rect x="{left}" y="{y + 4}" width="{max(iou * pw, 1):.1f}" height="{row_h - 10}" fill="{r["color"]}" class="bar"/>')
        if iiou is not None:
            out.append(f'<rect x="{left}" y="{y + row_h - 6}" width="{max(iiou * pw, 1):.1f}" height="3" fill="#222"/>')
        out.append(f'<text x="{left + pw + 6}" y="{y + 16}" class="tick">{_pct(iou)}</text></g>')
    out.append("</svg>")
    return "".join(out)


def heatmap(norm: np.ndarray, counts: np.ndarray, rows: list[tuple[str, str]], cols: list[str], title: str) -> str:
    """The row-normalised confusion matrix: cells coloured by share, hover shows share and pixel count.
    ``rows``: (name, CSS colour) of each ground-truth class; ``cols``: the predicted classes' names."""
    cell, left, top = 26, 112, 100
    width, height = left + cell * len(cols) + 10, top + cell * len(rows) + 34
    out = [f'<svg class="chart heatmap" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">']
    out.append(f'<text x="4" y="16" class="chart-title">{escape(title)}</text>')
    out.append(f'<text x="{left + cell * len(cols) / 2}" y="{height - 6}" text-anchor="middle" class="tick">prediction →</text>')
    out.append(f'<text x="12" y="{top - 8}" class="tick">ground truth ↓</text>')
    for j, name in enumerate(cols):
        x = left + j * cell + cell / 2
        out.append(f'<text transform="translate({x + 4:.1f},{top - 6}) rotate(-60)" class="tick">{escape(name)}</text>')
    for i, (name, color) in enumerate(rows):
        y = top + i * cell
        out.append(f'<rect x="{left - 16}" y="{y + 7}" width="10" height="12" fill="{color}"/>')
        out.append(f'<text x="{left - 20}" y="{y + 17}" text-anchor="end" class="label">{escape(name)}</text>')
        total = int(counts[i].sum())
        for j, col in enumerate(cols):
            v = float(norm[i, j])
            n = int(counts[i, j])
            tip = f"ground truth {name} → predicted {col}: {_pct(v if math.isfinite(v) else None)} of {total:,} px ({n:,} px)"
            attrs, title_el = _mark(tip)
            x = left + j * cell
            out.append(f'<g class="cell"{attrs}>{title_el}<rect x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" fill="{viridis(v)}"/>')
            if math.isfinite(v) and v >= 0.01:
                ink = "#000" if v > 0.6 else "#fff"
                out.append(
                    f'<text x="{x + cell / 2 - 0.5:.1f}" y="{y + cell / 2 + 3.5:.1f}" text-anchor="middle" class="cell-text" fill="{ink}">{100 * v:.0f}</text>'
                )
            out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"
