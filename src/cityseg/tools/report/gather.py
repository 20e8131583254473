"""Everything the page shows, as one JSON-ready dict (written next to the page as ``<name>.json``).

The numbers come from the evaluator: ``scores`` is ``CityscapesEvaluator.results()`` of the split plus the
category scores, each frame's figures are that frame's own evaluator's, and ``confusion`` is the 19 evaluated
rows of the summed 34x34 matrix. The run's own files give the rest (``run_files.RunFiles``).
"""

from __future__ import annotations

import datetime
import shlex
from pathlib import Path
from typing import Any

from cityseg import labels
from cityseg.data.layout import find_samples
from cityseg.errors import CitysegError
from cityseg.eval.metrics import CityscapesEvaluator
from cityseg.eval.report import confusion_rows, json_safe
from cityseg.tools.report.charts import hex_color
from cityseg.tools.report.frames import FrameScore
from cityseg.tools.report.run_files import RunFiles, best_epoch


def report_data(
    run: RunFiles,
    ckpt: dict[str, Any],
    root: Path,
    split: str,
    full: CityscapesEvaluator,
    frames: list[FrameScore],
    shown: list[FrameScore],
    pictures: dict[str, dict[str, str]],
    environment: dict[str, Any],
) -> dict[str, Any]:
    """The page's data. ``frames``: every scored frame; ``shown``: the gallery's, worst first;
    ``pictures``: stem -> panel -> file name relative to the page."""
    if full.n_images != len(frames):
        raise CitysegError(f"{run.folder}: {len(frames)} frames collected for {full.n_images} scored (pass the collector to the scoring)")
    s = full.scores()
    scores = full.results()
    scores["per_category"] = {c: {"iou": s["category_iou"][c], "iiou": s["category_iiou"][c]} for c in labels.CATEGORY_NAMES}
    counts, _ = confusion_rows(full.mat)
    classes = [{"name": name, "color": hex_color(labels.TRAINID_PALETTE[t]), **scores["per_class"][name]} for t, name in enumerate(labels.TRAINID_NAMES)]
    return json_safe(
        {
            "title": f"{ckpt['model_name']}, run {run.folder.resolve().name}",
            "generated": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "run": run_facts(run, ckpt, root, split, environment),
            "scores": scores,
            "classes": classes,
            "confusion": {"rows": list(labels.TRAINID_NAMES), "cols": [*labels.TRAINID_NAMES, "void"], "counts": counts.tolist()},
            "history": run.history,
            "frames": [
                {"rank": i + 1, "stem": f.stem, "miou": f.miou, "pixel_acc": f.pixel_acc, "class_iou": f.class_iou, "images": pictures[f.stem]}
                for i, f in enumerate(shown)
            ],
            "frames_scored": len(frames),
            "config": run.config_text,
            "environment": environment,
        }
    )


def run_facts(run: RunFiles, ckpt: dict[str, Any], root: Path, split: str, environment: dict[str, Any]) -> dict[str, Any]:
    """The summary's facts: model, recipe, data, how long and on what it trained, the best epoch."""
    cfg, summary = run.config, run.summary or {}
    t, d = cfg.get("train", {}), cfg.get("data", {})
    label_mode = ckpt.get("label_mode", d.get("label_mode"))
    key = "miou_19" if label_mode == "trainIds" else "miou_34"
    best = best_epoch(run.history, key)
    epochs = len(run.history)
    train_frames = summary.get("data", {}).get("frames", {}).get(d.get("train_split", "train"))
    if train_frames is None:
        try:
            train_frames = len(find_samples(root, d.get("train_split", "train")))
        except CitysegError:  # a report of the val split needs no train split on this machine
            train_frames = None
    seconds = [r.get("seconds") for r in run.history if r.get("seconds") is not None]
    gpus = environment.get("gpus") or []
    return {
        "folder": str(run.folder),
        "checkpoint": run.checkpoint.name,
        "model": ckpt.get("model_name"),
        "recipe": summary.get("recipe") or recipe_from_command(environment.get("command", "")),
        "label_mode": label_mode,
        "train_size": ckpt.get("input_size") or d.get("size"),
        "batch_size": t.get("batch_size"),
        "dataset": str(root),
        "split": split,
        "epochs": epochs,
        "images_seen": summary.get("images_seen") if "images_seen" in summary else (epochs * train_frames if train_frames is not None else None),
        "train_frames": train_frames,
        "train_seconds": round(sum(seconds), 1) if seconds else None,
        "wall_seconds": summary.get("elapsed_s"),
        "best_epoch": None if best is None else int(best["epoch"]),
        "best_key": key,
        "best_value": None if best is None else best[key],
        "hardware": ", ".join(gpus) + f" (CPU {environment.get('cpu')})" if gpus else f"CPU {environment.get('cpu')} ({environment.get('cpu_count')} cores)",
        "command": environment.get("command"),
    }


def recipe_from_command(command: str) -> str | None:
    """The ``--config`` of a recorded ``cityseg train`` / ``demo`` command line, if it names one."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    for i, w in enumerate(words):
        if w == "--config" and i + 1 < len(words):
            return words[i + 1]
        if w.startswith("--config="):
            return w.split("=", 1)[1]
    return None
