"""The main job, end to end on the embedded default: SynthCity -> cache -> training -> official
evaluation -> predictions -> the results figure, inside a wall-clock budget.

``run_demo(out, minutes)`` does, in ``out`` (default ``./demo``):

1. ``out/data``: SynthCity at the official 1024x2048, generated only when absent, incomplete or made by
   another generator version (a complete, valid SynthCity folder of this version is reused as it is,
   whatever its frame counts); ``data=ROOT`` uses an existing
   dataset (real Cityscapes, say) instead. A reused or given dataset is validated and its class statistics
   printed; frames generated in this run are not read twice (the cache pass reads them).
2. The preprocessed cache of train and val at the recipe's size (reused when up to date).
3. ``out/runs/NNN``: a FRESH numbered run folder per invocation (earlier runs are kept, a rerun never
   collides with "already holds a run"); ``model`` (default ``ddrnet23_slim``, a real-time network that
   trains from scratch) trained with ``recipe`` (default ``cpu-fast``: 19 trainIds at 256x512, AdamW, warmup
   + poly, OHEM with the auxiliary head). ``--model residual_unet --config seed`` is the seed's Model A with
   the seed recipe, except the demo's batch of 2 (``DEMO_BATCH_SIZE``: more updates in a few minutes).
   Training gets what the budget leaves after the measured data phases and an estimate of the evaluation
   phases. The run's length in steps (``train.iters``) is planned from the speed of the first ``PROBE_S``
   seconds of training (stopped and resumed exactly with ``train(resume=True)``) and planned again at
   ``REPLAN_AT`` of the budget, so that the LR schedule ends with the budget; the last epoch may be
   partial. Every epoch is validated and ``best.pt`` holds the best weights seen; ``train.max_minutes``
   guards the deadline (an epoch it cuts short is not validated).
4. ``best.pt`` scored on val with the official protocol (model at its size, logits upsampled bilinearly to
   the full 1024x2048, argmax, ``evaluation.score_checkpoint``); labelId predictions (``runs/NNN/pred``,
   test-server names) and colour maps (``runs/NNN/pred_color``); the results figure with error maps
   (``runs/NNN/results.png``). The model runs once per val frame: the three consumers share its output.
5. A summary dict (also ``runs/NNN/summary.json``): scores, paths, frame counts, time per phase.
6. The run report (``runs/NNN/report/index.html``, see ``tools.report``), drawn from the same evaluation;
   its path is the summary's last line.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cityseg.errors import CitysegError

DEFAULT_OUT = Path("demo")
DEFAULT_MINUTES = 10.0
#: SynthCity frames the demo generates: the default model sees several thousand images in the budget, and
#: fewer frames than that are memorised rather than learnt (docs/benchmarks.md has the trade-off against
#: the generation time); 50 val frames keep the score's noise below a point
DEFAULT_TRAIN_FRAMES = 800
DEFAULT_VAL_FRAMES = 50
DEFAULT_FRAME_SIZE = (1024, 2048)
DEFAULT_MODEL = "ddrnet23_slim"
DEFAULT_RECIPE = "cpu-fast"
#: the seed recipe's only demo change: in the budget its batch of 16 gives too few Adam steps to leave
#: chance; batch 2 gives 8x the updates on the same images at the same cost per image
DEMO_BATCH_SIZE = 2
SEED_RECIPE = "seed"
#: seconds of real training whose speed plans the epochs (long enough to pass the first, slower steps)
PROBE_S = 45.0
#: the fraction of the training budget at which the length of the run is planned again
REPLAN_AT = 0.6
#: the fraction of the remaining time a plan leaves free, and the seconds a restart costs (the run is set up
#: again, the loader starts, the first steps are slow): a plan that overruns is cut by the time limit
#: just before its end, its last epoch unvalidated
PLAN_MARGIN = 0.03
RESTART_S = 8.0
#: rows of the results figure (the seed's figure showed 32; 8 keep the picture readable at a glance)
FIGURE_ROWS = 8
#: frames in the report's gallery, worst first (the demo's val split is 50 frames)
REPORT_FRAMES = 48
#: seconds the report takes per gallery frame (read the frame again, draw and compress four pictures)
REPORT_FRAME_S = 0.15
#: seconds kept free at the end for the summary, plus a margin for a slower machine
RESERVE_S = 15.0
MIN_TRAIN_S = 20.0
RUN_NAME = re.compile(r"^\d{3,}$")


# ---- small helpers ---------------------------------------------------------------------------------
class _Timer:
    """Wall time per phase, in order."""

    def __init__(self):
        self.start = time.monotonic()
        self.phases: dict[str, float] = {}

    def phase(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t = time.monotonic()

            def __exit__(self, *exc):
                timer.phases[name] = timer.phases.get(name, 0.0) + time.monotonic() - self.t
                return False

        return _Ctx()

    def elapsed(self) -> float:
        return time.monotonic() - self.start


class MemoPredictor:
    """A ``Predictor`` that remembers its full-resolution labelIds per image (keyed by the pixels), so
    evaluation, prediction files and the figure run the model once per frame; every other attribute is
    the wrapped predictor's."""

    def __init__(self, base: Any):
        self.base = base
        self.memo: dict[tuple, np.ndarray] = {}
        self.runs = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)

    def predict(self, image: np.ndarray) -> np.ndarray:
        image = np.ascontiguousarray(image)
        key = (image.shape, hashlib.blake2b(image.data, digest_size=16).digest())
        if key not in self.memo:
            self.memo[key] = self.base.predict(image)
            self.runs += 1
        return self.memo[key]


