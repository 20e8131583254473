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


class StrideNet(PlainNet):
    """Training outputs at their heads' own strides, as the real-time models return them: ``out`` at 1/4
    of the input, ``aux`` at 1/2; one full-size tensor in eval mode."""

    name = "stride_test"

    def __init__(self, num_classes: int = 34):
        super().__init__(num_classes)
        self.aux = nn.Conv2d(8, num_classes, 1)

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        feats = self.net[:3](x)
        return {"out": self.net[3](F.avg_pool2d(feats, 4)), "aux": self.aux(F.avg_pool2d(feats, 2))}


def entries(ghost: bool) -> dict[str, models.Entry]:
    return {
        "plain_test": models.Entry(partial(PlainNet), "test net"),
        "bn_test": models.Entry(partial(PlainNet, bn=True, ghost=ghost), "test net with BatchNorm"),
        "stride_test": models.Entry(partial(StrideNet), "test net with outputs at their own strides"),
    }


#: the overrides every compared run shares: 2 epochs of batch 4 at 64x128, in-process loading
SMALL_RUN = {"train.epochs": 2, "train.batch_size": 4, "data.size": [64, 128], "data.workers": 0, "train.fast": False, "train.eval_batch_size": 1}


def configs():
    """Every config is compared DDP vs one process; ``bn_aug`` also trains with augmentation and workers."""
    from cityseg.train.config import apply_overrides, load_recipe

    cfg, _ = load_recipe("seed")
    plain = apply_overrides(cfg, {**SMALL_RUN, "model.name": "plain_test", "optim.name": "sgd", "optim.lr": 0.05, "train.grad_clip": 0.0})
    # labelIds: every pixel counts (padding is id 0); the trainIds recipe with ignored pixels is the slow test below
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
        # only rank 0 wrote files: exactly one set, no stray temp files (.lock: rank 0's hold on the folder)
        names = sorted(p.name for p in (tmp_path / f"ddp_{name}").iterdir())
        assert names == [".lock", "best.pt", "config.toml", "curves.png", "environment.json", "last.pt", "metrics.csv"]
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


# ---- the losses under DDP: one process's gradient, split over two ----------------------------------------
#: recipes whose pixel-averaged terms must not depend on how the batch is split (``boundary`` heads and
#: ``aux`` at their own strides, the loss at 1/2 of the labels; OHEM by threshold, by the k hardest over
#: both halves, and by an absolute count of label pixels)
LOSS_RECIPES = {
    "ce_weighted_smoothed": ([{"name": "ce", "class_weights": [1.0, 2.0, 0.5, 3.0, 1.5], "label_smoothing": 0.1}], 1.0),
    "ohem_thresh": ([{"name": "ohem", "thresh": 0.7, "min_kept": 0.01}], 1.0),
    "ohem_hardest": ([{"name": "ohem", "thresh": 1e-12, "min_kept": 0.3}], 1.0),
    "ohem_absolute_scaled": ([{"name": "ohem", "thresh": 1e-12, "min_kept": 600}, {"name": "focal", "weight": 0.5}], 0.5),
    "pidnet_heads": (
        [
            {"name": "ohem", "thresh": 0.9, "min_kept": 0.2},
            {"name": "ohem", "weight": 0.4, "output": "aux*", "thresh": 0.9, "min_kept": 0.2},
            {"name": "boundary", "weight": 2.0},
            {"name": "boundary_ce", "thresh": 0.5, "ohem_thresh": 0.9, "min_kept": 40},
        ],
        0.5,
    ),
}


def loss_batch():
    """4 frames of 16x32 labels (5 classes + 255): frame 0 wholly ignored, frame 1 mostly, so the two halves
    a DDP run splits them into hold very different numbers of valid pixels; outputs at 1/4 and 1/2."""
    g = torch.Generator().manual_seed(21)
    target = torch.randint(0, 5, (4, 16, 32), generator=g)
    target[0] = 255
    target[1, :12] = 255
    outputs = {
        "out": (torch.randn(4, 5, 4, 8, generator=g) * 2).requires_grad_(),
        "aux": torch.randn(4, 5, 8, 16, generator=g).requires_grad_(),
        "boundary": torch.randn(4, 1, 4, 8, generator=g).requires_grad_(),
    }
    return outputs, target


