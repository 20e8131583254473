"""``train(cfg, data_root, out_dir)``: one recipe (see ``config.py``) from setup to the last checkpoint.

Runs alone or under torchrun. Everything needed to continue exactly lives in ``RUN_DIR/last.pt``:
weights, optimizer, LR scheduler, grad scaler, epoch and step within the epoch, the metric history and
the RNG states. It is rewritten (atomically) at every epoch end and, inside an epoch, once
``train.checkpoint_minutes`` have passed since the last save (or every ``train.checkpoint_every`` steps),
so a preempted job loses at most that much work. Data order and augmentation are functions of ``(seed, epoch, index)``, and the global
RNGs are reseeded from ``(seed, epoch, rank)`` at every epoch start, so a run killed at any point and
resumed from its last checkpoint reaches the same weights as one that never stopped.

``RUN_DIR/best.pt`` holds the weights of the best validated epoch with what prediction needs (model,
label mode, size, normalisation) and the config and metrics, but no optimizer, schedule or RNG state:
it is for ``predict``, ``evaluate``, ``export`` and ``train.init_from``, not for ``--resume``.

Ctrl-C (SIGINT) or SIGTERM finishes the current step, writes a resumable ``last.pt`` and returns;
a second Ctrl-C aborts at once (the previous ``last.pt`` stays). ``loop.py`` holds the step and the
validation pass; this module builds their parts, resumes, and saves.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cityseg import labels as L
from cityseg.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from cityseg.data.dataset import CityscapesDataset
from cityseg.data.layout import is_camvid
from cityseg.data.mix import MixedDataset
from cityseg.data.transforms import Appearance, train_transform
from cityseg.errors import CitysegError
from cityseg.io import atomic_write_json, atomic_write_text, folder_lock
from cityseg.models import build_model, model_options
from cityseg.runtime import environment, process_context, resolve_fast, train_channels_last
from cityseg.train import distributed as D
from cityseg.train.config import APPEARANCE_KEYS, dump_toml, validate
from cityseg.train.init import init_from_checkpoint
from cityseg.train.loop import StepContext, StopFlags, evaluate, new_running, train_one_epoch
from cityseg.train.losses import build_loss
from cityseg.train.mix import source_roots, train_sampler
from cityseg.train.report import TensorBoard, check_tensorboard, epoch_line, plot_curves, write_metrics_csv
from cityseg.train.sampler import EpochBatchSampler, epoch_seed
from cityseg.train.schedule import build_scheduler
from cityseg.train.state import StopRequest, get_rng_state, seed_everything, set_rng_state

LAST, BEST = "last.pt", "best.pt"


# ---- run directory -------------------------------------------------------------------------------
def check_run_dir(out: Path, resume: bool) -> bool:
    """Refuse a RUN_DIR that is a file, or that already holds a run unless resuming; True when there is a
    checkpoint to resume. ``resume`` on a folder with no checkpoint yet (a job killed and restarted by its
    scheduler before the first save) starts fresh; one that holds an earlier run's results but lost its
    ``last.pt`` is refused rather than overwritten. Creates nothing."""
    if out.exists() and not out.is_dir():
        raise CitysegError(f"{out}: output path exists and is not a folder")
    if resume:
        if (out / LAST).is_file():
            return True
        kept = [name for name in (BEST, "metrics.csv") if (out / name).exists()]
        if kept or (out / LAST).exists():
            raise CitysegError(
                f"{out / LAST}: nothing to resume (no last.pt in the run folder, which holds "
                f"{', '.join(kept) or 'a last.pt that is not a file'} of an earlier run)"
            )
        return False
    if (out / LAST).exists():
        raise CitysegError(f"{out}: already holds a training run (last.pt); pass --resume to continue it or choose another --out")


def remove_stale_temp_files(out: Path) -> None:
    """Delete temp files a killed run left mid-write (``.last.pt.XXXX.tmp`` etc.; see ``io.atomic_path``)."""
    if out.is_dir():
        for tmp in out.glob(".*.tmp"):
            if tmp.is_file() and tmp.name.split(".")[1] in ("last", "best", "metrics", "curves", "config", "environment"):
                tmp.unlink(missing_ok=True)


# ---- building the parts ----------------------------------------------------------------------------
def param_groups(model: nn.Module, o: dict[str, Any], pretrained_lr_mult: float = 1.0) -> list[dict[str, Any]]:
    """The optimiser's groups: with weight decay, biases and norm parameters (1-D tensors) are not decayed;
    the children in ``model.pretrained_parts`` get their own groups at ``pretrained_lr_mult`` x the LR,
    after the others (so group 0 carries the recipe's LR). Frozen parameters are left out."""
    parts = tuple(getattr(model, "pretrained_parts", ()))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    split = [(1.0, [p for n, p in named if n.split(".")[0] not in parts])]
    if parts:
        split.append((pretrained_lr_mult, [p for n, p in named if n.split(".")[0] in parts]))
    groups = []
    for mult, params in split:
        lr = o["lr"] * mult
        if o["weight_decay"] > 0:
            groups += [
                {"params": [p for p in params if p.ndim > 1], "weight_decay": o["weight_decay"], "lr": lr},
                {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "lr": lr},
            ]
        else:
            groups.append({"params": params, "weight_decay": 0.0, "lr": lr})
    return groups


def build_optimizer(model: nn.Module, o: dict[str, Any], pretrained_lr_mult: float = 1.0) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD over ``param_groups``."""
    groups = param_groups(model, o, pretrained_lr_mult)
    if o["name"] == "adam":
        return torch.optim.Adam(groups, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"])
    if o["name"] == "adamw":
        return torch.optim.AdamW(groups, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"])
    return torch.optim.SGD(groups, lr=o["lr"], momentum=o["momentum"], nesterov=False)


def resolved_model_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """The recipe's model options, plus ``input_mean`` / ``input_std`` = the recipe's data normalisation
    for a model that undoes it itself (the pretrained Lite encoders), unless the recipe sets them. They
    are saved with the checkpoint, so the model is rebuilt for the data it was trained on."""
    options = dict(cfg["model"]["options"])
    if "input_mean" in model_options(cfg["model"]["name"]):
        d = cfg["data"]
        options.setdefault("input_mean", list(d["mean"]) or [0.0, 0.0, 0.0])
        options.setdefault("input_std", list(d["std"]) or [1.0, 1.0, 1.0])
    return options


def train_crop(cfg: dict[str, Any]) -> list[int]:
    """[H, W] of the training batches: ``augment.crop`` when augmenting with one, else ``data.size``."""
    crop = cfg["augment"]["crop"]
    return list(crop) if cfg["augment"]["enabled"] and crop else list(cfg["data"]["size"])


def build_dataset(cfg: dict[str, Any], root: Path, split: str, label_mode: str, train: bool = False, seed: int = 0) -> CityscapesDataset:
    """The training (augmented when the recipe says so) or validation split at the recipe's size."""
    d, a = cfg["data"], cfg["augment"]
    transform = None
    if train and a["enabled"]:
        # labelIds have no ignore index: padding after a down-scale gets id 0 ("unlabeled") there
        pad_label = L.VOID_VALUE[label_mode]
        appearance = Appearance(**{key: a[key] for key in APPEARANCE_KEYS})
        transform = train_transform(train_crop(cfg), a["scale"], a["hflip"], a["photometric"], pad_label, appearance)
    return CityscapesDataset(
        root=root,
        split=split,
        size=tuple(d["size"]),
        label_mode=label_mode,
        interpolation=d["interpolation"],
        mean=d["mean"] or None,
        std=d["std"] or None,
        transform=transform,
        cache=d["cache"],
        seed=seed,
        workers=max(1, d["workers"]),
    )


def class_pixel_counts(ds: CityscapesDataset, num_classes: int) -> torch.Tensor:
    """Per-class pixel counts of a dataset's labels (for ``class_weights = "auto"``)."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for i in range(len(ds)):
        y = torch.from_numpy(np.asarray(ds.load(i)[1], dtype=np.int64).reshape(-1))  # before augmentation
        counts += torch.bincount(y[y < num_classes], minlength=num_classes).double()
    return counts


def loader_workers(cfg: dict[str, Any]) -> dict[str, Any]:
    """DataLoader worker options: ``data.workers`` processes started the runtime's way (fork where the
    platform has it), also in a process that was itself spawned (``mp.spawn`` makes spawn its default)."""
    n = cfg["data"]["workers"]
    return {"num_workers": n, "multiprocessing_context": process_context() if n > 0 else None}


@dataclass
class Timing:
    """Where one ``train`` call's time went: optimiser steps (their loader waits included) and
    validations. The rest of its wall time is setup and checkpoints. A caller that plans a run's length
    from its speed (the demo) reads it, so that a short stretch's setup and validation do not count as
    slow steps."""

    steps: int = 0
    step_s: float = 0.0
    validations: int = 0
    val_s: float = 0.0


@dataclass
class Run:
    """A training run: its parts, and where it stands (what ``last.pt`` records)."""

    cfg: dict[str, Any]
    out: Path
    label_mode: str
    ctx: StepContext
    train_ds: CityscapesDataset
    val_loader: torch.utils.data.DataLoader
    sampler: EpochBatchSampler
    say: Callable[[str], None]
    epoch: int = 0  # epochs completed
    step: int = 0  # steps done in the current epoch
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float = -1.0
    running: dict[str, Any] = field(default_factory=new_running)
    metrics: dict[str, float] = field(default_factory=dict)
    rng: list[dict[str, Any]] | None = None  # RNG states of a mid-epoch checkpoint being resumed
    timing: Timing = field(default_factory=Timing)  # this call's, not saved

    @property
    def info(self) -> D.DistInfo:
        return self.ctx.info

    def weights(self) -> Checkpoint:
        """What ``best.pt`` holds: the weights, what prediction needs, and where the run stood (epoch,
        metrics, config, history); no optimizer, schedule or RNG state, so it is a third of ``last.pt``
        under Adam and cannot be resumed."""
        d, cfg = self.cfg["data"], self.cfg
        return Checkpoint(
            model=self.ctx.model.state_dict(),
            model_name=cfg["model"]["name"],
            model_options=dict(cfg["model"]["options"]),
            label_mode=self.label_mode,
            num_classes=L.num_classes(self.label_mode),
            class_names=list(L.class_names(self.label_mode)),
            input_size=list(d["size"]),
            interpolation=d["interpolation"],
            mean=list(d["mean"]) or None,
            std=list(d["std"]) or None,
            epoch=self.epoch,
            step=self.step,
            config=copy.deepcopy(cfg),
            metrics=dict(self.metrics),
            best_miou=self.best,
            history=copy.deepcopy(self.history),
            world_size=self.info.world_size,
        )

    def checkpoint(self) -> Checkpoint:
        """The whole state, as ``last.pt`` holds it (a collective call: every process gathers RNG states)."""
        ctx = self.ctx
        return replace(
            self.weights(),
            optimizer=ctx.optimizer.state_dict(),
            scheduler=ctx.scheduler.state_dict(),
            scaler=ctx.scaler.state_dict() if ctx.scaler.is_enabled() else None,
            train_state=dict(self.running),
            rng=D.all_gather_objects(get_rng_state(), self.info),
        )

    def save(self, name: str) -> None:
        """Write ``last.pt`` (everything a resume needs) or ``best.pt`` (the weights, ``weights()``)."""
        ckpt = self.checkpoint() if name == LAST else self.weights()
        if self.info.is_main:
            save_checkpoint(self.out / name, ckpt)
        D.barrier(self.info)


def load_resume_checkpoint(cfg: dict[str, Any], out: Path, label_mode: str) -> dict[str, Any]:
    """``last.pt``, refused unless it was written by the same model, label mode and size."""
    ckpt = load_checkpoint(out / LAST)
    if ckpt.get("optimizer") is None:
        raise CitysegError(f"{out / LAST}: holds weights only (a best.pt?), no optimizer state to resume; use the run's own last.pt")
    for key, want in (
        ("model_name", cfg["model"]["name"]),
        ("label_mode", label_mode),
        ("num_classes", L.num_classes(label_mode)),
        ("input_size", list(cfg["data"]["size"])),
        ("model_options", cfg["model"]["options"]),
    ):
        if ckpt.get(key) != want:
            raise CitysegError(f"{out / LAST}: cannot resume: checkpoint has {key} = {ckpt.get(key)!r}, this run {want!r}")
    return ckpt


def build_train_set(cfg: dict[str, Any], root: Path, label_mode: str) -> CityscapesDataset | MixedDataset:
    """The training set: ``root``'s train split as before, or the ``data.sources`` roots (validation stays on
    ``root``) as one ``MixedDataset``, which also carries ClassMix (``augment.classmix``)."""
    d, seed = cfg["data"], int(cfg["train"]["seed"])
    if not d["sources"] and not cfg["augment"]["classmix"]:
        return build_dataset(cfg, root, d["train_split"], label_mode, train=True, seed=seed)
    parts = [build_dataset(cfg, r, d["train_split"], label_mode, train=True, seed=seed) for r in source_roots(cfg) or [root]]
    # ClassMix never pastes the void value: padding and "unlabeled" keep the first frame
    return MixedDataset(parts, seed, cfg["augment"]["classmix"], ignore_value=L.VOID_VALUE[label_mode])


def _datasets(cfg: dict[str, Any], root: Path, label_mode: str, info: D.DistInfo):
    """Training and validation splits; rank 0 builds the caches first, the other processes then read them."""
    d = cfg["data"]
    if info.distributed and not info.is_main:
        D.barrier(info)
    try:
        train_ds = build_train_set(cfg, root, label_mode)
        val_ds = build_dataset(cfg, root, d["val_split"], "camvid" if label_mode == "camvid" else "labelIds")
    finally:
        if info.distributed and info.is_main:
            D.barrier(info)
    return train_ds, val_ds


def _wrap_model(model: nn.Module, cfg: dict[str, Any], info: D.DistInfo, channels_last: bool) -> nn.Module:
    """The model on its device, with SyncBatchNorm / channels_last / DDP as the recipe and torchrun ask."""
    device = info.device
    model.to(device)
    if cfg["model"]["sync_bn"] and info.distributed:
        if device.type != "cuda":
            raise CitysegError(
                "model.sync_bn = true needs CUDA (torch's SyncBatchNorm is GPU-only); on CPU set model.sync_bn = false (BatchNorm statistics stay per process)"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if info.distributed:
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


def setup(cfg: dict[str, Any], root: Path, out: Path, info: D.DistInfo, say: Callable[[str], None]) -> Run:
    """Build the model, data, loss, optimizer and schedule of a fresh run (identical on every process)."""
    t = cfg["train"]
    label_mode = L.check_label_mode(cfg["data"]["label_mode"])
    num_classes = L.num_classes(label_mode)
    if t["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(int(t["seed"]))  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    model = build_model(cfg["model"]["name"], num_classes=num_classes, **cfg["model"]["options"])
    model.check_input_shape(*cfg["data"]["size"])
    model.check_input_shape(*train_crop(cfg))
    if t["init_from"]:
        init_from_checkpoint(model, t["init_from"])
    if t["freeze_encoder_bn"] and model.pretrained_parts:
        model.freeze_batchnorm(model.pretrained_parts)
    if t["frozen_stages"] and model.pretrained_parts:
        model.freeze_stages(t["frozen_stages"])
    train_ds, val_ds = _datasets(cfg, root, label_mode, info)
    counts = class_pixel_counts(train_ds, num_classes) if any(s.get("class_weights") == "auto" for s in cfg["loss"]) else None
    criterion = build_loss(cfg["loss"], num_classes, ignore_index=L.IGNORE_INDEX, class_counts=counts, scale=t["loss_scale"], dist=info).to(info.device)
    sampler = train_sampler(cfg, getattr(train_ds, "lengths", [len(train_ds)]), info)
    if len(sampler) == 0:
        raise CitysegError(f"{root}: split {cfg['data']['train_split']!r} has {len(train_ds)} images, fewer than one batch of {t['batch_size']} (drop_last)")
    val_subset = torch.utils.data.Subset(val_ds, list(range(info.rank, len(val_ds), info.world_size)))
    val_loader = torch.utils.data.DataLoader(val_subset, batch_size=t["eval_batch_size"], shuffle=False, **loader_workers(cfg))
    channels_last, amp_dtype = resolve_fast(t["fast"], info.device)
    channels_last = train_channels_last(model, channels_last)
    net = _wrap_model(model, cfg, info, channels_last)
    optimizer = build_optimizer(model, cfg["optim"], t["encoder_lr_mult"])
    scheduler = build_scheduler(optimizer, cfg["schedule"], total_steps(t, len(sampler)), cfg["optim"]["lr"])
    scaler = torch.amp.GradScaler(info.device.type, enabled=info.device.type == "cuda" and amp_dtype == torch.float16)
    ctx = StepContext(
        net,
        criterion,
        optimizer,
        scheduler,
        scaler,
        info,
        channels_last,
        amp_dtype,
        float(t["grad_clip"]),
        t["nan_policy"],
        out / LAST,
        total_steps(t, len(sampler)),
    )
    return Run(cfg, out, label_mode, ctx, train_ds, val_loader, sampler, say)


def total_steps(t: dict[str, Any], steps_per_epoch: int) -> int:
    """Optimiser steps of the whole run: ``train.iters`` when set, else whole epochs."""
    return int(t["iters"]) if t["iters"] > 0 else int(t["epochs"]) * steps_per_epoch


def planned_epochs(t: dict[str, Any], steps_per_epoch: int) -> int:
    """Epochs the run spans; with ``train.iters`` the last one may be partial."""
    return -(-total_steps(t, steps_per_epoch) // steps_per_epoch)


def epoch_steps(t: dict[str, Any], steps_per_epoch: int, epoch: int) -> int:
    """Steps of epoch ``epoch`` (0-based): a full epoch, or what ``train.iters`` leaves for the last one."""
    return min(steps_per_epoch, total_steps(t, steps_per_epoch) - epoch * steps_per_epoch)


def resume(run: Run, ckpt: dict[str, Any]) -> None:
    """Continue from ``last.pt``: weights, optimizer, schedule, scaler, history and the epoch's position."""
    ctx = run.ctx
    ctx.model.load_state_dict(ckpt["model"])
    ctx.optimizer.load_state_dict(ckpt["optimizer"])
    ctx.scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler"):
        ctx.scaler.load_state_dict(ckpt["scaler"])
    run.epoch, run.step = int(ckpt["epoch"]), int(ckpt.get("step") or 0)
    run.history = list(ckpt.get("history") or [])
    run.best = float(ckpt.get("best_miou", -1.0))
    run.metrics = dict(ckpt.get("metrics") or {})
    if run.step:
        run.running = dict(ckpt["train_state"])
        run.rng = ckpt["rng"]
    run.say(f"resuming {run.out / LAST}: epoch {run.epoch + 1}, step {run.step}/{len(run.sampler)}")


