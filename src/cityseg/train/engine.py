"""The training loop: plain PyTorch in the spirit of torchvision's segmentation reference.

``train(cfg, data_root, out_dir, resume=False)`` runs one recipe (see ``config.py``) alone or under
torchrun. Everything needed to continue exactly lives in ``RUN_DIR/last.pt``: weights, optimizer,
LR scheduler, grad scaler, epoch and step within the epoch, the metric history and the RNG states.
Data order and augmentation are functions of ``(seed, epoch, index)``, and the global RNGs are reseeded
from ``(seed, epoch, rank)`` at every epoch start, so a run killed at any point and resumed from its
last checkpoint reaches the same weights as one that never stopped.

Ctrl-C (SIGINT) or SIGTERM finishes the current step, writes a resumable ``last.pt`` and returns;
a second Ctrl-C aborts at once (the previous ``last.pt`` stays).
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cityseg import labels as L
from cityseg.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from cityseg.errors import CitysegError
from cityseg.io import atomic_write_text
from cityseg.losses import build_loss
from cityseg.runtime import autocast, resolve_fast
from cityseg.train import distributed as D
from cityseg.train.config import dump_toml, validate
from cityseg.train.report import TensorBoard, plot_curves, write_metrics_csv
from cityseg.train.sampler import EpochBatchSampler, epoch_seed
from cityseg.train.schedule import build_scheduler

LAST, BEST = "last.pt", "best.pt"


# ---- run directory -------------------------------------------------------------------------------
def check_run_dir(out: Path, resume: bool) -> None:
    """Refuse a RUN_DIR that is a file, or that already holds a run unless resuming. Creates nothing."""
    if out.exists() and not out.is_dir():
        raise CitysegError(f"{out}: output path exists and is not a folder")
    if resume:
        if not (out / LAST).is_file():
            raise CitysegError(f"{out / LAST}: nothing to resume (no last.pt in the run folder)")
    elif (out / LAST).exists():
        raise CitysegError(f"{out}: already holds a training run (last.pt); pass --resume to continue it or choose another --out")


def remove_stale_temp_files(out: Path) -> None:
    """Delete temp files a killed run left mid-write (``.last.pt.XXXX.tmp`` etc.; see ``io.atomic_path``)."""
    if out.is_dir():
        for tmp in out.glob(".*.tmp"):
            if tmp.is_file() and tmp.name.split(".")[1] in ("last", "best", "metrics", "curves", "config"):
                tmp.unlink(missing_ok=True)


# ---- RNG state that torch.load(weights_only=True) accepts ------------------------------------------
def get_rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_state[0]), "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss_next": py_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# ---- Ctrl-C / SIGTERM ------------------------------------------------------------------------------
class StopRequest:
    """Turns the first SIGINT/SIGTERM into a flag checked between steps; a second SIGINT aborts."""

    def __init__(self):
        self.requested = False
        self.signame = ""
        self._old: dict[int, Any] = {}

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signame = signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


# ---- building blocks -------------------------------------------------------------------------------
def build_optimizer(model: nn.Module, o: dict[str, Any]) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD; with weight decay, biases and norm parameters (1-D tensors) are not decayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    if o["weight_decay"] > 0:
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": o["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    else:
        groups = [{"params": params, "weight_decay": 0.0}]
    if o["name"] == "adam":
        return torch.optim.Adam(groups, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"])
    if o["name"] == "adamw":
        return torch.optim.AdamW(groups, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"])
    return torch.optim.SGD(groups, lr=o["lr"], momentum=o["momentum"], nesterov=False)


def build_transform(cfg: dict[str, Any]):
    a, d = cfg["augment"], cfg["data"]
    if not a["enabled"]:
        return None
    from cityseg.data import transforms as T

    # labelIds have no ignore index: padding after a down-scale gets id 0 ("unlabeled") there
    pad_label = L.IGNORE_INDEX if d["label_mode"] == "trainIds" else 0
    steps = [T.RandomScaleCrop(scale=tuple(a["scale"]), crop=tuple(d["size"]), ignore_index=pad_label)]
    if a["hflip"] > 0:
        steps.append(T.RandomHorizontalFlip(a["hflip"]))
    if a["photometric"]:
        steps.append(T.PhotometricJitter())
    return T.Compose(steps)


def build_dataset(cfg: dict[str, Any], root: Path, split: str, label_mode: str, transform=None, seed: int = 0):
    from cityseg.data.dataset import CityscapesDataset

    d = cfg["data"]
    return CityscapesDataset(root=root, split=split, size=tuple(d["size"]), label_mode=label_mode,
                             interpolation=d["interpolation"], mean=d["mean"] or None, std=d["std"] or None,
                             transform=transform, cache=d["cache"], seed=seed, workers=max(1, d["workers"]))


def class_pixel_counts(ds, num_classes: int) -> torch.Tensor:
    """Per-class pixel counts of a dataset's labels (for ``class_weights = "auto"``)."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for i in range(len(ds)):
        y = torch.from_numpy(np.asarray(ds.load(i)[1], dtype=np.int64).reshape(-1))  # before augmentation
        counts += torch.bincount(y[y < num_classes], minlength=num_classes).double()
    return counts


