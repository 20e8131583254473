"""The recipe, cache, plan and train phases: the recipe with the demo's flags, the preprocessed cache,
the time training gets, and training in stretches that stop resumably and continue exactly."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cityseg.data import cache
from cityseg.data.layout import require_samples
from cityseg.io import probe_image
from cityseg.models import build_model, weightless_options
from cityseg.tools.demo import budget
from cityseg.tools.demo.data import CacheSpec, DataState
from cityseg.tools.demo.options import DEMO_BATCH_SIZE, SEED_RECIPE, DemoOptions
from cityseg.train.config import apply_overrides, load_recipe
from cityseg.train.run import Timing as TrainTiming
from cityseg.train.run import train
from cityseg.train.sampler import EpochBatchSampler

Log = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    """The training recipe with the demo's overrides applied (``cfg`` is ``train.config``'s recipe dict)."""

    cfg: dict[str, Any]

    @property
    def size(self) -> tuple[int, int] | None:
        size = self.cfg["data"]["size"]
        return None if size is None else (int(size[0]), int(size[1]))

    @property
    def cache_spec(self) -> CacheSpec:
        return CacheSpec(self.size, self.cfg["data"]["interpolation"])

    @property
    def batch_size(self) -> int:
        return int(self.cfg["train"]["batch_size"])

    @property
    def grad_clip(self) -> float:
        return float(self.cfg["train"]["grad_clip"])


@dataclass(frozen=True)
class Plan:
    """Where and for how long the run trains, and what the phases after it are expected to cost."""

    run_dir: Path
    budget_s: float
    after_s: float
    figure_rows: int
    #: one validation during training (the val frames at the training size), until a stretch measures one
    val_s: float = 0.0


@dataclass(frozen=True)
class Trained:
    """What training did: steps, epochs, why it stopped, the last validation at the model's size."""

    steps: int
    epochs: int
    stopped: str
    last_val: dict[str, float]
    run_dir: Path
    checkpoint: Path


def recipe(opts: DemoOptions) -> Recipe:
    """The recipe with the demo's model, seed, batch, clip and size (the seed recipe's batch: ``DEMO_BATCH_SIZE``)."""
    cfg, _ = load_recipe(opts.recipe)
    batch_size = DEMO_BATCH_SIZE if opts.batch_size is None and opts.recipe == SEED_RECIPE else opts.batch_size
    flags: dict[str, Any] = {"model.name": opts.model, "train.seed": opts.seed}
    if batch_size is not None:
        flags["train.batch_size"] = batch_size
    if opts.grad_clip is not None:
        flags["train.grad_clip"] = float(opts.grad_clip)
    if opts.size is not None:
        flags["data.size"] = list(opts.size)
    return Recipe(apply_overrides(cfg, flags, source="demo"))


def prepare_cache(root: Path, rec: Recipe, workers: int, log: Log) -> None:
    """The cache phase: train and val decoded once at the training size (reused when up to date)."""
    d = rec.cfg["data"]
    for split in (d["train_split"], d["val_split"]):
        entry = cache.prepare(root, split, d["size"], d["interpolation"], workers=workers)
    log(f"cache ready: {d['size'][0]}x{d['size'][1]} {d['interpolation']} ({entry.folder.parent})")


def forward_seconds(model_name: str, size: tuple[int, int]) -> float:
    """One no-grad forward of a fresh model on a 1x3xHxW input (the second of two, warm)."""
    net = build_model(model_name, num_classes=34, **weightless_options(model_name)).eval()
    net.check_input_shape(*size)
    x = torch.zeros(1, 3, *size)
    with torch.inference_mode():
        net(x)
        t = time.monotonic()
        net(x)
    return time.monotonic() - t


def val_megapixels(root: Path) -> float:
    h, w, _ = probe_image(require_samples(root, "val")[0].image)
    return h * w / 1e6


def plan(opts: DemoOptions, rec: Recipe, data: DataState, run_dir: Path, elapsed_s: float) -> Plan:
    """The plan phase: training gets what the budget leaves after the time spent and the estimated
    evaluation, prediction, figure and report (``train_minutes`` fixes it instead)."""
    n_val = data.frames.get(rec.cfg["data"]["val_split"], 0)
    rows = min(opts.figure_rows, n_val)
    forward_s = forward_seconds(opts.model, rec.size or (1024, 2048))
    after_s = budget.EVAL_COSTS.seconds(n_val, val_megapixels(data.root), forward_s, rows, opts.report_frames)
    if opts.train_minutes is not None:
        budget_s = opts.train_minutes * 60.0
    else:
        budget_s = budget.training_seconds(opts.minutes * 60.0, elapsed_s, after_s)
    return Plan(run_dir, budget_s, after_s, rows, n_val * forward_s)