def loss_and_grads(name, rank=0, world=1):
    """The loss of ``LOSS_RECIPES[name]`` on this process's slice of ``loss_batch()`` and the gradient DDP
    would apply to each output (its own, divided by the number of processes: DDP averages)."""
    from cityseg.train.distributed import DistInfo
    from cityseg.train.losses import build_loss

    specs, scale = LOSS_RECIPES[name]
    info = DistInfo(rank=rank, world_size=world) if world > 1 else None
    outputs, target = loss_batch()
    part = slice(rank * 4 // world, (rank + 1) * 4 // world)
    mine = {k: v[part].detach().requires_grad_() for k, v in outputs.items()}
    loss = build_loss(specs, num_classes=5, scale=scale, dist=info)(mine, target[part])
    loss.backward()
    return float(loss.detach()), {k: v.grad / world for k, v in mine.items() if v.grad is not None}


def _loss_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=INIT_TIMEOUT)
    try:
        for name in LOSS_RECIPES:
            loss, grads = loss_and_grads(name, rank, world)
            torch.save({"loss": loss, "grads": grads}, os.path.join(out, f"{name}_{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_pixel_averaged_losses_under_ddp_equal_one_process(tmp_path):
    """Two gloo processes, each with half of a batch whose halves hold different numbers of valid pixels:
    the mean of their losses is the one-process loss, and their gradients (averaged, as DDP does) are the
    one-process gradient, for CE with class weights, OHEM in all three regimes, focal, and PIDNet's heads."""
    spawn(_loss_worker, (WORLD, _free_port(), str(tmp_path)), nprocs=WORLD, timeout_s=SPAWN_TIMEOUT_S)
    for name in LOSS_RECIPES:
        want_loss, want = loss_and_grads(name)
        parts = [torch.load(tmp_path / f"{name}_{r}.pt") for r in range(WORLD)]
        assert sum(p["loss"] for p in parts) / WORLD == pytest.approx(want_loss, rel=1e-5), name
        assert want and all(p["grads"].keys() == want.keys() for p in parts), name
        for k, g in want.items():
            torch.testing.assert_close(torch.cat([p["grads"][k] for p in parts]), g, rtol=1e-5, atol=1e-8, msg=f"{name}: {k}")


# ---- the standard recipe under DDP ----------------------------------------------------------------------
def standard_config(roots):
    """The README's ``torchrun ... --config standard`` on the tiny data: trainIds with ignored pixels
    (255, also the padding of down-scaled crops), augmentation, AdamW + warmup/poly, grad clipping, OHEM with
    ENet class weights; plus outputs at their own strides with an ``aux*`` OHEM term, the loss at 1/2 of
    the crop and two weighted ``data.sources``. The recipe's Lovász term is left out: it is not a sum over
    pixels and stays per process (docs/architecture.md)."""
    from cityseg.train.config import apply_overrides, load_recipe

    cfg, _ = load_recipe("standard")
    ohem = {"name": "ohem", "class_weights": "auto", "thresh": 0.7, "min_kept": 0.3}
    return apply_overrides(
        cfg,
        {
            **SMALL_RUN,
            "model.name": "stride_test",
            "schedule.warmup_iters": 2,
            "train.loss_scale": 0.5,
            "data.sources": [{"root": str(roots[0]), "weight": 0.7}, {"root": str(roots[1]), "weight": 0.3}],
            "loss": [ohem, {**ohem, "weight": 0.4, "output": "aux*"}],
        },
    )


def _standard_worker(rank, world, port, roots, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    models.MODELS.update(entries(ghost=False))
    from cityseg.train.run import train

    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=INIT_TIMEOUT)
    try:
        train(standard_config(roots), roots[0], os.path.join(out, "ddp"), progress=False, log=lambda *a: None)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_standard_recipe_with_heads_loss_scale_and_sources_under_ddp_equals_one_process(synth_ddp, tmp_path_factory, tmp_path, monkeypatch):
    """The pixel-averaged losses normalise over both processes' valid pixels, so DDP with trainIds, ignored
    pixels, OHEM and class weights reaches the weights (and losses) of one process with the same global
    batch, up to float summation order."""
    from cityseg.checkpoint import load_checkpoint
    from cityseg.data.synth import generate
    from cityseg.train.run import train

    second = tmp_path_factory.mktemp("synth_ddp_b")
    generate(second, train=5, val=0, test=0, size=(64, 128), seed=12)
    roots = [str(synth_ddp), str(second)]
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setitem(models.MODELS, "stride_test", entries(ghost=False)["stride_test"])
    train(standard_config(roots), roots[0], tmp_path / "single", progress=False, log=lambda *a: None)
    spawn(_standard_worker, (WORLD, _free_port(), roots, str(tmp_path)), nprocs=WORLD, timeout_s=SPAWN_TIMEOUT_S)
    one, two = (load_checkpoint(tmp_path / name / "last.pt") for name in ("single", "ddp"))
    assert two["world_size"] == 2 and one["epoch"] == two["epoch"] == 2
    assert_close_states(one["model"], two["model"], "standard")
    for a, b in zip(one["history"], two["history"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
