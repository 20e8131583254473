"""``best.pt`` holds the weights and what prediction needs, not the training state ``last.pt`` keeps: its size
follows the weights, it predicts, scores and seeds ``train.init_from`` like ``last.pt``, and ``--resume``
refuses it in one line."""

from __future__ import annotations

import shutil
from functools import partial

import numpy as np
import pytest
import torch

from cityseg import models
from cityseg.checkpoint import load_checkpoint
from cityseg.cli import main
from cityseg.errors import CitysegError
from cityseg.eval.evaluate import score_checkpoint
from cityseg.infer.predictor import Predictor
from cityseg.train import distributed as D
from cityseg.train.config import apply_overrides, load_recipe
from cityseg.train.run import setup, train
from hooknet import HookNet

WIDTH = 128  # enough weights (~155 k parameters) that the file size is theirs, not the metadata's


@pytest.fixture(autouse=True)
def tiny_model(monkeypatch):
    monkeypatch.setitem(models.MODELS, "tiny", models.Entry(partial(HookNet), "tiny test net"))
    HookNet.hooks, HookNet.calls = {}, 0


@pytest.fixture(scope="module")
def synth64(tmp_path_factory):
    from cityseg.data.synth import generate

    root = tmp_path_factory.mktemp("synth64")
    generate(root, train=4, val=2, test=0, size=(64, 128), seed=3)
    return root


def tiny_cfg(**over):
    cfg, _ = load_recipe("seed")
    base = {
        "model.name": "tiny",
        "model.options": {"width": WIDTH},
        "train.epochs": 1,
        "train.batch_size": 2,
        "data.size": [64, 128],
        "data.workers": 0,
        "train.eval_batch_size": 2,
        "train.fast": False,
    }
    return apply_overrides(cfg, {**base, **over})


@pytest.fixture(scope="module")
def run_dir(synth64, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    models.MODELS["tiny"] = models.Entry(partial(HookNet), "tiny test net")
    try:
        train(tiny_cfg(), synth64, out, progress=False)
    finally:
        models.MODELS.pop("tiny", None)
    return out


def test_best_pt_is_the_weights_without_the_optimizer(run_dir):
    best, last = load_checkpoint(run_dir / "best.pt"), load_checkpoint(run_dir / "last.pt")
    state_bytes = sum(v.numel() * v.element_size() for v in best["model"].values())
    params = sum(v.numel() for k, v in best["model"].items() if k.endswith(("weight", "bias")))
    assert params == 3 * WIDTH * 9 + WIDTH + WIDTH * WIDTH * 9 + WIDTH + WIDTH * 34 + 34  # counted by hand
    assert (run_dir / "best.pt").stat().st_size < 1.1 * state_bytes + 64 * 1024
    # Adam keeps two moments per weight: last.pt is about three times the weights
    assert (run_dir / "last.pt").stat().st_size > 2.5 * state_bytes
    assert best["optimizer"] is None and best["scheduler"] is None and best["rng"] is None and best["train_state"] is None
    assert last["optimizer"] is not None and last["rng"] is not None
    for key in ("model_name", "model_options", "label_mode", "num_classes", "class_names", "input_size", "interpolation", "mean", "std", "epoch"):
        assert best[key] == last[key], key
    assert best["config"] == last["config"] and best["best_miou"] == last["best_miou"]
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])  # one epoch: best is last


def test_best_pt_predicts_and_scores_like_last_pt(run_dir, synth64):
    image = np.random.default_rng(0).integers(0, 256, (128, 256, 3), dtype=np.uint8)
    a, b = (Predictor.from_checkpoint(run_dir / n).predict(image) for n in ("best.pt", "last.pt"))
    assert a.shape == (128, 256) and np.array_equal(a, b)
    full, _, _ = score_checkpoint(synth64, "val", run_dir / "best.pt", workers=1)
    ref, _, _ = score_checkpoint(synth64, "val", run_dir / "last.pt", workers=1)
    assert full.results()["n_images"] == 2 and full.results()["mIoU_34"] == ref.results()["mIoU_34"]


@pytest.mark.parametrize("name", ["best.pt", "last.pt"])
def test_init_from_takes_the_weights_of_either_file(run_dir, synth64, tmp_path, name):
    run = setup(tiny_cfg(**{"train.init_from": str(run_dir / name)}), synth64, tmp_path / "fine", D.init_distributed_mode(), print)
    want = load_checkpoint(run_dir / name)["model"]
    got = run.ctx.net.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert run.epoch == 0 and run.history == []  # a fresh run: only the weights came over


def test_resume_from_last_pt_continues_and_from_best_pt_is_refused(run_dir, synth64, tmp_path, capsys):
    resumed = tmp_path / "resumed"
    shutil.copytree(run_dir, resumed)
    summary = train(tiny_cfg(**{"train.epochs": 2}), synth64, resumed, resume=True, progress=False)
    assert summary["epoch"] == 2 and load_checkpoint(resumed / "last.pt")["epoch"] == 2
    shutil.copy(resumed / "best.pt", resumed / "last.pt")
    with pytest.raises(CitysegError, match=r"last.pt: holds weights only .*use the run's own last.pt"):
        train(tiny_cfg(**{"train.epochs": 3}), synth64, resumed, resume=True, progress=False)
    flags = ["--data", str(synth64), "--out", str(resumed), "--resume", "--epochs", "3", "--workers", "0", "--quiet"]
    assert main(["train", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds weights only" in err and len(err.splitlines()) == 1