def next_run_dir(runs: Path) -> Path:
    """``runs/001``, ``runs/002``, ...: the first number above every existing run folder (not created)."""
    used = [int(p.name) for p in runs.iterdir() if RUN_NAME.match(p.name)] if runs.is_dir() else []
    return runs / f"{max(used, default=0) + 1:03d}"


def claim_run_dir(runs: Path) -> Path:
    """Create and return the next free run folder; a concurrent demo in the same ``out`` gets the one after."""
    while True:
        run_dir = next_run_dir(runs)
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue


def _check_options(
    out: Path,
    minutes: float,
    train_frames: int,
    val_frames: int,
    frame_size,
    batch_size: int | None,
    epochs: int | None,
    train_minutes: float | None,
    figure_rows: int,
) -> None:
    if out.exists() and not out.is_dir():
        raise CitysegError(f"{out}: --out exists and is not a folder")
    if not isinstance(minutes, (int, float)) or not math.isfinite(minutes) or minutes <= 0:
        raise CitysegError(f"--minutes must be a positive number, got {minutes}")
    if train_minutes is not None and (not math.isfinite(train_minutes) or train_minutes <= 0):
        raise CitysegError(f"--train-minutes must be a positive number, got {train_minutes}")
    for name, v in (
        ("--train-frames", train_frames),
        ("--val-frames", val_frames),
        ("--batch-size", 1 if batch_size is None else batch_size),
        ("--figure-rows", figure_rows),
    ):
        if not isinstance(v, int) or v < 1:
            raise CitysegError(f"{name} must be a positive integer, got {v}")
    if epochs is not None and epochs < 1:
        raise CitysegError(f"--epochs must be a positive integer, got {epochs}")
    if len(frame_size) != 2 or min(frame_size) < 1:
        raise CitysegError(f"--frame-size must be HxW with positive values, got {frame_size}")


# ---- phases ------------------------------------------------------------------------------------------
def _read_marker(root: Path) -> dict | None:
    import json

    from cityseg.data.synth import MARKER

    try:
        info = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _generate(root: Path, train: int, val: int, size, seed: int, workers: int, log) -> None:
    from cityseg.data import synth

    h, w = size
    log(f"generating SynthCity into {root}: {train} train + {val} val frames at {h}x{w} ({workers} processes)")
    t0 = time.monotonic()

    def progress(split: str, done: int, total: int) -> None:
        if done == total:
            log(f"  {split}: {total} frames in {time.monotonic() - t0:.0f} s")

    synth.generate(root, train=train, val=val, test=0, size=(h, w), seed=seed, workers=workers, progress=progress)


