"""torchrun-style data parallelism: 2 CPU processes with gloo must match one process on the same data and
global batch size, without gradient clipping (which would hide a wrongly scaled gradient).

Plain BatchNorm under DDP normalises each process's half batch and keeps rank 0's running statistics
(DDP broadcasts them before every forward), so the one-process reference of the BatchNorm net is
"ghost" BatchNorm over the same halves. torch's SyncBatchNorm is GPU-only: on gloo/CPU the run must stop
with the one-line error the trainer promises.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from cityseg import models
from cityseg.models.base import SegmentationModel

WORLD = 2
#: hang guards: joining the process group, and the whole two-process run (a healthy one needs a fraction)
INIT_TIMEOUT = datetime.timedelta(seconds=120)
SPAWN_TIMEOUT_S = 600


class GhostBatchNorm(nn.BatchNorm2d):
    """BatchNorm over each of ``groups`` contiguous slices of the batch (the slice each DDP process gets);
    the running statistics follow the first slice only (rank 0's, which DDP broadcasts)."""

    groups = WORLD

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        first, *rest = x.chunk(self.groups)
        out = [super().forward(first)] + [F.batch_norm(c, None, None, self.weight, self.bias, True, 0.0, self.eps) for c in rest]
        return torch.cat(out)


class PlainNet(SegmentationModel):
    """No dropout, optional BatchNorm (``ghost``: the one-process reference of BatchNorm under DDP).
    ``sigint_at``: rank 0 sends itself SIGINT during that training forward (a Ctrl-C mid-epoch)."""

    name = "plain_test"
    size_multiple = 4
    min_size = 8
    sigint_at = 0
    calls = 0

    def __init__(self, num_classes: int = 34, bn: bool = False, ghost: bool = False):
        super().__init__()
        norm = (GhostBatchNorm(8) if ghost else nn.BatchNorm2d(8)) if bn else nn.Identity()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), norm, nn.ReLU(), nn.Conv2d(8, num_classes, 1))

    def forward(self, x):
        if self.training:
            PlainNet.calls += 1
            if PlainNet.calls == PlainNet.sigint_at:
                os.kill(os.getpid(), signal.SIGINT)
        return self.net(x)


def entries(ghost: bool) -> dict[str, models.Entry]:
    return {
        "plain_test": models.Entry(partial(PlainNet), "test net"),
        "bn_test": models.Entry(partial(PlainNet, bn=True, ghost=ghost), "test net with BatchNorm"),
    }


def configs():
    """Every config is compared DDP vs one process; ``bn_aug`` also trains with augmentation and workers."""
    from cityseg.train.config import apply_overrides, load_recipe

    cfg, _ = load_recipe("seed")
    common = {
        "model.name": "plain_test",
        "train.epochs": 2,
        "train.batch_size": 4,
        "data.size": [64, 128],
        "data.workers": 0,
        "train.fast": False,
        "train.eval_batch_size": 1,
        "optim.name": "sgd",
        "optim.lr": 0.05,
        "train.grad_clip": 0.0,
    }
    plain = apply_overrides(cfg, common)
    # labelIds: every pixel counts (padding is id 0), so the per-process mean losses average to the global mean
    bn_aug = apply_overrides(plain, {"model.name": "bn_test", "augment.enabled": True, "augment.scale": [0.75, 1.25], "data.workers": 2})
    return {"plain": plain, "bn_aug": bn_aug}


def _worker(rank, world, port, data, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    models.MODELS.update(entries(ghost=False))
    from cityseg.errors import CitysegError
    from cityseg.train.config import apply_overrides
    from cityseg.train.run import train

    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=INIT_TIMEOUT)
    quiet = {"progress": False, "log": lambda *a: None}
    try:
        for name, cfg in configs().items():
            train(cfg, data, os.path.join(out, f"ddp_{name}"), **quiet)
        # DDP + resume: Ctrl-C on rank 0 in epoch 2 stops both processes at the same step; --resume finishes
        cfg = configs()["bn_aug"]
        PlainNet.calls, PlainNet.sigint_at = 0, (3 if rank == 0 else 0)
        stopped = train(cfg, data, os.path.join(out, "ddp_resumed"), **quiet)
        PlainNet.sigint_at = 0
        train(cfg, data, os.path.join(out, "ddp_resumed"), resume=True, **quiet)
        if rank == 0:
            np.save(os.path.join(out, "stopped_at.npy"), [stopped["epoch"], stopped["step"]])
        try:
            train(apply_overrides(cfg, {"model.sync_bn": True}), data, os.path.join(out, "ddp_sync_bn"), **quiet)
        except CitysegError as e:
            if rank == 0:
                Path(out, "sync_bn_error.txt").write_text(str(e))
        ev = _evaluator(rank)
        ev.all_reduce()
        if rank == 0:
            np.savez(os.path.join(out, "evaluator.npz"), mat=ev.mat, inst=ev.inst, n=[ev.n_images, ev.n_without_instances])
    finally:
        dist.destroy_process_group()