LUT_L2T = torch.from_numpy(L.LABELID_TO_TRAINID.astype(np.int64))
LUT_T2L = torch.from_numpy(L.TRAINID_TO_LABELID.astype(np.int64))


def scores(mat34: torch.Tensor) -> dict[str, float]:
    """pixel_acc (official: over evaluated GT pixels), miou_19 (official 19-class mIoU, classes with
    TP + FP + FN = 0 skipped) and miou_34 (the seed's mIoU over all 34 labelIds) of a labelId matrix."""
    from cityseg import metrics as M

    ious = [v for v in M.class_iou(mat34).values() if not math.isnan(v)]
    return {"pixel_acc": float(M.pixel_accuracy(mat34)),
            "miou_19": sum(ious) / len(ious) if ious else math.nan,
            "miou_34": float(M.seed_scores(mat34)["mIoU_34"])}


@torch.no_grad()
def evaluate(model: nn.Module, loader, criterion: nn.Module, label_mode: str, device: torch.device,
             info: D.DistInfo, channels_last: bool, amp_dtype, show: bool = False) -> dict[str, float]:
    """Validate at the model's resolution: a fresh 34-labelId confusion matrix per call (the seed's
    Keras MeanIoU was never reset, so its figure mixed every batch ever seen), all-reduced over ranks."""
    from tqdm import tqdm

    model.eval()
    from cityseg.metrics import ConfusionMatrix

    cm = ConfusionMatrix(L.NUM_LABEL_IDS, ignore_index=None)
    loss_sum = torch.zeros(2, dtype=torch.float64)
    for x, gt in tqdm(loader, desc="  val", leave=False, disable=not show, dynamic_ncols=True):
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        gt = gt.to(device)
        with autocast(device, amp_dtype):
            logits = model(x)
        target = LUT_L2T.to(device)[gt] if label_mode == "trainIds" else gt
        loss_sum += torch.tensor([float(criterion(logits.float(), target)) * x.shape[0], x.shape[0]], dtype=torch.float64)
        pred = logits.argmax(1)
        if label_mode == "trainIds":
            pred = LUT_T2L.to(device)[pred]
        cm.update(pred.cpu(), gt.cpu())
    if info.distributed:
        cm.all_reduce()
        D.all_reduce_sum(loss_sum, info)
    out = scores(cm.mat)
    out["val_loss"] = float(loss_sum[0] / loss_sum[1]) if loss_sum[1] > 0 else math.nan
    return out


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _params_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in _unwrap(model).state_dict().values() if p.is_floating_point())