# ---- the epochs ------------------------------------------------------------------------------------
def _epoch_loader(run: Run, epoch: int) -> torch.utils.data.DataLoader:
    """The epoch's loader, from its first step or, when resuming mid-epoch, from the saved step and RNGs."""
    info, seed = run.info, int(run.cfg["train"]["seed"])
    if run.rng is not None:
        set_rng_state(run.rng[info.rank] if len(run.rng) == info.world_size else run.rng[0])
        run.rng = None
    else:
        seed_everything(epoch_seed(seed, epoch, 1 + info.rank))
        run.running, run.step = new_running(), 0
    run.sampler.set_epoch(epoch, run.step)
    run.train_ds.set_epoch(epoch)
    return torch.utils.data.DataLoader(
        run.train_ds,
        batch_sampler=run.sampler,
        **loader_workers(run.cfg),
        pin_memory=info.device.type == "cuda",
        generator=torch.Generator().manual_seed(epoch_seed(seed, epoch, 2)),
    )


def _params_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.state_dict().values() if p.is_floating_point())


def end_epoch(run: Run, epoch: int, tb: TensorBoard, show: bool) -> None:
    """Validate when due, then record the epoch: history, best.pt, metrics.csv, last.pt, curves, log line."""
    t = run.cfg["train"]
    if run.running["steps"] == 0:
        raise CitysegError(f"epoch {epoch + 1}: every step was skipped (non-finite loss); stopping")
    row = {"epoch": epoch + 1, "train_loss": run.running["loss_sum"] / run.running["steps"], "lr": run.ctx.optimizer.param_groups[0]["lr"]}
    tick = time.monotonic()
    if (epoch + 1) % t["val_every"] == 0 or epoch + 1 == planned_epochs(t, len(run.sampler)):
        row.update(evaluate(run.ctx, run.val_loader, run.label_mode, show))
        run.metrics = {k: float(v) for k, v in row.items() if k in ("pixel_acc", "miou_19", "miou_34", "miou_11", "val_loss")}
        run.timing.validations += 1
        run.timing.val_s += time.monotonic() - tick
    row["seconds"] = round(run.running["seconds"] + time.monotonic() - tick, 3)
    if not _params_finite(run.ctx.model):
        raise CitysegError(f"epoch {epoch + 1}: the weights became non-finite; stopping, {run.out / LAST} kept")
    run.history.append(row)
    run.epoch, run.step = epoch + 1, 0
    key = {"trainIds": "miou_19", "camvid": "miou_11"}.get(run.label_mode, "miou_34")
    if key in row and row[key] > run.best:
        run.best = row[key]
        run.save(BEST)
    if run.info.is_main:
        write_metrics_csv(run.out / "metrics.csv", run.history)
    run.save(LAST)
    if run.info.is_main:
        plot_curves(run.out / "curves.png", run.history)
        tb.scalars(row, epoch + 1)
        run.say(epoch_line(row))


