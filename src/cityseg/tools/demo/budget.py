"""How the demo spends its minutes: the data it generates for a budget, the time it keeps for the phases
after training, and the run's length in optimiser steps. Pure functions of their arguments."""

from __future__ import annotations

import math
from dataclasses import dataclass

#: train frames generated per minute of budget: a short run cannot use many frames (it sees each only a
#: few times) and pays for every one it generates; a long run memorises too few (docs/benchmarks.md)
TRAIN_FRAMES_PER_MINUTE = 80
#: the fewest train frames generated: fewer are memorised within the first minute of training
MIN_TRAIN_FRAMES = 120
#: val frames per minute of budget, between the two bounds: 50 frames keep the score's noise below a point,
#: and a short run spends fewer of its seconds generating and scoring them (20 still cover every class)
VAL_FRAMES_PER_MINUTE = 10
MIN_VAL_FRAMES = 20
MAX_VAL_FRAMES = 50
#: train frames are generated at the smallest halving of the val size that is still this many times the
#: training size per side: the cache's area resize then averages real detail, as it does for val frames
TRAIN_OVERSAMPLE = 2
#: the smallest frame the generator draws
MIN_FRAME = (16, 32)

#: seconds of real training whose speed plans the epochs (long enough to pass the first, slower steps)
PROBE_S = 45.0
#: the fraction of the training budget at which the length of the run is planned again
REPLAN_AT = 0.6
#: a stretch of fewer steps keeps the previous plan's seconds per step (a few steps measure the loader's
#: start more than the network)
MIN_MEASURED_STEPS = 10
#: the fraction of the remaining time a plan leaves free for a machine that runs slower than measured
#: (steps varied by about 6 % from one epoch to the next on a quiet 2-core machine): a plan that overruns
#: is cut by the time limit before its end, its LR above the schedule's floor
PLAN_MARGIN = 0.05
#: seconds kept free at the end for the summary, plus a margin for a slower machine
RESERVE_S = 10.0
#: training gets at least this long, whatever the estimate of the other phases says
MIN_TRAIN_S = 20.0


@dataclass(frozen=True)
class EvalCosts:
    """The seconds of the phases after training, estimated before training so that it can use the rest."""

    #: per val frame of the official size (1024x2048 = 2.1 MP): upsampling the logits, scoring and
    #: writing two PNGs; other sizes scale with their pixels
    per_full_frame_s: float = 0.25
    full_frame_mp: float = 2.1
    #: once per run: loading the checkpoint and starting the predictor, the evaluator and the writers
    fixed_s: float = 4.0
    #: per row of the results figure (read the frame, draw four panels)
    per_figure_row_s: float = 0.4
    #: per frame of the report's gallery (read the frame again, draw and compress four pictures)
    per_report_frame_s: float = 0.15

    def seconds(self, n_val: int, megapixels: float, forward_s: float, rows: int, report_frames: int) -> float:
        """Evaluation, predictions, figure and report for ``n_val`` frames of ``megapixels`` each, given one
        forward pass at the model's size of ``forward_s``."""
        per_frame = forward_s + self.per_full_frame_s * megapixels / self.full_frame_mp
        gallery = self.per_report_frame_s * min(report_frames, n_val)
        return n_val * per_frame + self.fixed_s + self.per_figure_row_s * rows + gallery


EVAL_COSTS = EvalCosts()


def train_frames_for(minutes: float) -> int:
    """SynthCity train frames for a demo of ``minutes``: proportional to the budget, at least ``MIN_TRAIN_FRAMES``."""
    return max(MIN_TRAIN_FRAMES, round(TRAIN_FRAMES_PER_MINUTE * minutes))


def val_frames_for(minutes: float) -> int:
    """SynthCity val frames for a demo of ``minutes``: proportional to the budget, ``MIN_VAL_FRAMES`` to ``MAX_VAL_FRAMES``."""
    return min(MAX_VAL_FRAMES, max(MIN_VAL_FRAMES, round(VAL_FRAMES_PER_MINUTE * minutes)))


def train_frame_size(frame_size: tuple[int, int], train_size: tuple[int, int] | None) -> tuple[int, int]:
    """The size to generate train frames at: ``frame_size`` halved while both sides stay at least
    ``TRAIN_OVERSAMPLE`` times ``train_size`` (None: training at full size, so ``frame_size``)."""
    h, w = frame_size
    if train_size is None:
        return h, w
    th, tw = (TRAIN_OVERSAMPLE * v for v in train_size)
    while h % 2 == 0 and w % 2 == 0 and h // 2 >= max(th, MIN_FRAME[0]) and w // 2 >= max(tw, MIN_FRAME[1]):
        h, w = h // 2, w // 2
    return h, w


def training_seconds(deadline_s: float, elapsed_s: float, after_s: float) -> float:
    """What the budget leaves for training: the deadline less the time spent, the phases after training
    and ``RESERVE_S``; at least ``MIN_TRAIN_S``."""
    return max(MIN_TRAIN_S, deadline_s - elapsed_s - after_s - RESERVE_S)


@dataclass(frozen=True)
class StepCosts:
    """What the rest of a run costs: seconds per optimiser step, per validation (one per epoch), and to
    start training again (setup, checkpoint, loader), as the last stretch of training measured them."""

    per_step: float
    per_val: float
    restart: float


def validations(steps_done: int, total: int, epoch_steps: int) -> int:
    """Epoch ends (each validated) after step ``steps_done`` up to ``total``, a last partial epoch included.
    A recipe that validates less often (``train.val_every`` > 1) validates fewer: the count errs high and the plan short."""
    return max(0, -(-total // epoch_steps) - steps_done // epoch_steps)


def plan_steps(seconds_left: float, costs: StepCosts, steps_done: int, steps_cap: int, epoch_steps: int) -> int:
    """The run's total optimiser steps when ``seconds_left`` are spent at ``costs`` after ``steps_done``:
    one restart, the steps, and the validations at the epoch ends they cross; ``PLAN_MARGIN`` of the time
    stays free. At most ``steps_cap``, at least one more."""
    if costs.per_step <= 0 or not math.isfinite(costs.per_step):
        return steps_cap
    usable = max(0.0, seconds_left - costs.restart) * (1.0 - PLAN_MARGIN)
    more = math.floor(usable / costs.per_step)
    # the validations of the first guess bound those of the (shorter) answer: one pass is enough
    more = math.floor(max(0.0, usable - validations(steps_done, steps_done + more, epoch_steps) * costs.per_val) / costs.per_step)
    return max(steps_done + 1, min(steps_cap, steps_done + more))