def _dataset_line(stats) -> str:
    from cityseg import labels

    parts = []
    for name, s in stats.splits.items():
        sizes = ", ".join(sorted(s.sizes))
        parts.append(f"{name} {s.pairs} pairs ({sizes})")
    px = stats.pixels
    shares = px / max(1, px.sum())
    top = np.argsort(shares)[::-1][:5]
    common = ", ".join(f"{labels.LABELID_NAMES[i]} {100 * shares[i]:.0f}%" for i in top)
    return f"dataset: {'; '.join(parts)}; evaluated classes present {len(stats.present_eval_classes())}/19; largest: {common}"


def _prepare_data(out: Path, data, train_frames: int, val_frames: int, frame_size, seed: int, workers: int, timer: _Timer, log) -> tuple[Path, dict[str, Any]]:
    """Dataset root ready for training (generated, reused or given) and what was found."""
    from cityseg.data import synth
    from cityseg.data.check import check_dataset
    from cityseg.data.layout import check_root, resolve_root

    info: dict[str, Any] = {}
    if data is not None:
        root = check_root(resolve_root(data))
        info["source"] = "given"
        with timer.phase("check"):
            stats = check_dataset(root, ["train", "val"], workers=workers, fail_fast=True)
    else:
        root = out / "data"
        marker = _read_marker(root)
        stats = None
        if marker is not None and marker.get("complete") is True and marker.get("version") != synth.VERSION:
            log(f"SynthCity in {root} was made by generator version {marker.get('version', 1)}, this is version {synth.VERSION}; regenerating it")
        elif marker is not None and marker.get("complete") is True:
            with timer.phase("check"):
                try:
                    stats = check_dataset(root, ["train", "val"], workers=workers, fail_fast=True)
                    info["source"] = "reused"
                    log(f"reusing SynthCity in {root} (delete the folder to regenerate)")
                except CitysegError as e:
                    log(f"SynthCity in {root} is damaged ({e}); regenerating it")
        elif root.exists() and marker is None and any(root.iterdir()):
            raise CitysegError(f"{root}: folder is not empty and holds no SynthCity dataset; pass --data to use it as a dataset, or choose another --out")
        if stats is None:
            with timer.phase("generate"):
                _generate(root, train_frames, val_frames, frame_size, seed, workers, log)
            # frames written atomically a moment ago need no decoding pass of their own: the cache reads
            # every one of them next, and the time goes to training instead
            info.update({"source": "generated", "root": str(root), "frames": {"train": train_frames, "val": val_frames}})
            log(f"dataset: {train_frames} train + {val_frames} val frames generated (`cityseg check --data {root}` validates them)")
            return root, info
    log(_dataset_line(stats))
    info.update({"root": str(root), "frames": {k: s.pairs for k, s in stats.splits.items()}})
    return root, info


