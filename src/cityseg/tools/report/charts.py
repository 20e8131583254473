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


@dataclass(frozen=True)
class Plot:
    """A line chart's drawing area and the mapping of (epoch, value) to its pixels."""

    x0: float
    x1: float
    lo: float
    hi: float
    log_y: bool
    left: float
    top: float
    width: float  # of the drawing area
    height: float

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * self.width

    def clamped(self, y: float) -> float:
        """``y`` inside the value range, so an outlier is drawn at the edge."""
        return min(max(y, self.lo), self.hi)

    def py(self, y: float) -> float:
        f = math.log10 if self.log_y else float
        return self.top + self.height - (f(y) - f(self.lo)) / ((f(self.hi) - f(self.lo)) or 1.0) * self.height


def value_range(values: list[float], log_y: bool, y_range: tuple[float, float] | None) -> tuple[float, float]:
    """The y range: ``y_range`` if given; else the values' span, widened a little (from 0 for non-negative
    linear values; at least 1.5x on a log axis)."""
    if y_range is not None:
        return y_range
    lo, hi = min(values), max(values)
    if log_y:
        return (lo / 1.25, hi * 1.25) if hi / lo < 1.5 else (lo, hi)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
    return (0.0 if lo >= 0 > lo - pad else lo - pad), hi + pad


def _frame_svg(plot: Plot, ticks: list[float], fmt: Callable[[float], str], width: int, height: int, bottom: int) -> list[str]:
    """Grid lines with their values, the epoch ticks and the two axes."""
    left, right_x, top, ph = plot.left, plot.left + plot.width, plot.top, plot.height
    out = []
    for t in ticks:
        y = plot.py(t)
        out.append(f'<line x1="{left}" x2="{right_x}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{escape(fmt(t))}</text>')
    for x in nice_ticks(plot.x0, plot.x1, min(8, int(plot.x1 - plot.x0) or 1)):
        if plot.x0 <= x <= plot.x1 and float(x).is_integer():
            out.append(f'<text x="{plot.px(x):.1f}" y="{height - bottom + 16}" text-anchor="middle" class="tick">{int(x)}</text>')
    out.append(f'<text x="{left + plot.width / 2}" y="{height - 4}" text-anchor="middle" class="tick">epoch</text>')
    out.append(
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}" class="axis"/><line x1="{left}" x2="{right_x}" y1="{top + ph}" y2="{top + ph}" class="axis"/>'
    )
    return out


def _legend_svg(series: list[Series], right_x: float) -> list[str]:
    """One swatch and name per series, right-aligned in the title row."""
    out = []
    for s in reversed(series):
        right_x -= 14 + 6.2 * len(s.name)
        out.append(
            f'<g class="legend"><rect x="{right_x:.1f}" y="8" width="10" height="10" fill="{s.color}"/><text x="{right_x + 13:.1f}" y="17" class="tick">{escape(s.name)}</text></g>'
        )
    return out


def _series_svg(series: list[Series], plot: Plot, fmt: Callable[[float], str]) -> list[str]:
    """Each series as a line through its finite values, with a dot per value that names it on hover."""
    out = []
    for s in series:
        pts = [(x, y) for x, y in s.points if y is not None and math.isfinite(y) and (not plot.log_y or y > 0)]
        if len(pts) > 1:
            path = " ".join(f"{plot.px(x):.1f},{plot.py(plot.clamped(y)):.1f}" for x, y in pts)
            dash = ' stroke-dasharray="5 4"' if s.dashed else ""
            out.append(f'<polyline points="{path}" fill="none" stroke="{s.color}" stroke-width="2"{dash}/>')
        for x, y in pts:
            attrs, title_el = _mark(f"{s.name}, epoch {x:g}: {fmt(y)}")
            out.append(f'<circle cx="{plot.px(x):.1f}" cy="{plot.py(plot.clamped(y)):.1f}" r="4" fill="{s.color}" class="pt"{attrs}>{title_el}</circle>')
    return out


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
    head = f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
    if not values or not xs:
        return f'{head}<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="muted">{escape(title)}: no values</text></svg>'
    log_y = log_y and min(values) > 0
    lo, hi = value_range(values, log_y, y_range)
    x0, x1 = (min(xs) - 1, max(xs) + 1) if min(xs) == max(xs) else (min(xs), max(xs))
    ticks = log_ticks(lo, hi) if log_y else nice_ticks(lo, hi)
    if not log_y:
        lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])
    plot = Plot(x0, x1, lo, hi, log_y, left, top, width - left - right, height - top - bottom)
    out = [head, f'<text x="{left}" y="16" class="chart-title">{escape(title)}{" (log scale)" if log_y else ""}</text>']
    out += _frame_svg(plot, ticks, fmt, width, height, bottom)
    out += _legend_svg(series, width - right)
    out += _series_svg(series, plot, fmt)
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