def fit(run: Run, progress: bool) -> tuple[str, str]:
    """Train the remaining epochs; returns (why it stopped early or "", the signal's name)."""
    from tqdm import tqdm

    t, info = run.cfg["train"], run.info
    show = progress and info.is_main
    tb = TensorBoard(run.out / "tensorboard", bool(t["tensorboard"]) and info.is_main)
    t0, limit_s, stopped = time.monotonic(), t["max_minutes"] * 60.0, ""
    every_s = t["checkpoint_minutes"] * 60.0
    saved_at = t0
    steps = len(run.sampler)

    def save_last() -> None:
        nonlocal saved_at
        run.save(LAST)
        saved_at = time.monotonic()

    def after_step(step: int, save_due: bool) -> None:
        # a mid-epoch last.pt is the same state a Ctrl-C saves: --resume continues from it exactly
        run.step = step
        if (save_due or (t["checkpoint_every"] and step % t["checkpoint_every"] == 0)) and step < n:  # n: this epoch's steps
            save_last()

    try:
        with StopRequest() as stop:

            def poll() -> StopFlags:
                now = time.monotonic()
                return StopFlags(stop.requested, limit_s > 0 and now - t0 > limit_s, every_s > 0 and now - saved_at > every_s)

            epochs = planned_epochs(t, steps)
            for epoch in range(run.epoch, epochs):
                n = epoch_steps(t, steps, epoch)
                loader = itertools.islice(_epoch_loader(run, epoch), n - run.step)
                bar = tqdm(total=n, initial=run.step, desc=f"epoch {epoch + 1}/{epochs}", disable=not show, dynamic_ncols=True, unit="step")
                first, tick = run.step, time.monotonic()
                run.step, flags = train_one_epoch(run.ctx, loader, epoch, run.step, run.running, poll, after_step, bar, run.say)
                run.timing.steps += run.step - first
                run.timing.step_s += time.monotonic() - tick
                bar.close()
                if flags.stop:
                    stopped = "interrupted" if flags.interrupted else "time limit"
                if stopped and run.step < n:
                    run.save(LAST)  # resumable mid-epoch
                    break
                end_epoch(run, epoch, tb, show)  # writes last.pt
                saved_at = time.monotonic()
                if stopped:
                    break
    except KeyboardInterrupt:
        run.say(f"\naborted; {run.out / LAST} holds the last saved state")
        raise
    finally:
        tb.close()
    return stopped, stop.signame