# ---- the demo ----------------------------------------------------------------------------------------
def run_demo(
    out: str | os.PathLike = DEFAULT_OUT,
    minutes: float = DEFAULT_MINUTES,
    data: str | os.PathLike | None = None,
    model: str = DEFAULT_MODEL,
    recipe: str = DEFAULT_RECIPE,
    seed: int = 0,
    train_frames: int = DEFAULT_TRAIN_FRAMES,
    val_frames: int = DEFAULT_VAL_FRAMES,
    frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE,
    batch_size: int | None = None,
    grad_clip: float | None = None,
    size: tuple[int, int] | None = None,
    epochs: int | None = None,
    train_minutes: float | None = None,
    figure_rows: int = FIGURE_ROWS,
    report_frames: int = REPORT_FRAMES,
    json_path: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole demo (see the module doc) and return its summary dict.

    ``minutes``: the wall-clock budget of the whole demo (training gets what the other phases leave);
    ``train_minutes`` fixes the training time instead. ``recipe`` is a shipped recipe name or a TOML file;
    ``batch_size`` and ``grad_clip`` default to the recipe's (the seed recipe's batch to ``DEMO_BATCH_SIZE``).
    ``epochs`` caps the epochs (default: no cap; the budget decides). ``size`` overrides the recipe's training size;
    ``train_frames``, ``val_frames`` and ``frame_size`` only apply when SynthCity is generated.
    ``report_frames`` worst val frames go into the report's gallery; ``json_path`` gets a copy of the
    summary. Bad options raise ``CitysegError``.
    """
    from cityseg.data import cache
    from cityseg.models import check_model_name
    from cityseg.runtime import default_workers
    from cityseg.train.config import apply_overrides, load_recipe

    timer = _Timer()
    out = Path(out)
    frame_size = tuple(int(v) for v in frame_size)
    _check_options(out, minutes, train_frames, val_frames, frame_size, batch_size, epochs, train_minutes, figure_rows)
    if not isinstance(report_frames, int) or report_frames < 1:
        raise CitysegError(f"--report-frames must be a positive integer, got {report_frames}")
    check_model_name(model)
    workers = default_workers() if workers is None else max(1, int(workers))
    deadline = minutes * 60.0

    cfg, _ = load_recipe(recipe)
    if batch_size is None and recipe == SEED_RECIPE:
        batch_size = DEMO_BATCH_SIZE
    flags: dict[str, Any] = {"model.name": model, "train.seed": seed}
    if batch_size is not None:
        flags["train.batch_size"] = batch_size
    if grad_clip is not None:
        if not math.isfinite(grad_clip) or grad_clip < 0:
            raise CitysegError(f"--grad-clip must be >= 0 (0 = off), got {grad_clip}")
        flags["train.grad_clip"] = float(grad_clip)
    if size is not None:
        flags["data.size"] = [int(v) for v in size]
    cfg = apply_overrides(cfg, flags, source="demo")
    epochs_cap = int(epochs) if epochs is not None else None
    d = cfg["data"]
    batch_size, grad_clip = cfg["train"]["batch_size"], cfg["train"]["grad_clip"]

    # 1-2: dataset and cache
    root, data_info = _prepare_data(out, data, train_frames, val_frames, frame_size, seed, workers, timer, log)
    with timer.phase("cache"):
        for split in (d["train_split"], d["val_split"]):
            entry = cache.prepare(root, split, d["size"], d["interpolation"], workers=workers)
        log(f"cache ready: {d['size'][0]}x{d['size'][1]} {d['interpolation']} ({entry.folder.parent})")

    # 3: training in a fresh run folder
    run_dir = claim_run_dir(out / "runs")
    n_val = data_info["frames"].get("val", 0)
    rows = min(figure_rows, n_val)
    forward_s = _forward_seconds(model, tuple(d["size"]))
    # per val frame: the forward pass at model size, upsampling + scoring + two PNG writes at full size
    post_s = n_val * (forward_s + 0.25 * _megapixels(root) / 2.1) + 4.0 + 0.4 * rows + REPORT_FRAME_S * min(report_frames, n_val)
    if train_minutes is not None:
        budget_s = train_minutes * 60.0
    else:
        budget_s = max(MIN_TRAIN_S, deadline - timer.elapsed() - post_s - RESERVE_S)
    log(
        f"training {model} with the {recipe} recipe (batch {batch_size}, grad clip {grad_clip:g}) in {run_dir} for at most "
        f"{budget_s / 60:.1f} min (estimated evaluation {post_s:.0f} s)"
    )
    with timer.phase("train"):
        summary = _train(cfg, root, run_dir, budget_s, epochs_cap, data_info["frames"].get(d["train_split"], 0), progress, log)

    # 4: evaluation, predictions, figure
    ckpt = run_dir / "best.pt"
    if not ckpt.is_file():  # the time ran out inside the first epoch: no validated checkpoint yet
        ckpt = run_dir / "last.pt"
        log(f"no epoch finished in the time: evaluating {ckpt} (the weights at the time limit)")
    results, paths, scored = _evaluate(ckpt, root, run_dir, rows, timer, progress, log)

    # 5: summary
    total = timer.elapsed()
    phases = {k: round(v, 1) for k, v in timer.phases.items()}
    phases["other"] = round(max(0.0, total - sum(timer.phases.values())), 1)
    hist = summary["history"]
    steps = summary["steps_done"]
    result = {
        "mIoU": results["mIoU"],
        "mIoU_34": results["mIoU_34"],
        "pixel_acc": results["pixel_acc"],
        "iIoU": results["iIoU"],
        "mIoU_categories": results["mIoU_categories"],
        "pixel_acc_34": results["pixel_acc_34"],
        "per_class_iou": {k: v["iou"] for k, v in results["per_class"].items()},
        "n_images": results["n_images"],
        "run_dir": str(run_dir),
        "checkpoint": str(ckpt),
        "figure": str(paths["figure"]),
        "predictions": str(paths["pred"]),
        "predictions_color": str(paths["color"]),
        "scores": str(paths["scores"]),
        "data": data_info,
        "model": model,
        "recipe": recipe,
        "batch_size": batch_size,
        "grad_clip": float(grad_clip),
        "train_size": list(d["size"]),
        "epochs": summary["epoch"],
        "steps": steps,
        "images_seen": steps * batch_size,
        "stopped": summary["stopped"] or "epochs done",
        "val_model_size": {k: hist[-1][k] for k in ("miou_19", "miou_34", "pixel_acc") if hist and k in hist[-1]},
        "minutes": minutes,
        "seconds": phases,
        "elapsed_s": round(total, 1),
    }
    from cityseg.io import atomic_write_json
    from cityseg.tools.report import report_path, write_report

    result["report"] = str(report_path(run_dir))
    if json_path is not None:
        result["json"] = str(json_path)
    atomic_write_json(run_dir / "summary.json", result)
    if json_path is not None:
        atomic_write_json(json_path, result)
    with timer.phase("report"):  # after summary.json, which the report reads; its time is not in the summary
        write_report(run_dir, data=root, checkpoint=ckpt, n=report_frames, scored=scored, log=log)
    for line in format_summary(result):
        log(line)
    return result


def _megapixels(root: Path) -> float:
    from cityseg.data.layout import require_samples
    from cityseg.io import probe_image

    samples = require_samples(root, "val")
    h, w, _ = probe_image(samples[0].image)
    return h * w / 1e6


def _forward_seconds(model_name: str, size: tuple[int, int]) -> float:
    """One no-grad forward of a fresh model on a 1x3xHxW input (the second of two, warm)."""
    import torch

    from cityseg.models import build_model, weightless_options

    net = build_model(model_name, num_classes=34, **weightless_options(model_name)).eval()
    if hasattr(net, "check_input_shape"):
        net.check_input_shape(*size)
    x = torch.zeros(1, 3, *size)
    with torch.inference_mode():
        net(x)
        t = time.monotonic()
        net(x)
    return time.monotonic() - t


def plan_steps(seconds_left: float, seconds_per_step: float, steps_done: int, steps_cap: int) -> int:
    """The run's total optimiser steps when ``seconds_left`` are spent at ``seconds_per_step`` (a step's
    share of the validations included) after ``steps_done``; at most ``steps_cap``, at least one more. The
    plan keeps ``RESTART_S`` and then ``PLAN_MARGIN`` of the time free, because a run cut by the time limit
    ends with its LR above the schedule's floor and its last epoch unvalidated."""
    if seconds_per_step <= 0 or not math.isfinite(seconds_per_step):
        return steps_cap
    more = math.floor(max(0.0, seconds_left - RESTART_S) * (1.0 - PLAN_MARGIN) / seconds_per_step)
    return max(steps_done + 1, min(steps_cap, steps_done + more))


