"""The report page as one HTML string: sections rendered here from the report's data, the stylesheet and
the script (``page.css``, ``page.js`` beside this module) inlined, so the page opens from disk with no
network and no framework."""

from __future__ import annotations

import json
import math
from html import escape
from importlib import resources
from typing import Any

import numpy as np

from cityseg.tools.report.charts import Series, bar_chart, heatmap, line_chart

#: the summary tiles: results key -> what the tile says
SCORE_TILES = (
    ("mIoU", "mIoU", "19 classes, official"),
    ("iIoU", "iIoU", "instance classes"),
    ("mIoU_categories", "mIoU categories", "7 categories"),
    ("iIoU_categories", "iIoU categories", "human, vehicle"),
    ("pixel_acc", "pixel accuracy", "evaluated pixels"),
    ("mIoU_34", "mIoU_34", "seed-style, 34 ids"),
    ("pixel_acc_34", "pixel acc. 34", "seed-style, all pixels"),
)
PANEL_TITLES = {"input": "Input", "gt": "Ground truth", "pred": "Prediction", "error": "Errors (red), void (black)"}


def pct(v: float | None) -> str:
    """A 0..1 fraction as the page prints it: one decimal, a dash for none."""
    return "–" if v is None or not math.isfinite(v) else f"{100 * v:.1f}%"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s" if m else f"{s} s"


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def render_page(data: dict[str, Any]) -> str:
    title = f"cityseg report: {data['title']}"
    body = [
        f"<header class='top'><h1>{escape(title)}</h1><nav>"
        + "".join(
            f"<a href='#{k}'>{v}</a>"
            for k, v in (("summary", "Summary"), ("curves", "Curves"), ("classes", "Classes"), ("frames", "Frames"), ("config", "Config"))
        )
        + "</nav></header><main>",
        _summary(data),
        _curves(data["history"]),
        _classes(data),
        _gallery(data),
        _config(data),
        f"<footer>Written by <code>cityseg report</code> on {escape(data['generated'])}. Scores: official Cityscapes protocol at full resolution.</footer></main>",
        "<div id='tip' role='tooltip' hidden></div>",
        "<div id='lightbox' hidden><figure><img alt=''><figcaption></figcaption></figure><p class='hint'>click or press Esc to close</p></div>",
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{_asset('page.css')}</style></head><body>"
        + "\n".join(body)
        + f"<script>{_asset('page.js')}</script></body></html>\n"
    )


def _summary(data: dict[str, Any]) -> str:
    r, s = data["run"], data["scores"]
    tiles = "".join(
        f"<div class='tile{' main' if key == 'mIoU' else ''}'><div class='v' data-key='{key}'>{pct(s.get(key))}</div>"
        f"<div class='k'>{escape(name)}</div><div class='n'>{escape(note)}</div></div>"
        for key, name, note in SCORE_TILES
    )
    which = "mIoU" if r["best_key"] == "miou_19" else "mIoU_34"
    best = "–" if r["best_epoch"] is None else f"epoch {r['best_epoch']} (val {which} {pct(r['best_value'])} at the training size)"
    size = "×".join(str(v) for v in r["train_size"] or [])
    facts = (
        ("Model", f"{r['model']} ({r['label_mode']}, {size})"),
        ("Recipe", r["recipe"] or "not recorded (see Config)"),
        ("Dataset", f"{r['dataset']}, {r['split']} split: {s['n_images']} frames scored"),
        ("Training", f"{r['epochs']} epoch(s), {_count(r['images_seen'])} images seen, batch {r['batch_size']}"),
        ("Best epoch", best),
        ("Time", f"{_duration(r['train_seconds'])} training" + (f", {_duration(r['wall_seconds'])} the whole demo" if r["wall_seconds"] else "")),
        ("Hardware", r["hardware"]),
        ("Checkpoint", f"{r['folder']}/{r['checkpoint']}"),
    )
    rows = "".join(f"<tr><th>{escape(k)}</th><td data-fact='{escape(k.lower())}'>{escape(str(v))}</td></tr>" for k, v in facts)
    return f"<section id='summary'><h2>Summary</h2><div class='tiles'>{tiles}</div><table class='facts'>{rows}</table></section>"


def _count(v: Any) -> str:
    return "–" if v is None else f"{int(v):,}"