def steps_per_epoch(train_cfg: dict[str, Any], train_images: int) -> int:
    """The training sampler's own count of steps in one epoch of ``train_images``."""
    return len(EpochBatchSampler(max(1, train_images), train_cfg["batch_size"], drop_last=train_cfg["drop_last"]))


def train_in_budget(rec: Recipe, root: Path, pl: Plan, epochs_cap: int | None, train_images: int, progress: bool, log: Log) -> Trained:
    """The train phase: ``pl.budget_s`` of training, in stretches that stop resumably and continue exactly
    (``train(resume=True)``). The first ``PROBE_S`` seconds are real training whose speed plans the run's
    length in steps (``train.iters``), so that the LR schedule ends with the budget; at ``REPLAN_AT`` of
    the budget the plan is made again from the stretch since (a longer, steadier measurement). A plan
    counts steps, validations and a restart apart (``budget.StepCosts``, from the stretch's ``Timing``).
    ``epochs_cap`` (None: the budget alone decides) caps the plan; the probe's provisional schedule spans
    the recipe's epochs, which the plan then replaces."""
    t0 = time.monotonic()

    def stretch(iters: int, until_s: float, resume: bool) -> dict:
        seconds = max(until_s - (time.monotonic() - t0), 1.0)
        over = {"train.iters": iters, "train.max_minutes": seconds / 60.0}
        return train(apply_overrides(rec.cfg, over, source="demo"), root, pl.run_dir, resume=resume, log=log, progress=progress)

    epoch_steps = steps_per_epoch(rec.cfg["train"], train_images)
    provisional = (epochs_cap or rec.cfg["train"]["epochs"]) * epoch_steps
    cap = provisional if epochs_cap is not None else sys.maxsize
    s = stretch(provisional, min(pl.budget_s, budget.PROBE_S), resume=False)
    mark, costs = 0.0, budget.StepCosts(0.0, pl.val_s, 0.0)
    for until in (pl.budget_s * budget.REPLAN_AT, pl.budget_s):
        if s["stopped"] != "time limit" or s["timing"].steps == 0:
            break
        now = time.monotonic() - t0
        costs, mark = stretch_costs(s["timing"], now - mark, costs), now
        iters = budget.plan_steps(pl.budget_s - now, costs, s["steps_done"], cap, epoch_steps)
        log(f"{s['steps_done']} steps in {now:.0f} s ({costs.per_step:.2f} s/step, {costs.per_val:.0f} s/validation): {iters} steps planned in all")
        s = stretch(iters, until, resume=True)
    return trained(s, pl.run_dir, log)


def stretch_costs(timing: TrainTiming, wall_s: float, before: budget.StepCosts) -> budget.StepCosts:
    """The costs a stretch of training measured: its seconds per step (``before``'s when it made fewer than
    ``MIN_MEASURED_STEPS``), per validation (``before``'s when it made none), and the rest of its wall time
    as the cost of a restart."""
    measured = timing.steps >= budget.MIN_MEASURED_STEPS or before.per_step == 0.0  # 0: nothing measured before
    per_step = timing.step_s / timing.steps if measured else before.per_step
    per_val = timing.val_s / timing.validations if timing.validations else before.per_val
    return budget.StepCosts(per_step, per_val, max(0.0, wall_s - timing.step_s - timing.val_s))


def trained(summary: dict, run_dir: Path, log: Log) -> Trained:
    """``train``'s summary as ``Trained``, with the checkpoint to score: ``best.pt``, or ``last.pt`` when
    the time limit stopped the run inside an epoch: its newest steps were never validated, and in a run
    planned to end with the budget they are the ones at the lowest LR (the first epoch unfinished, there
    is no ``best.pt`` at all)."""
    ckpt = run_dir / "best.pt"
    if summary["step"] > 0 or not ckpt.is_file():
        ckpt = run_dir / "last.pt"
        log(
            f"training stopped ({summary['stopped'] or 'done'}) at step {summary['step']} of epoch {summary['epoch'] + 1}: evaluating {ckpt} (the newest weights, unvalidated)"
        )
    hist = summary["history"]
    last_val = {k: hist[-1][k] for k in ("miou_19", "miou_34", "pixel_acc") if hist and k in hist[-1]}
    return Trained(summary["steps_done"], summary["epoch"], summary["stopped"] or "epochs done", last_val, run_dir, ckpt)