def _train(cfg: dict, root: Path, run_dir: Path, budget_s: float, epochs_cap: int | None, train_images: int, progress: bool, log) -> dict:
    """Train for ``budget_s``, in stretches that stop resumably and continue exactly (``train(resume=True)``).
    The first ``PROBE_S`` seconds are real training whose speed plans the run's length in steps
    (``train.iters``), so that the LR schedule ends with the budget; at ``REPLAN_AT`` of the budget the plan
    is made again from the speed of the stretch since (a longer, steadier measurement). ``epochs_cap``
    (None: the budget alone decides) caps the plan; the probe's provisional schedule spans the recipe's
    epochs, which the plan then replaces."""
    from cityseg.train.config import apply_overrides
    from cityseg.train.run import train

    def stretch(iters: int, until_s: float, resume: bool) -> dict:
        seconds = max(until_s - (time.monotonic() - t0), 1.0)
        over = {"train.iters": iters, "train.max_minutes": seconds / 60.0}
        return train(apply_overrides(cfg, over, source="demo"), root, run_dir, resume=resume, log=log, progress=progress)

    t = cfg["train"]
    per_epoch = train_images // t["batch_size"] if t["drop_last"] else -(-train_images // t["batch_size"])
    provisional = (epochs_cap or t["epochs"]) * max(1, per_epoch)
    cap = provisional if epochs_cap is not None else sys.maxsize
    t0 = time.monotonic()
    s = stretch(provisional, min(budget_s, PROBE_S), resume=False)
    mark, done = 0.0, 0
    for until in (budget_s * REPLAN_AT, budget_s):
        if s["stopped"] != "time limit" or s["steps_done"] <= done:
            break
        now = time.monotonic() - t0
        per_step = (now - mark) / (s["steps_done"] - done)
        mark, done = now, s["steps_done"]
        iters = plan_steps(budget_s - now, per_step, done, cap)
        log(f"{done} steps in {now:.0f} s ({per_step:.2f} s/step): {iters} steps planned in all")
        s = stretch(iters, until, resume=True)
    return s


