"""One epoch of training and one validation pass, in the spirit of torchvision's ``train_one_epoch`` and
``evaluate``. ``run.py`` builds the parts (``StepContext``) and decides what happens between epochs.

A model returns one logits tensor, or in training mode a dict of tensors at the input size
(``{"out": ..., "aux": ...}``); the loss reads what its terms name and everything else uses ``"out"``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cityseg import labels as L
from cityseg.errors import CitysegError
from cityseg.eval.metrics import CamVidEvaluator, CityscapesEvaluator
from cityseg.runtime import autocast, to_device
from cityseg.train import distributed as D
from cityseg.train.losses import CombinedLoss, main_output

LUT_L2T = torch.from_numpy(L.LABELID_TO_TRAINID.astype(np.int64))
LUT_T2L = torch.from_numpy(L.TRAINID_TO_LABELID.astype(np.uint8))


@dataclass
class StepContext:
    """Everything a training step touches."""

    net: nn.Module  # the model, wrapped in DistributedDataParallel under torchrun
    criterion: CombinedLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    info: D.DistInfo
    channels_last: bool
    amp_dtype: torch.dtype | None
    grad_clip: float
    nan_policy: str  # "stop" | "skip"
    last_path: Path  # named in errors: the checkpoint that stays when training stops
    total_steps: int = 0  # of the whole run: loss terms with a `during` window read the progress from it

    @property
    def progress(self) -> float | None:
        """The fraction of the run's steps done (None when the run's length is unknown)."""
        return self.scheduler.last_epoch / self.total_steps if self.total_steps > 0 else None

    @property
    def model(self) -> nn.Module:
        net = self.net
        return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        with autocast(self.info.device, self.amp_dtype):
            return self.net(to_device(x, self.info.device, self.channels_last))


def new_running() -> dict[str, Any]:
    """The running sums of an epoch (saved in mid-epoch checkpoints as ``train_state``)."""
    return {"loss_sum": 0.0, "steps": 0, "skipped": 0, "seconds": 0.0}


def _backward(ctx: StepContext, loss: torch.Tensor) -> bool:
    """Backward pass and optional clipping; True when the gradients are not finite."""
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.scaler.scale(loss).backward()
    if ctx.grad_clip > 0 or ctx.nan_policy == "skip":
        ctx.scaler.unscale_(ctx.optimizer)
        norm = nn.utils.clip_grad_norm_(ctx.model.parameters(), ctx.grad_clip if ctx.grad_clip > 0 else float("inf"))
        return not bool(torch.isfinite(norm)) and not ctx.scaler.is_enabled()
    return False


def train_step(
    ctx: StepContext, x: torch.Tensor, y: torch.Tensor, poll: Callable[[], list[bool]], running: dict[str, Any], epoch: int, step: int
) -> tuple[list[bool], str]:
    """One optimiser step, or a skipped one under ``nan_policy = "skip"``; returns ``poll()``'s flags agreed
    over all processes (one collective with the loss check) and what was skipped ("" for a normal step)."""
    loss = ctx.criterion(ctx.forward(x), y.to(ctx.info.device, non_blocking=True), ctx.progress)
    flags = D.all_flags([not bool(torch.isfinite(loss)), *poll()], ctx.info)
    bad = flags[0] or _backward(ctx, loss)
    if bad:
        ctx.optimizer.zero_grad(set_to_none=True)
        what = f"non-finite loss ({float(loss.detach())})" if flags[0] else "non-finite gradients"
        if ctx.nan_policy == "stop":
            raise CitysegError(
                f"{what} at epoch {epoch + 1} step {step + 1}: training stopped; the last good checkpoint {ctx.last_path} is "
                f'kept (try a lower optim.lr, train.grad_clip, or train.nan_policy="skip")'
            )
        running["skipped"] += 1
    else:
        ctx.scaler.step(ctx.optimizer)
        ctx.scaler.update()
        running["loss_sum"] += _mean_over_ranks(loss.detach(), ctx.info)
        running["steps"] += 1
    ctx.scheduler.step()
    return flags[1:], (f"skipping step {step + 1} of epoch {epoch + 1}: {what}" if bad else "")


def train_one_epoch(
    ctx: StepContext,
    loader: Iterable,
    epoch: int,
    step: int,
    running: dict[str, Any],
    poll: Callable[[], list[bool]],
    after_step: Callable[[int, bool], None],
    bar: Any,
    say: Callable[[str], None],
) -> tuple[int, list[bool]]:
    """Train over ``loader`` from ``step``; returns (steps done, stop flags [interrupted, time limit]).

    ``poll()`` returns [stop requested, time limit reached, checkpoint due] for this process; every
    process acts on the flags agreed over all of them, so collective saves and stops stay in step.
    ``after_step(step, checkpoint_due)`` runs after each step that does not stop the epoch."""
    ctx.net.train()
    flags = [False, False, False]
    tick = time.monotonic()
    for x, y in loader:
        flags, skipped = train_step(ctx, x, y, poll, running, epoch, step)
        if skipped:
            say("\n" + skipped)
        step += 1
        now = time.monotonic()
        running["seconds"] += now - tick
        bar.update(1)
        bar.set_postfix(
            loss=f"{running['loss_sum'] / max(1, running['steps']):.4f}",
            img_s=f"{x.shape[0] * ctx.info.world_size / max(now - tick, 1e-9):.1f}",
            lr=f"{ctx.optimizer.param_groups[0]['lr']:.2e}",
        )
        tick = now
        if flags[0] or flags[1]:
            break
        after_step(step, flags[2])
    return step, flags[:2]


@torch.no_grad()
def evaluate(ctx: StepContext, loader: Iterable, label_mode: str, show: bool = False) -> dict[str, float]:
    """Validate at the model's resolution: pixel_acc, miou_19 (official, classes with no pixels skipped),
    miou_34 (the seed's) and val_loss, from one fresh evaluator per call, all-reduced over processes. A
    CamVid run (labels in the "camvid" mode) reports miou_11 over the CamVid classes instead of the two."""
    from tqdm import tqdm

    device = ctx.info.device
    ctx.net.eval()
    camvid = label_mode == "camvid"
    evaluator = CamVidEvaluator() if camvid else CityscapesEvaluator()
    loss_sum = torch.zeros(2, dtype=torch.float64)
    for x, gt in tqdm(loader, desc="  val", leave=False, disable=not show, dynamic_ncols=True):
        logits = main_output(ctx.forward(x)).float()
        gt = gt.to(device)
        target = LUT_L2T.to(device)[gt] if label_mode == "trainIds" else gt
        loss = float(ctx.criterion.validation_loss(logits, target, ctx.progress))
        loss_sum += torch.tensor([loss * x.shape[0], x.shape[0]], dtype=torch.float64)
        pred = logits.argmax(1)
        pred = LUT_T2L.to(device)[pred] if label_mode == "trainIds" else pred.to(torch.uint8)
        evaluator.add(pred.cpu().numpy(), gt.to(torch.uint8).cpu().numpy())
    if ctx.info.distributed:
        evaluator.all_reduce()
        D.all_reduce_sum(loss_sum, ctx.info)
    s = evaluator.scores()
    scores = {"miou_11": float(s["mIoU"])} if camvid else {"miou_19": float(s["mIoU"]), "miou_34": float(s["mIoU_34"])}
    return {"pixel_acc": float(s["pixel_acc"]), **scores, "val_loss": float(loss_sum[0] / loss_sum[1]) if loss_sum[1] > 0 else math.nan}


def _mean_over_ranks(loss: torch.Tensor, info: D.DistInfo) -> float:
    if not info.distributed:
        return float(loss)
    v = loss.detach().float().reshape(1).clone()
    D.all_reduce_sum(v, info)
    return float(v) / info.world_size
