"""The main job, end to end on the embedded default: SynthCity -> cache -> training -> official
evaluation -> predictions -> the results figure, inside a wall-clock budget.

``run_demo(out, minutes)`` runs short phases over typed state, in ``out`` (default ``./demo``):

1. data (``data``): ``out/data`` holds SynthCity, generated when absent, incomplete, of another generator
   version or smaller than the run wants, else reused; ``data=ROOT`` uses an existing dataset (real
   Cityscapes, say) instead. Train and val frames scale with the budget (``budget.train_frames_for``,
   ``budget.val_frames_for``); train frames are drawn
   at the size training reads (``budget.train_frame_size``); val frames at the official 1024x2048.
2. cache (``train.prepare_cache``): train and val decoded once at the recipe's size.
3. plan (``train.plan``): a FRESH numbered run folder ``out/runs/NNN`` per invocation, and the training
   time: what the budget leaves after the measured phases and an estimate of the later ones
   (``budget.EvalCosts``).
4. train (``train.train_in_budget``): ``model`` (default ``DEFAULT_MODEL``) with ``recipe`` (default
   ``DEFAULT_RECIPE``); its length in steps is planned from the speed of the first ``PROBE_S`` seconds and
   again at ``REPLAN_AT`` of the budget, so that the LR schedule ends with the budget. ``--model
   residual_unet --config seed`` is the seed's Model A with the seed recipe, except the demo's batch of 2.
5. evaluate (``evaluate.evaluate``): ``best.pt`` (``last.pt`` when the time limit stopped training inside
   an epoch: the newest weights) scored on val with the official protocol.
6. outputs (``evaluate.write_outputs``): labelId predictions (test-server names), colour maps and the
   results figure with error maps; the model runs once per val frame for all three.
7. summary (``summary``): ``runs/NNN/summary.json`` (scores, paths, frame counts, time per phase), the run
   report (``runs/NNN/report/index.html``) drawn from the same evaluation, its path the last line printed.

The package face holds only the options (no torch), so ``cityseg demo --help`` starts quickly; the
phases are imported from their modules (``from cityseg.tools.demo.run import run_demo``).
"""

from cityseg.tools.demo.options import (
    DEFAULT_FRAME_SIZE,
    DEFAULT_MINUTES,
    DEFAULT_MODEL,
    DEFAULT_OUT,
    DEFAULT_RECIPE,
    DEMO_BATCH_SIZE,
    FIGURE_ROWS,
    REPORT_FRAMES,
    DemoOptions,
)

__all__ = [
    "DEFAULT_FRAME_SIZE",
    "DEFAULT_MINUTES",
    "DEFAULT_MODEL",
    "DEFAULT_OUT",
    "DEFAULT_RECIPE",
    "DEMO_BATCH_SIZE",
    "FIGURE_ROWS",
    "REPORT_FRAMES",
    "DemoOptions",
]