# ---- the run ---------------------------------------------------------------------------------------
def train(cfg: dict[str, Any], data_root: str | Path, out_dir: str | Path, resume: bool = False,
          log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg["model"]["name"]`` with the recipe ``cfg`` on ``data_root``; files go to ``out_dir``.

    Returns a summary: ``{"run_dir", "epoch", "step", "best_miou", "metrics", "stopped"}`` where
    ``stopped`` is "" (all epochs done), "interrupted" or "time limit".
    """
    cfg = validate(copy.deepcopy(cfg))
    if not cfg["model"]["name"]:
        raise CitysegError("no model given (--model NAME)")
    out = Path(out_dir)
    check_run_dir(out, resume)
    info = D.init_distributed_mode()
    try:
        return _train(cfg, Path(data_root), out, resume, info, log, progress)
    finally:
        D.cleanup(info)


def _train(cfg, root: Path, out: Path, resume: bool, info: D.DistInfo, log, progress) -> dict[str, Any]:
    from tqdm import tqdm

    from cityseg.models import build_model

    d, t = cfg["data"], cfg["train"]
    say = log if info.is_main else (lambda *_: None)
    label_mode = L.check_label_mode(d["label_mode"])
    num_classes = L.num_classes(label_mode)
    ignore = L.IGNORE_INDEX
    size = tuple(d["size"])
    device = info.device
    seed = int(t["seed"])
    if t["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)

    ckpt = None
    if resume:
        ckpt = load_checkpoint(out / LAST)
        for key, want in (("model_name", cfg["model"]["name"]), ("label_mode", label_mode),
                          ("num_classes", num_classes), ("input_size", list(size)),
                          ("model_options", cfg["model"]["options"])):
            if ckpt.get(key) != want:
                raise CitysegError(f"{out / LAST}: cannot resume: checkpoint has {key} = {ckpt.get(key)!r}, this run {want!r}")

    # model: identical initial weights on every rank (DDP also broadcasts rank 0's)
    seed_everything(seed)
    model = build_model(cfg["model"]["name"], num_classes=num_classes, **cfg["model"]["options"])
    if hasattr(model, "check_input_shape"):
        model.check_input_shape(*size)

    # data (rank 0 builds the cache first, the others then read it)
    if info.distributed and not info.is_main:
        D.barrier(info)
    try:
        transform = build_transform(cfg)
        train_ds = build_dataset(cfg, root, d["train_split"], label_mode, transform, seed)
        val_ds = build_dataset(cfg, root, d["val_split"], "labelIds")
    finally:
        if info.distributed and info.is_main:
            D.barrier(info)
    class_counts = None
    if any(s.get("class_weights") == "auto" for s in cfg["loss"]):
        class_counts = class_pixel_counts(train_ds, num_classes)
    criterion = build_loss(cfg["loss"], num_classes, ignore_index=ignore, class_counts=class_counts).to(device)

    sampler = EpochBatchSampler(len(train_ds), t["batch_size"], seed=seed, rank=info.rank,
                                world_size=info.world_size, shuffle=True, drop_last=t["drop_last"])
    steps_per_epoch = len(sampler)
    if steps_per_epoch == 0:
        raise CitysegError(f"{root}: split {d['train_split']!r} has {len(train_ds)} images, fewer than one batch of {t['batch_size']} (drop_last)")
    val_idx = list(range(info.rank, len(val_ds), info.world_size))
    val_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(val_ds, val_idx), batch_size=t["eval_batch_size"],
                                             shuffle=False, num_workers=d["workers"])

    channels_last, amp_dtype = resolve_fast(t["fast"], device)
    model.to(device)
    if cfg["model"]["sync_bn"] and info.distributed:
        if device.type != "cuda":
            raise CitysegError("model.sync_bn = true needs CUDA (torch's SyncBatchNorm is GPU-only); "
                               "on CPU set model.sync_bn = false (BatchNorm statistics stay per process)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = model
    if info.distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = build_optimizer(model, cfg["optim"])
    scheduler = build_scheduler(optimizer, cfg["schedule"], t["epochs"] * steps_per_epoch, cfg["optim"]["lr"])
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and amp_dtype == torch.float16)

    start_epoch, start_step, history, best = 0, 0, [], -1.0
    train_state = {"loss_sum": 0.0, "steps": 0, "skipped": 0, "seconds": 0.0}
    last_metrics: dict[str, float] = {}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, start_step = int(ckpt["epoch"]), int(ckpt.get("step", 0))
        history = list(ckpt.get("history", []))
        best = float(ckpt.get("best_miou", -1.0))
        last_metrics = dict(ckpt.get("metrics") or {})
        if start_step:
            train_state = dict(ckpt["train_state"])
        say(f"resuming {out / LAST}: epoch {start_epoch + 1}, step {start_step}/{steps_per_epoch}")

    def checkpoint(epoch_done: int, step: int) -> dict[str, Any]:
        rng = D.all_gather_objects(get_rng_state(), info)  # one entry per rank (collective: all ranks call)
        return Checkpoint(
            model=_unwrap(net).state_dict(),
            model_name=cfg["model"]["name"],
            model_options=dict(cfg["model"]["options"]),
            label_mode=label_mode,
            num_classes=num_classes,
            class_names=list(L.class_names(label_mode)),
            input_size=list(size),
            interpolation=d["interpolation"],
            mean=list(d["mean"]) or None,
            std=list(d["std"]) or None,
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            scaler=scaler.state_dict() if scaler.is_enabled() else None,
            epoch=epoch_done,
            step=step,
            config=copy.deepcopy(cfg),
            metrics=dict(last_metrics),
            best_miou=best,
            history=copy.deepcopy(history),
            train_state=dict(train_state),
            world_size=info.world_size,
            rng=rng,
        )

    if info.is_main:
        remove_stale_temp_files(out)
        atomic_write_text(out / "config.toml", dump_toml(cfg))  # creates RUN_DIR (lazily, here)
        if history:
            write_metrics_csv(out / "metrics.csv", history)
    tb = TensorBoard(out / "tensorboard", bool(t["tensorboard"]) and info.is_main, log=say)
    show = progress and info.is_main
    t0 = time.monotonic()
    limit_s = t["max_minutes"] * 60.0
    stopped = ""
    epoch, step, epochs_done = start_epoch, start_step, start_epoch
    say(f"training {cfg['model']['name']} on {len(train_ds)} images ({steps_per_epoch} steps/epoch, global batch "
        f"{t['batch_size']}{f' = {info.world_size} x {sampler.per_rank}' if info.distributed else ''}), "
        f"{label_mode}, {size[0]}x{size[1]}, device {device.type}"
        f"{', channels_last' if channels_last else ''}{f', autocast {amp_dtype}' if amp_dtype else ''}")

    try:
        with StopRequest() as stop:
            for epoch in range(start_epoch, t["epochs"]):
                first = epoch == start_epoch and start_step > 0
                if first:
                    set_rng_state(ckpt["rng"][info.rank] if len(ckpt["rng"]) == info.world_size else ckpt["rng"][0])
                else:
                    seed_everything(epoch_seed(seed, epoch, 1 + info.rank))
                    train_state = {"loss_sum": 0.0, "steps": 0, "skipped": 0, "seconds": 0.0}
                step = start_step if first else 0
                sampler.set_epoch(epoch, step)
                if hasattr(train_ds, "set_epoch"):
                    train_ds.set_epoch(epoch)
                loader = torch.utils.data.DataLoader(
                    train_ds, batch_sampler=sampler, num_workers=d["workers"], pin_memory=device.type == "cuda",
                    generator=torch.Generator().manual_seed(epoch_seed(seed, epoch, 2)),
                )
                net.train()
                bar = tqdm(total=steps_per_epoch, initial=step, desc=f"epoch {epoch + 1}/{t['epochs']}",
                           disable=not show, dynamic_ncols=True, unit="step")
                tick = time.monotonic()
                for x, y in loader:
                    x = x.to(device, non_blocking=True)
                    y = y.to(device, non_blocking=True)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    with autocast(device, amp_dtype):
                        logits = net(x)
                    loss = criterion(logits.float(), y)
                    flags = D.all_flags([not bool(torch.isfinite(loss)), stop.requested,
                                         limit_s > 0 and time.monotonic() - t0 > limit_s], info)
                    bad = flags[0]
                    if not bad:
                        optimizer.zero_grad(set_to_none=True)
                        scaler.scale(loss).backward()
                        if t["grad_clip"] > 0 or t["nan_policy"] == "skip":
                            scaler.unscale_(optimizer)
                            norm = nn.utils.clip_grad_norm_(model.parameters(), t["grad_clip"] if t["grad_clip"] > 0 else float("inf"))
                            bad = not bool(torch.isfinite(norm)) and not scaler.is_enabled()
                    if bad:
                        optimizer.zero_grad(set_to_none=True)
                        what = f"non-finite loss ({float(loss.detach())})" if flags[0] else "non-finite gradients"
                        if t["nan_policy"] == "stop":
                            raise CitysegError(
                                f"{what} at epoch {epoch + 1} step {step + 1}: training stopped; the last good "
                                f"checkpoint {out / LAST} is kept (try a lower optim.lr, train.grad_clip, or "
                                f"train.nan_policy=\"skip\")")
                        train_state["skipped"] += 1
                        say(f"\nskipping step {step + 1} of epoch {epoch + 1}: {what}")
                    else:
                        scaler.step(optimizer)
                        scaler.update()
                        train_state["loss_sum"] += _mean_over_ranks(loss.detach(), info)
                        train_state["steps"] += 1
                    scheduler.step()
                    step += 1
                    now = time.monotonic()
                    train_state["seconds"] += now - tick
                    if show:
                        bar.update(1)
                        bar.set_postfix(loss=f"{train_state['loss_sum'] / max(1, train_state['steps']):.4f}",
                                        img_s=f"{x.shape[0] * info.world_size / max(now - tick, 1e-9):.1f}",
                                        lr=f"{optimizer.param_groups[0]['lr']:.2e}")
                    tick = now
                    if flags[1] or flags[2]:
                        stopped = "interrupted" if flags[1] else "time limit"
                        break
                    if t["checkpoint_every"] and step % t["checkpoint_every"] == 0 and step < steps_per_epoch:
                        _save(out / LAST, checkpoint(epoch, step), info)
                bar.close()
                if stopped and step < steps_per_epoch:
                    _save(out / LAST, checkpoint(epoch, step), info)  # resumable mid-epoch
                    break
                if train_state["steps"] == 0:
                    raise CitysegError(f"epoch {epoch + 1}: every step was skipped (non-finite loss); stopping")
                # validation + end-of-epoch files
                row = {"epoch": epoch + 1, "train_loss": train_state["loss_sum"] / train_state["steps"],
                       "lr": optimizer.param_groups[0]["lr"]}
                tick = time.monotonic()
                if (epoch + 1) % t["val_every"] == 0 or epoch + 1 == t["epochs"]:
                    m = evaluate(net, val_loader, criterion, label_mode, device, info, channels_last, amp_dtype, show)
                    row.update(m)
                    last_metrics = {k: float(v) for k, v in m.items()}
                row["seconds"] = round(train_state["seconds"] + time.monotonic() - tick, 3)
                if not _params_finite(net):
                    raise CitysegError(f"epoch {epoch + 1}: the weights became non-finite; stopping, {out / LAST} kept")
                history.append(row)
                key = "miou_19" if label_mode == "trainIds" else "miou_34"
                if key in row and row[key] > best:
                    best = row[key]
                    _save(out / BEST, checkpoint(epoch + 1, 0), info)
                if info.is_main:
                    write_metrics_csv(out / "metrics.csv", history)
                _save(out / LAST, checkpoint(epoch + 1, 0), info)
                epochs_done, step = epoch + 1, 0
                if info.is_main:
                    plot_curves(out / "curves.png", history)
                    tb.scalars(row, epoch + 1)
                    say(_epoch_line(row))
                if stopped:
                    break
    except KeyboardInterrupt:
        say(f"\naborted; {out / LAST} holds the last saved state")
        raise
    finally:
        tb.close()
    if stopped == "interrupted":
        say(f"\ninterrupted ({stop.signame}): saved {out / LAST} at epoch {epochs_done + 1}, step {step}/{steps_per_epoch}; "
            f"continue with the same command plus --resume")
    elif stopped == "time limit":
        say(f"\ntime limit of {t['max_minutes']:g} min reached: saved {out / LAST}; --resume continues")
    return {"run_dir": str(out), "epoch": epochs_done, "step": step, "best_miou": best, "metrics": last_metrics, "stopped": stopped, "history": history}


def _save(path: Path, ckpt: Checkpoint, info: D.DistInfo) -> None:
    if info.is_main:
        save_checkpoint(path, ckpt)
    D.barrier(info)


def _mean_over_ranks(loss: torch.Tensor, info: D.DistInfo) -> float:
    if not info.distributed:
        return float(loss)
    v = loss.detach().float().reshape(1).clone()
    D.all_reduce_sum(v, info)
    return float(v) / info.world_size


def _epoch_line(row: dict[str, Any]) -> str:
    parts = [f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}"]
    if "val_loss" in row:
        parts.append(f"val loss {row['val_loss']:.4f}, pixel acc {row['pixel_acc']:.3f}, "
                     f"mIoU-19 {row['miou_19']:.3f}, mIoU-34 {row['miou_34']:.3f}")
    parts.append(f"{row['seconds']:.0f} s")
    return ", ".join(parts)