# ---- the entry point -------------------------------------------------------------------------------
def train(
    cfg: dict[str, Any], data_root: str | Path, out_dir: str | Path, resume: bool = False, log: Callable[[str], None] = print, progress: bool = True
) -> dict[str, Any]:
    """Train ``cfg["model"]["name"]`` with the recipe ``cfg`` on ``data_root``; files go to ``out_dir``.

    Returns a summary: ``{"run_dir", "epoch", "step", "steps_done", "best_miou", "metrics", "stopped", "history",
    "timing"}`` where ``stopped`` is "" (all epochs done), "interrupted" or "time limit" and ``timing`` is
    this call's ``Timing``.
    """
    cfg = validate(copy.deepcopy(cfg))
    if is_camvid(data_root):  # CamVid has its own 11 classes: the recipe's Cityscapes label mode does not apply
        cfg["data"]["label_mode"] = "camvid"
    if not cfg["model"]["name"]:
        raise CitysegError("no model given (--model NAME)")
    cfg["model"]["options"] = resolved_model_options(cfg)
    if cfg["train"]["tensorboard"]:
        check_tensorboard()
    out = Path(out_dir)
    if resume and not check_run_dir(out, resume):
        log(f"{out}: no checkpoint to resume yet; starting a fresh run")
        resume = False
    check_run_dir(out, resume)
    info = D.init_distributed_mode()
    try:
        # one writer per run folder: rank 0 holds its lock for the run's life (the other ranks write nothing)
        with folder_lock(out, "a `cityseg train` writing this run folder") if info.is_main else contextlib.nullcontext():
            check_run_dir(out, resume)  # again, now that no other trainer can write between the check and the run
            return _train(cfg, Path(data_root), out, resume, info, log, progress)
    finally:
        D.cleanup(info)