def _curves(history: list[dict[str, Any]]) -> str:
    def series(key: str, name: str, color: str, dashed: bool = False) -> Series:
        return Series(name, color, [(r["epoch"], r.get(key)) for r in history], dashed)

    loss = line_chart([series("train_loss", "train", "#1f77b4"), series("val_loss", "val", "#d62728")], "Loss", log_y=True)
    miou = line_chart(
        [series("miou_19", "mIoU 19", "#2ca02c"), series("miou_34", "mIoU 34", "#9467bd", True), series("pixel_acc", "pixel acc.", "#ff7f0e", True)],
        "Validation (model size)",
        fmt=pct,
        y_range=(0.0, 1.0),
    )
    lr = line_chart([series("lr", "LR", "#444")], "Learning rate (end of epoch)", fmt=lambda v: f"{v:.2g}")
    return (
        "<section id='curves'><h2>Curves</h2><p class='muted'>Per epoch, from the run's <code>metrics.csv</code>; "
        "validation at the training size (the official full-resolution scores are in the summary). Hover a point for its value.</p>"
        f"<div class='charts'>{loss}{miou}{lr}</div></section>"
    )


def _classes(data: dict[str, Any]) -> str:
    classes = sorted(data["classes"], key=lambda c: (c["iou"] is None, -(c["iou"] or 0.0)))
    bars = bar_chart(classes, "IoU per class, best first (hover for values)")
    counts = np.array(data["confusion"]["counts"], dtype=np.float64)
    total = counts.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(total > 0, counts / np.where(total > 0, total, 1), np.nan)
    colors = {c["name"]: c["color"] for c in data["classes"]}
    rows = [(name, colors[name]) for name in data["confusion"]["rows"]]
    matrix = heatmap(norm, counts.astype(np.int64), rows, data["confusion"]["cols"], "Confusion, rows normalised (% of each class's pixels)")
    return f"<section id='classes'><h2>Per class</h2><div class='charts two'><div>{bars}</div><div class='scroll'>{matrix}</div></div></section>"


def _gallery(data: dict[str, Any]) -> str:
    frames = data["frames"]
    present = sorted({name for f in frames for name in f["class_iou"]}, key=[c["name"] for c in data["classes"]].index)
    options = "".join(f"<option value='{escape(n)}'>{escape(n)}</option>" for n in present)
    cards = "".join(_card(f) for f in frames)
    return (
        f"<section id='frames'><h2>Frames, worst first</h2><p class='muted'>The {len(frames)} of {data['frames_scored']} {escape(data['run']['split'])} "
        "frames with the lowest per-image mIoU (the official definitions on one frame). Click a picture to enlarge it.</p>"
        "<div class='controls'><label>Show frames where <select id='class-filter'><option value=''>any class</option>"
        f"{options}</select> is worst</label> <span id='filter-count' class='muted'>{len(frames)} frames</span></div>"
        f"<div class='gallery' id='gallery'>{cards}</div></section>"
    )


def _card(f: dict[str, Any]) -> str:
    images = f["images"]
    ious = json.dumps(f["class_iou"], separators=(",", ":"))
    worst = sorted(f["class_iou"].items(), key=lambda kv: kv[1])[:3]
    worst_text = ", ".join(f"{n} {pct(v)}" for n, v in worst)
    panels = "".join(
        f"<figure><img src='{escape(images[p])}' alt='{escape(PANEL_TITLES[p])}' loading='lazy' data-caption='{escape(f['stem'])}: {escape(PANEL_TITLES[p])}'>"
        f"<figcaption>{escape(PANEL_TITLES[p])}</figcaption></figure>"
        for p in ("input", "gt", "pred", "error")
    )
    return (
        f"<article class='card' data-rank='{f['rank']}' data-stem='{escape(f['stem'])}' data-miou='{'' if f['miou'] is None else f['miou']}' data-iou='{escape(ious)}'>"
        f"<header><span class='rank'>#{f['rank']}</span><span class='stem'>{escape(f['stem'])}</span>"
        f"<span class='score' data-tip='per-image mIoU; pixel accuracy {pct(f['pixel_acc'])}'>mIoU {pct(f['miou'])}</span><span class='class-score'></span></header>"
        f"<div class='overlay'><img class='base' src='{escape(images['input'])}' alt='input' data-caption='{escape(f['stem'])}: input'>"
        f"<img class='top' src='{escape(images['pred'])}' alt='prediction over the input' style='opacity:0.5' data-caption='{escape(f['stem'])}: prediction'></div>"
        "<label class='slider'>prediction over input <input type='range' min='0' max='100' value='50' aria-label='prediction opacity'></label>"
        f"<div class='panels'>{panels}</div><p class='worst'>worst classes: {escape(worst_text) or '–'}</p></article>"
    )


def _config(data: dict[str, Any]) -> str:
    env = data["environment"]
    lines = [f"{k}: {v}" for k, v in env.items() if k != "packages"] + [f"{k} {v}" for k, v in (env.get("packages") or {}).items()]
    return (
        "<section id='config'><h2>Config and environment</h2><div class='charts two'>"
        f"<div><h3>config.toml</h3><pre>{escape(data['config'])}</pre></div>"
        f"<div><h3>environment</h3><pre>{escape(chr(10).join(lines))}</pre></div></div></section>"
    )
