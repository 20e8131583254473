"""``run_demo``: the phases in order, data -> cache -> plan -> train -> evaluate -> outputs -> summary."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cityseg.models import check_model_name
from cityseg.runtime import default_workers
from cityseg.tools.demo import budget
from cityseg.tools.demo.data import DataState, SynthRequest, prepare_data
from cityseg.tools.demo.evaluate import evaluate, write_outputs
from cityseg.tools.demo.options import DEFAULT_MINUTES, DEFAULT_OUT, DemoOptions
from cityseg.tools.demo.summary import finish, summary
from cityseg.tools.demo.timer import Timer
from cityseg.tools.demo.train import Recipe, plan, prepare_cache, recipe, train_in_budget

RUN_NAME = re.compile(r"^\d{3,}$")


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


def synth_request(opts: DemoOptions, rec: Recipe) -> SynthRequest:
    """The SynthCity this run generates if it has none: frame counts scaled to the budget (unless given),
    train frames at the size training reads, val frames at ``frame_size``."""
    train = opts.train_frames if opts.train_frames is not None else budget.train_frames_for(opts.minutes)
    val = opts.val_frames if opts.val_frames is not None else budget.val_frames_for(opts.minutes)
    return SynthRequest(train, val, budget.train_frame_size(opts.frame_size, rec.size), opts.frame_size, opts.seed)


def run_options(opts: DemoOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole demo (see the package doc) and return its summary dict."""
    timer = Timer(opts.started_at)
    check_model_name(opts.model)
    rec = recipe(opts)
    workers = default_workers() if opts.workers is None else max(1, int(opts.workers))
    data: DataState = prepare_data(opts.out, opts.data, synth_request(opts, rec), workers, timer, log, rec.cache_spec)
    with timer.phase("cache"):
        prepare_cache(data.root, rec, workers, log)
    pl = plan(opts, rec, data, claim_run_dir(opts.out / "runs"), timer.elapsed())
    log(
        f"training {opts.model} with the {opts.recipe} recipe (batch {rec.batch_size}, grad clip {rec.grad_clip:g}) in {pl.run_dir} "
        f"for at most {pl.budget_s / 60:.1f} min (estimated evaluation {pl.after_s:.0f} s)"
    )
    with timer.phase("train"):
        run = train_in_budget(rec, data.root, pl, opts.epochs, data.frames.get(rec.cfg["data"]["train_split"], 0), opts.progress, log)
    with timer.phase("evaluate"):
        scored = evaluate(run.checkpoint, data.root, pl.run_dir, opts.progress, log)
    out = write_outputs(scored, data.root, pl.run_dir, pl.figure_rows, timer)
    return finish(summary(opts, rec, data, run, scored, out, timer), opts, data.root, run, scored, timer, log)


def run_demo(out: str | os.PathLike = DEFAULT_OUT, minutes: float = DEFAULT_MINUTES, log: Callable[[str], None] = print, **options: Any) -> dict[str, Any]:
    """``run_options`` with ``DemoOptions(out, minutes, **options)``; bad options raise ``CitysegError``."""
    return run_options(DemoOptions(out=Path(out), minutes=minutes, **options), log)