def _train(cfg: dict[str, Any], root: Path, out: Path, resume_run: bool, info: D.DistInfo, log: Callable[[str], None], progress: bool) -> dict[str, Any]:
    say = log if info.is_main else (lambda *_: None)
    ckpt = load_resume_checkpoint(cfg, out, L.check_label_mode(cfg["data"]["label_mode"])) if resume_run else None
    run = setup(cfg, root, out, info, say)
    if ckpt is not None:
        resume(run, ckpt)
    if info.is_main:
        remove_stale_temp_files(out)
        atomic_write_text(out / "config.toml", dump_toml(cfg))  # creates RUN_DIR (lazily, here)
        atomic_write_json(out / "environment.json", environment(root))
        if run.history:
            write_metrics_csv(out / "metrics.csv", run.history)
    say(_start_line(run))
    stopped, signame = fit(run, progress)
    if stopped == "interrupted":
        say(
            f"\ninterrupted ({signame}): saved {out / LAST} at epoch {run.epoch + 1}, step {run.step}/"
            f"{len(run.sampler)}; continue with the same command plus --resume"
        )
    elif stopped == "time limit":
        say(f"\ntime limit of {cfg['train']['max_minutes']:g} min reached: saved {out / LAST}; --resume continues")
    return {
        "run_dir": str(out),
        "epoch": run.epoch,
        "step": run.step,
        "steps_done": sum(epoch_steps(cfg["train"], len(run.sampler), e) for e in range(run.epoch)) + run.step,
        "best_miou": run.best,
        "metrics": run.metrics,
        "stopped": stopped,
        "history": run.history,
        "timing": run.timing,
    }


def _start_line(run: Run) -> str:
    t, (h, w), info, ctx = run.cfg["train"], run.cfg["data"]["size"], run.info, run.ctx
    split = f" = {info.world_size} x {run.sampler.per_rank}" if info.distributed else ""
    return (
        f"training {run.cfg['model']['name']} on {len(run.train_ds)} images ({len(run.sampler)} steps/epoch, "
        f"global batch {t['batch_size']}{split}), {run.label_mode}, {h}x{w}, device {info.device.type}"
        f"{', channels_last' if ctx.channels_last else ''}{f', autocast {ctx.amp_dtype}' if ctx.amp_dtype else ''}"
    )