def _evaluator(*ranks):
    """A CityscapesEvaluator fed one random frame per rank (with instances on rank 0 only)."""
    from cityseg.eval.metrics import CityscapesEvaluator

    ev = CityscapesEvaluator()
    for rank in ranks:
        rng = np.random.default_rng(rank)
        gt = rng.integers(0, 34, (32, 48), dtype=np.uint8)
        pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, 34, gt.shape)).astype(np.uint8)
        inst = (gt.astype(np.int32) * 1000 + rng.integers(0, 3, gt.shape)) if rank == 0 else None
        ev.add(pred, gt, inst)
    return ev


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn, args, nprocs: int, timeout_s: float) -> None:
    """``mp.spawn`` with a deadline: a process that hangs (a missed collective) fails the test instead."""
    ctx = mp.spawn(fn, args=args, nprocs=nprocs, join=False)
    end = time.monotonic() + timeout_s
    while not ctx.join(timeout=max(0.0, end - time.monotonic())):
        if time.monotonic() >= end:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail(f"the {nprocs} processes did not finish in {timeout_s} s")


@pytest.fixture(scope="module")
def synth_ddp(tmp_path_factory):
    from cityseg.data.synth import generate

    root = tmp_path_factory.mktemp("synth_ddp")
    generate(root, train=8, val=3, test=0, size=(64, 128), seed=11)
    # build the cache once up front (ranks would otherwise wait for rank 0 to do it)
    from cityseg.data.dataset import CityscapesDataset

    for split in ("train", "val"):
        CityscapesDataset(root, split, size=(64, 128), interpolation="bilinear")
    return root


def assert_close_states(one, two, what):
    assert one.keys() == two.keys()
    for k, v in one.items():
        if v.is_floating_point():
            torch.testing.assert_close(two[k], v, rtol=1e-4, atol=1e-5, msg=f"{what}: {k}")
        else:
            assert torch.equal(two[k], v), (what, k)


def test_two_gloo_processes_match_one_process(synth_ddp, tmp_path, monkeypatch):
    """Weights (BatchNorm running statistics included), metrics and losses of DDP equal one process up to
    float summation order; DDP interrupted and resumed equals DDP uninterrupted bit for bit."""
    from cityseg.checkpoint import load_checkpoint
    from cityseg.train.run import train

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    for name, entry in entries(ghost=True).items():
        monkeypatch.setitem(models.MODELS, name, entry)
    for name, cfg in configs().items():
        train(cfg, synth_ddp, tmp_path / f"single_{name}", progress=False, log=lambda *a: None)
    spawn(_worker, (WORLD, _free_port(), str(synth_ddp), str(tmp_path)), nprocs=WORLD, timeout_s=SPAWN_TIMEOUT_S)

    for name in configs():
        one = load_checkpoint(tmp_path / f"single_{name}" / "last.pt")
        two = load_checkpoint(tmp_path / f"ddp_{name}" / "last.pt")
        assert two["world_size"] == 2 and one["world_size"] == 1
        assert_close_states(one["model"], two["model"], name)
        # metrics are all-reduced: the validation confusion matrix covers every val image once
        for key in ("pixel_acc", "miou_19", "miou_34", "val_loss"):
            assert two["metrics"][key] == pytest.approx(one["metrics"][key], rel=1e-4, abs=1e-5), (name, key)
        for a, b in zip(one["history"], two["history"]):
            assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        # only rank 0 wrote files: exactly one set, no stray temp files
        names = sorted(p.name for p in (tmp_path / f"ddp_{name}").iterdir())
        assert names == ["best.pt", "config.toml", "curves.png", "environment.json", "last.pt", "metrics.csv"]
    assert "running_mean" in " ".join(one["model"])  # the last config has BatchNorm
    # DDP + mid-epoch resume
    assert list(np.load(tmp_path / "stopped_at.npy")) == [1, 1]  # epoch 2, step 1 of 2
    full, resumed = (load_checkpoint(tmp_path / name / "last.pt") for name in ("ddp_bn_aug", "ddp_resumed"))
    for k, v in full["model"].items():
        assert torch.equal(resumed["model"][k], v), k
    # SyncBatchNorm on gloo/CPU: the promised one-line error, raised by every process (nothing hangs)
    message = (tmp_path / "sync_bn_error.txt").read_text()
    assert "model.sync_bn = true needs CUDA" in message and "\n" not in message
    # the official-protocol evaluator sums its confusion matrix and instance statistics over the ranks
    got, want = np.load(tmp_path / "evaluator.npz"), _evaluator(0, 1)
    np.testing.assert_array_equal(got["mat"], want.mat)
    np.testing.assert_allclose(got["inst"], want.inst, rtol=1e-12)
    assert list(got["n"]) == [2, 1] == [want.n_images, want.n_without_instances]
