"""torchrun-style data parallelism: 2 CPU processes with gloo must match one process on the same data and
global batch size (a BN-free net: torch's SyncBatchNorm is GPU-only, plain BN would see half batches)."""

from __future__ import annotations

import os
import socket
from functools import partial

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from cityseg import models
from cityseg.models.base import SegmentationModel


class PlainNet(SegmentationModel):
    """No dropout, optional BatchNorm: deterministic given the data."""

    name = "plain_test"
    size_multiple = 4
    min_size = 8

    def __init__(self, num_classes: int = 34, bn: bool = False):
        super().__init__()
        norm = nn.BatchNorm2d(8) if bn else nn.Identity()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), norm, nn.ReLU(), nn.Conv2d(8, num_classes, 1))

    def forward(self, x):
        return self.net(x)


def register():
    models.MODELS["plain_test"] = models.Entry(partial(PlainNet), "test net")


def configs():
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
        "train.grad_clip": 1.0,
    }
    return {"plain": apply_overrides(cfg, common)}


def _worker(rank, world, port, data, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    register()
    from cityseg.train.run import train

    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for name, cfg in configs().items():
            train(cfg, data, os.path.join(out, f"ddp_{name}"), progress=False, log=lambda *a: None)
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


def test_two_gloo_processes_match_one_process(synth_ddp, tmp_path, monkeypatch):
    from cityseg.checkpoint import load_checkpoint
    from cityseg.train.run import train

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setitem(models.MODELS, "plain_test", models.Entry(partial(PlainNet), "test net"))
    for name, cfg in configs().items():
        train(cfg, synth_ddp, tmp_path / f"single_{name}", progress=False, log=lambda *a: None)
    mp.spawn(_worker, args=(2, _free_port(), str(synth_ddp), str(tmp_path)), nprocs=2, join=True)

    for name in configs():
        one = load_checkpoint(tmp_path / f"single_{name}" / "last.pt")
        two = load_checkpoint(tmp_path / f"ddp_{name}" / "last.pt")
        assert two["world_size"] == 2 and one["world_size"] == 1
        assert one["model"].keys() == two["model"].keys()
        for k, v in one["model"].items():
            if v.is_floating_point():
                torch.testing.assert_close(two["model"][k], v, rtol=1e-4, atol=1e-5, msg=f"{name}: {k}")
            else:
                assert torch.equal(two["model"][k], v), k
        # metrics are all-reduced: the validation confusion matrix covers every val image once
        for key in ("pixel_acc", "miou_19", "miou_34", "val_loss"):
            assert two["metrics"][key] == pytest.approx(one["metrics"][key], rel=1e-4, abs=1e-5), (name, key)
        for a, b in zip(one["history"], two["history"]):
            assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        # only rank 0 wrote files: exactly one set, no stray temp files
        names = sorted(p.name for p in (tmp_path / f"ddp_{name}").iterdir())
        assert names == ["best.pt", "config.toml", "curves.png", "environment.json", "last.pt", "metrics.csv"]
    # the official-protocol evaluator sums its confusion matrix and instance statistics over the ranks
    got, want = np.load(tmp_path / "evaluator.npz"), _evaluator(0, 1)
    np.testing.assert_array_equal(got["mat"], want.mat)
    np.testing.assert_allclose(got["inst"], want.inst, rtol=1e-12)
    assert list(got["n"]) == [2, 1] == [want.n_images, want.n_without_instances]
