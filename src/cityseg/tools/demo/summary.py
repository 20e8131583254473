"""The summary phase: the run's summary (``runs/NNN/summary.json``, a stable JSON dict: scores, paths,
frame counts, time per phase), the run report drawn from the same evaluation, and the printed lines."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cityseg.io import atomic_write_json
from cityseg.tools.demo.data import DataState
from cityseg.tools.demo.evaluate import Outputs, Scored
from cityseg.tools.demo.options import DemoOptions
from cityseg.tools.demo.timer import Timer
from cityseg.tools.demo.train import Recipe, Trained
from cityseg.tools.report import report_path, write_report

#: the official scores the summary copies from the evaluation
SCORE_KEYS = ("mIoU", "mIoU_34", "pixel_acc", "iIoU", "mIoU_categories", "pixel_acc_34")


def summary(opts: DemoOptions, rec: Recipe, data: DataState, run: Trained, scored: Scored, out: Outputs, timer: Timer) -> dict[str, Any]:
    """The summary dict of a finished run (its keys are what ``format_summary`` and scripts read)."""
    r = scored.results
    phases = timer.rounded()
    return {
        **{k: r[k] for k in SCORE_KEYS},
        "per_class_iou": {k: v["iou"] for k, v in r["per_class"].items()},
        "n_images": r["n_images"],
        "run_dir": str(run.run_dir),
        "checkpoint": str(run.checkpoint),
        "figure": str(out.figure),
        "predictions": str(out.pred),
        "predictions_color": str(out.color),
        "scores": str(scored.scores_path),
        "data": data.to_json(),
        "model": opts.model,
        "recipe": opts.recipe,
        "batch_size": rec.batch_size,
        "grad_clip": rec.grad_clip,
        "train_size": list(rec.cfg["data"]["size"]),
        "epochs": run.epochs,
        "steps": run.steps,
        "images_seen": run.steps * rec.batch_size,
        "stopped": run.stopped,
        "val_model_size": run.last_val,
        "minutes": opts.minutes,
        "seconds": phases,
        "elapsed_s": round(timer.elapsed(), 1),
    }


def finish(result: dict[str, Any], opts: DemoOptions, root: Path, run: Trained, scored: Scored, timer: Timer, log: Callable[[str], None]) -> dict[str, Any]:
    """Write ``summary.json`` (and the ``--json`` copy), then the report, which reads it; print the summary."""
    run_dir = run.run_dir
    result = {**result, "report": str(report_path(run_dir))}
    if opts.json_path is not None:
        result["json"] = str(opts.json_path)
    atomic_write_json(run_dir / "summary.json", result)
    if opts.json_path is not None:
        atomic_write_json(opts.json_path, result)
    with timer.phase("report"):  # after summary.json, which the report reads; its time is not in the summary
        write_report(run_dir, data=root, checkpoint=run.checkpoint, n=opts.report_frames, scored=(scored.evaluator, scored.frames), log=log)
    for line in format_summary(result):
        log(line)
    return result


def format_summary(s: dict[str, Any]) -> list[str]:
    """The printed summary: scores, where each output is, time per phase."""
    split = ", ".join(f"{k} {v:.0f} s" for k, v in s["seconds"].items())
    h, w = s["train_size"]
    return [
        "",
        f"cityseg demo: {s['model']} ({s['recipe']} recipe, batch {s['batch_size']}, grad clip {s['grad_clip']:g}, {h}x{w}), "
        f"{s['epochs']} epoch(s), {s['images_seen']} training images seen ({s['stopped']})",
        f"  val (official protocol, full resolution, {s['n_images']} frames): mIoU (19 classes) {s['mIoU']:.4f}, "
        f"mIoU_34 {s['mIoU_34']:.4f}, pixel accuracy {s['pixel_acc']:.4f}",
        f"  dataset      {s['data']['root']} ({s['data']['source']})",
        f"  run folder   {s['run_dir']}  (checkpoint {Path(s['checkpoint']).name}, metrics.csv, curves.png)",
        f"  scores       {s['scores']}",
        f"  predictions  {s['predictions']}  (labelIds)  and  {s['predictions_color']}  (colour)",
        f"  figure       {s['figure']}",
        f"  time         {s['elapsed_s']:.0f} s of a {s['minutes']:g} min budget: {split}",
        *([f"  summary JSON {s['json']}"] if s.get("json") else []),
        f"  report       {s['report']}",
    ]