def _evaluate(ckpt: Path, root: Path, run_dir: Path, rows: int, timer: _Timer, progress: bool, log):
    from cityseg.data.layout import find_samples
    from cityseg.eval.evaluate import score_checkpoint
    from cityseg.infer.figure import results_figure
    from cityseg.infer.outputs import predict_files
    from cityseg.infer.predictor import Predictor
    from cityseg.io import atomic_write_json
    from cityseg.tools.report import FrameCollector

    predictor = MemoPredictor(Predictor.from_checkpoint(ckpt, channels_last=True))
    frames = FrameCollector()
    with timer.phase("evaluate"):
        full, _, _ = score_checkpoint(root, "val", None, predictor=predictor, progress=progress, on_frame=frames)
        results = full.results()
        scores = run_dir / "val_scores.json"
        atomic_write_json(scores, results)
    log(f"evaluated {ckpt} on {results['n_images']} val frames at full resolution: mIoU {results['mIoU']:.4f}")
    pred, color = run_dir / "pred", run_dir / "pred_color"
    with timer.phase("predict"):
        images = [s.image for s in find_samples(root, "val")]
        predict_files(predictor, images, pred, formats=("labelIds", "color"), vis_dir=color)
    figure = run_dir / "results.png"
    with timer.phase("figure"):
        results_figure(predictor, root, figure, split="val", n=rows)
    return results, {"figure": figure, "pred": pred, "color": color, "scores": scores}, (full, frames)


def format_summary(s: dict[str, Any]) -> list[str]:
    """The printed summary: scores, where each output is, time per phase."""
    sec = s["seconds"]
    split = ", ".join(f"{k} {v:.0f} s" for k, v in sec.items())
    return [
        "",
        f"cityseg demo: {s['model']} ({s['recipe']} recipe, batch {s['batch_size']}, grad clip {s['grad_clip']:g}, "
        f"{s['train_size'][0]}x"
        f"{s['train_size'][1]}), {s['epochs']} epoch(s), {s['images_seen']} training images seen ({s['stopped']})",
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
