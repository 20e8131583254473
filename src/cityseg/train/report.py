"""What a run leaves for the user besides checkpoints: metrics.csv, curves.png, TensorBoard scalars."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from cityseg.errors import CitysegError
from cityseg.io import atomic_path, atomic_write_text

CSV_COLUMNS = ("epoch", "train_loss", "val_loss", "pixel_acc", "miou_19", "miou_34", "lr", "seconds")
#: a CamVid run's columns: its validation scores the 11 CamVid classes (miou_11)
CAMVID_CSV_COLUMNS = ("epoch", "train_loss", "val_loss", "pixel_acc", "miou_11", "lr", "seconds")


def write_metrics_csv(path: str | os.PathLike, history: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.csv`` from the run's history (atomically; the history lives in the checkpoint,
    so after a crash and ``--resume`` the file never holds rows of epochs the checkpoint does not)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    columns = CAMVID_CSV_COLUMNS if any("miou_11" in row for row in history) else CSV_COLUMNS
    w.writerow(columns)
    for row in history:
        w.writerow([_fmt(row.get(c)) for c in columns])
    atomic_write_text(path, buf.getvalue())


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def plot_curves(path: str | os.PathLike, history: list[dict[str, Any]]) -> None:
    """curves.png: train/val loss (left, log scale) and val mIoU over 19 classes and 34 ids (right) per epoch."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    ep = [r["epoch"] for r in history]
    fig = Figure(figsize=(10, 4), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(ep, [r["train_loss"] for r in history], "o-", label="train loss")
    ax1.plot(ep, [_nan(r.get("val_loss")) for r in history], "s-", label="val loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    losses = [v for r in history for v in (r["train_loss"], _nan(r.get("val_loss"))) if math.isfinite(v)]
    if losses and min(losses) > 0:
        # the first epoch's loss is often ten times the rest; a log axis keeps the later epochs readable
        ax1.set_yscale("log")
    ax1.legend()
    ax1.grid(alpha=0.3)
    if any("miou_11" in r for r in history):
        ax2.plot(ep, [_nan(r.get("miou_11")) for r in history], "o-", label="val mIoU (11 CamVid classes)")
    else:
        ax2.plot(ep, [_nan(r.get("miou_19")) for r in history], "o-", label="val mIoU (19 classes)")
        ax2.plot(ep, [_nan(r.get("miou_34")) for r in history], "s-", label="val mIoU (34 ids)")
    ax2.plot(ep, [_nan(r.get("pixel_acc")) for r in history], "^--", label="val pixel accuracy")
    ax2.set_xlabel("epoch")
    ax2.set_ylim(0, 1)
    ax2.legend()
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)


def check_tensorboard() -> None:
    """Refuse ``train.tensorboard = true`` without the tensorboard package, before any training time is spent."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise CitysegError(
            "--tensorboard (train.tensorboard = true) needs the tensorboard package: pip install tensorboard, or train without it (--set train.tensorboard=false)"
        ) from None


class TensorBoard:
    """Optional TensorBoard scalars under RUN_DIR/tensorboard (the import is lazy: only runs that ask need it)."""

    def __init__(self, folder: Path, enabled: bool):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(folder))

    def scalars(self, row: dict[str, Any], step: int) -> None:
        if self.writer is None:
            return
        for k, v in row.items():
            if k != "epoch" and isinstance(v, (int, float)) and v is not None:
                self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def epoch_line(row: dict[str, Any]) -> str:
    """The one log line of a finished epoch."""
    parts = [f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}"]
    if "miou_11" in row:
        parts.append(f"val loss {row['val_loss']:.4f}, pixel acc {row['pixel_acc']:.3f}, mIoU-11 {row['miou_11']:.3f}")
    elif "val_loss" in row:
        parts.append(f"val loss {row['val_loss']:.4f}, pixel acc {row['pixel_acc']:.3f}, mIoU-19 {row['miou_19']:.3f}, mIoU-34 {row['miou_34']:.3f}")
    parts.append(f"{row['seconds']:.0f} s")
    return ", ".join(parts)
