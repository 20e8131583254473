"""Training loop: resume equality, Ctrl-C, NaN policy, checkpoints, files, recipes end to end, CLI errors.

A tiny conv net (with dropout, so RNG restoration matters) is registered in the model table for these
tests; data is SynthCity at 64x128.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from cityseg import models
from cityseg.checkpoint import load_checkpoint
from cityseg.cli import main
from cityseg.errors import CitysegError
from cityseg.eval.evaluate import score_checkpoint
from cityseg.infer.predictor import Predictor
from cityseg.models import model_from_checkpoint
from cityseg.train import distributed as D
from cityseg.train.config import apply_overrides, load_recipe
from cityseg.train.run import setup, train
from conftest import require_oracle
from hooknet import HookNet as TinyNet


@pytest.fixture(autouse=True)
def tiny_model(monkeypatch):
    monkeypatch.setitem(models.MODELS, "tiny", models.Entry(partial(TinyNet), "tiny test net"))
    TinyNet.hooks, TinyNet.calls = {}, 0
    yield
    TinyNet.hooks, TinyNet.calls = {}, 0


@pytest.fixture(scope="module")
def synth64(tmp_path_factory):
    from cityseg.data.synth import generate

    root = tmp_path_factory.mktemp("synth64")
    generate(root, train=10, val=2, test=0, size=(64, 128), seed=3)
    return root


def tiny_cfg(recipe="seed", **over):
    cfg, _ = load_recipe(recipe)
    base = {
        "model.name": "tiny",
        "train.epochs": 2,
        "train.batch_size": 4,
        "data.size": [64, 128],
        "data.workers": 0,
        "train.eval_batch_size": 2,
        "train.fast": False,
    }
    base.update(over)
    return apply_overrides(cfg, base)


def tiny_cli_args(root) -> list[str]:
    """``cityseg train`` flags of a one-epoch tiny run on ``root`` (everything but the command and --out)."""
    flags = "--model tiny --size 64x128 --epochs 1 --batch-size 5 --seed 3 --workers 0 --set train.fast=false --quiet"
    return ["--data", str(root), *flags.split()]


def weights(run_dir):
    return load_checkpoint(run_dir / "last.pt")["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_interrupted_and_resumed_run_equals_uninterrupted(synth64, tmp_path):
    cfg = tiny_cfg(**{"train.epochs": 3})  # 10 images, batch 4 -> 3 steps per epoch (last one partial)
    full = train(cfg, synth64, tmp_path / "full", progress=False)
    assert full["epoch"] == 3 and full["stopped"] == ""

    TinyNet.calls, TinyNet.hooks = 0, {5: "sigint"}  # Ctrl-C during epoch 2, step 2 of 3
    part = train(cfg, synth64, tmp_path / "resumed", progress=False)
    assert part["stopped"] == "interrupted" and part["epoch"] == 1 and part["step"] == 2
    ck = load_checkpoint(tmp_path / "resumed" / "last.pt")  # weights_only=True load of RNG states etc.
    assert ck["epoch"] == 1 and ck["step"] == 2 and isinstance(ck["rng"][0]["torch"], torch.Tensor)
    TinyNet.hooks = {}
    done = train(cfg, synth64, tmp_path / "resumed", resume=True, progress=False)
    assert done["epoch"] == 3 and done["stopped"] == ""
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "resumed"))
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert a["optimizer"]["state"][0]["step"] == b["optimizer"]["state"][0]["step"]
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 9
    for ra, rb in zip(a["history"], b["history"]):
        assert {k: v for k, v in ra.items() if k != "seconds"} == {k: v for k, v in rb.items() if k != "seconds"}


def test_iters_ends_inside_an_epoch_and_resumes_exactly(synth64, tmp_path):
    """``train.iters`` = 8 with 3 steps an epoch: epochs of 3, 3 and 2 steps, the LR schedule spans the 8
    steps (not ``train.epochs``), the partial last epoch is validated, and a run interrupted inside it
    resumes to the same weights."""
    from cityseg.train.schedule import lr_factor

    over = {"train.iters": 8, "train.epochs": 40, "train.drop_last": False, "data.label_mode": "labelIds", "augment.enabled": False, "loss": [{"name": "ce"}]}
    cfg = tiny_cfg("standard", **over)
    full = train(cfg, synth64, tmp_path / "full", progress=False)
    assert full["stopped"] == "" and full["epoch"] == 3 and full["steps_done"] == 8
    assert [row["epoch"] for row in full["history"]] == [1, 2, 3] and "miou_34" in full["history"][-1]
    ck = load_checkpoint(tmp_path / "full" / "last.pt")
    s = cfg["schedule"]
    end_lr = cfg["optim"]["lr"] * lr_factor(8, 8, s["name"], s["power"], s["warmup_iters"], s["warmup_factor"])
    assert ck["scheduler"]["last_epoch"] == 8 and ck["optimizer"]["param_groups"][0]["lr"] == pytest.approx(end_lr)
    TinyNet.calls, TinyNet.hooks = 0, {7: "sigint"}  # Ctrl-C at the first step of the last (2-step) epoch
    part = train(cfg, synth64, tmp_path / "resumed", progress=False)
    assert part["stopped"] == "interrupted" and (part["epoch"], part["step"], part["steps_done"]) == (2, 1, 7)
    TinyNet.hooks = {}
    done = train(cfg, synth64, tmp_path / "resumed", resume=True, progress=False)
    assert done["epoch"] == 3 and done["steps_done"] == 8
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "resumed"))


def test_loss_terms_see_the_fraction_of_the_run_done(synth64, tmp_path, monkeypatch):
    """Step k of a 6-step run evaluates the loss at progress k/6 (what a `during` window is checked against)."""
    from cityseg.train.losses import CombinedLoss

    seen = []
    forward = CombinedLoss.forward

    def spy(self, outputs, target, progress=None):
        seen.append(progress)
        return forward(self, outputs, target, progress)

    monkeypatch.setattr(CombinedLoss, "forward", spy)
    cfg = tiny_cfg(**{"train.epochs": 2, "loss": [{"name": "ce", "during": [0.0, 0.5]}, {"name": "dice", "during": [0.5, 1.0]}]})
    train(cfg, synth64, tmp_path / "run", progress=False)
    assert seen == pytest.approx([k / 6 for k in range(6)])


def test_resume_from_an_epoch_end_checkpoint_equals_uninterrupted(synth64, tmp_path):
    """The last.pt of a finished epoch (what a SIGKILL in the next epoch leaves, with step checkpoints off;
    test_faults kills a real run there) resumed with the longer run's config reaches the same weights."""
    cfg = tiny_cfg(**{"train.epochs": 2, "train.seed": 7})
    train(cfg, synth64, tmp_path / "full", progress=False)
    one = apply_overrides(cfg, {"train.epochs": 1})
    train(one, synth64, tmp_path / "killed", progress=False)
    ck = load_checkpoint(tmp_path / "killed" / "last.pt")
    ck["config"] = cfg  # as if the 2-epoch run had been killed right after epoch 1
    from cityseg.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "killed" / "last.pt", ck)
    train(cfg, synth64, tmp_path / "killed", resume=True, progress=False)
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "killed"))


def test_seed_changes_and_repeats_the_run(synth64, tmp_path):
    cfg = tiny_cfg(**{"train.epochs": 1})
    train(cfg, synth64, tmp_path / "a", progress=False)
    train(cfg, synth64, tmp_path / "b", progress=False)
    train(apply_overrides(cfg, {"train.seed": 1}), synth64, tmp_path / "c", progress=False)
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert not torch.equal(weights(tmp_path / "a")["head.weight"], weights(tmp_path / "c")["head.weight"])


def test_checkpoint_contents_files_and_rebuild(synth64, tmp_path):
    run = tmp_path / "run"
    summary = train(tiny_cfg(), synth64, run, progress=False)
    for name in ("last.pt", "best.pt", "metrics.csv", "curves.png", "config.toml", "environment.json"):
        assert (run / name).is_file(), name
    env = json.loads((run / "environment.json").read_text())
    assert env["data_root"] == str(synth64) and env["packages"]["torch"] and env["cpu"]
    ck = load_checkpoint(run / "last.pt")
    for key in (
        "model",
        "model_name",
        "model_options",
        "label_mode",
        "num_classes",
        "class_names",
        "input_size",
        "interpolation",
        "mean",
        "std",
        "optimizer",
        "scheduler",
        "scaler",
        "epoch",
        "config",
        "metrics",
        "best_miou",
        "versions",
        "rng",
    ):
        assert key in ck, key
    assert ck["label_mode"] == "labelIds" and ck["num_classes"] == 34 and len(ck["class_names"]) == 34
    assert ck["input_size"] == [64, 128] and ck["interpolation"] == "bilinear" and ck["mean"] is None
    assert ck["epoch"] == 2 and ck["step"] == 0
    model, _ = model_from_checkpoint(run / "best.pt", expect_model="tiny", expect_label_mode="labelIds")
    assert model(torch.zeros(1, 3, 64, 128)).shape == (1, 34, 64, 128)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert set(rows[0]) == {"epoch", "train_loss", "val_loss", "pixel_acc", "miou_19", "miou_34", "lr", "seconds"}
    assert all(0.0 <= float(r["pixel_acc"]) <= 1.0 and math.isfinite(float(r["train_loss"])) for r in rows)
    best = load_checkpoint(run / "best.pt")
    assert best["best_miou"] == max(float(r["miou_34"]) for r in rows[: best["epoch"]]) or math.isclose(
        best["best_miou"], max(h["miou_34"] for h in best["history"])
    )
    assert summary["best_miou"] == ck["best_miou"]
    # the resolved config written next to the run reproduces the same recipe
    again, _ = load_recipe(str(run / "config.toml"))
    assert again == ck["config"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(synth64, tmp_path):
    from cityseg.errors import CitysegError

    run = tmp_path / "run"
    cfg = tiny_cfg(**{"train.epochs": 3})
    TinyNet.hooks = {4: "nan"}  # epoch 2, step 1
    with pytest.raises(CitysegError, match="non-finite loss"):
        train(cfg, synth64, run, progress=False)
    ck = load_checkpoint(run / "last.pt")
    assert ck["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert load_checkpoint(run / "best.pt")["epoch"] == 1


def test_nan_policy_skip_skips_the_step(synth64, tmp_path):
    run = tmp_path / "run"
    TinyNet.hooks = {2: "nan"}
    out = train(tiny_cfg(**{"train.nan_policy": "skip", "train.epochs": 1}), synth64, run, progress=False)
    ck = load_checkpoint(run / "last.pt")
    assert out["stopped"] == "" and ck["epoch"] == 1
    assert ck["optimizer"]["state"][0]["step"] == 2  # 3 steps, one skipped
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_standard_recipe_trainids_with_augmentation_and_combined_losses(synth64, tmp_path):
    run = tmp_path / "std"
    cfg = tiny_cfg("standard", **{"train.epochs": 1, "schedule.warmup_iters": 2, "train.batch_size": 2, "train.checkpoint_every": 2})
    cfg = apply_overrides(
        cfg,
        [
            'loss=[{name="ce", class_weights="auto"}, {name="dice", weight=0.5}, '
            '{name="focal", weight=0.5}, {name="lovasz", weight=0.2}, {name="ohem", weight=0.5}]'
        ],
    )
    out = train(cfg, synth64, run, progress=False)
    ck = load_checkpoint(run / "last.pt")
    assert out["stopped"] == "" and ck["label_mode"] == "trainIds" and ck["num_classes"] == 19
    assert ck["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert [g["weight_decay"] for g in ck["optimizer"]["param_groups"]] == [0.01, 0.0]
    # poly after warmup: the LR at the end is below the base LR
    assert ck["history"][-1]["lr"] < cfg["optim"]["lr"]
    assert 0.0 <= ck["metrics"]["miou_19"] <= 1.0


def test_resume_with_other_model_or_label_mode_is_refused(synth64, tmp_path):
    run = tmp_path / "run"
    train(tiny_cfg(**{"train.epochs": 1}), synth64, run, progress=False)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    from cityseg.errors import CitysegError

    with pytest.raises(CitysegError, match="label_mode"):
        train(tiny_cfg(**{"data.label_mode": "trainIds"}), synth64, run, resume=True, progress=False)
    with pytest.raises(CitysegError, match="model_options"):
        train(tiny_cfg(**{"model.options": {"width": 4}}), synth64, run, resume=True, progress=False)
    with pytest.raises(CitysegError, match="already holds a training run"):
        train(tiny_cfg(), synth64, run, progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def _cli(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "nonexistent"], "unknown model"),
        (["--model", "tiny", "--set", "train.nonsense=1"], "unknown config key 'train.nonsense'"),
        (["--model", "tiny", "--set", "optim.lr=fast"], "optim.lr must be a number"),
        (["--model", "tiny", "--set", "data.label_mode=colors"], "data.label_mode"),
        (["--model", "tiny", "--config", "no/such.toml"], "no such config file"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(synth64, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    code, err = _cli(capsys, "train", "--data", str(synth64), "--out", str(out), "--size", "64x128", *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # RUN_DIR is created lazily


def test_cli_out_is_a_file_and_empty_split(synth64, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("keep me")
    code, err = _cli(capsys, "train", "--data", str(synth64), "--out", str(f), "--model", "tiny")
    assert code == 2 and "not a folder" in err and f.read_text() == "keep me"
    code, err = _cli(
        capsys, "train", "--data", str(synth64), "--out", str(tmp_path / "r"), "--model", "tiny", "--size", "64x128", "--set", "data.val_split=test"
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_cli_trains_and_resumes(synth64, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--out", str(out), *tiny_cli_args(synth64)]
    assert main(args) == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    # --resume without --config takes the run's own config; --epochs extends it
    assert main(["train", "--data", str(synth64), "--out", str(out), "--resume", "--epochs", "2", "--quiet"]) == 0
    ck = load_checkpoint(out / "last.pt")
    assert ck["epoch"] == 2 and ck["config"]["train"]["batch_size"] == 5 and ck["config"]["train"]["seed"] == 3


def test_fast_auto_on_cpu_depends_on_native_bf16(monkeypatch):
    """``train.fast = "auto"``: bf16 + channels_last only with native bf16; otherwise fp32, and channels_last
    for inference only (measured slower for training the seed models in fp32, see docs/benchmarks.md)."""
    from cityseg.runtime import resolve_fast

    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    assert resolve_fast("auto", cpu) == (True, torch.bfloat16) == resolve_fast("auto", cpu, training=False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False, raising=False)
    assert resolve_fast("auto", cpu) == (False, None)
    assert resolve_fast("auto", cpu, training=False) == (True, None)
    assert resolve_fast(True, cpu) == (True, torch.bfloat16) and resolve_fast(False, cpu) == (False, None)
    assert resolve_fast("auto", torch.device("cuda")) == (True, torch.float16)


class AuxNet(TinyNet):
    """In training mode returns {"out", "aux"} (a training-only head), each at its ``strides`` entry (the
    input size here); in eval mode one tensor."""

    name = "aux"
    strides = (1, 1)  # of "out" and "aux"

    def __init__(self, num_classes: int = 34, width: int = 8):
        super().__init__(num_classes, width)
        self.aux = nn.Conv2d(width, num_classes, 1)

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        feats = self.body(x)
        out, aux = (nn.functional.avg_pool2d(feats, s) if s > 1 else feats for s in self.strides)
        return {"out": self.head(out), "aux": self.aux(aux)}


def test_training_heads_dict_outputs_and_missing_output(synth64, tmp_path, monkeypatch):
    monkeypatch.setitem(models.MODELS, "aux", models.Entry(partial(AuxNet), "aux test net"))
    cfg = tiny_cfg(**{"model.name": "aux", "train.epochs": 1, "loss": [{"name": "ce"}, {"name": "ce", "weight": 0.4, "output": "aux"}]})
    summary = train(cfg, synth64, tmp_path / "aux", progress=False)
    assert summary["epoch"] == 1 and math.isfinite(summary["metrics"]["val_loss"])
    from cityseg.train.state import seed_everything

    seed_everything(cfg["train"]["seed"])  # the run's initial weights
    before = {k: v for k, v in AuxNet().state_dict().items() if k.startswith("aux.")}
    after = load_checkpoint(tmp_path / "aux" / "last.pt")["model"]
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the aux head was trained
    bad = apply_overrides(cfg, {"loss": [{"name": "ce"}, {"name": "ce", "output": "boundary"}]})
    with pytest.raises(CitysegError, match="reads model output 'boundary'"):
        train(bad, synth64, tmp_path / "bad", progress=False)


class StrideNet(AuxNet):
    """Training outputs at their heads' own strides, as the real-time models and SegFormer return them:
    ``out`` at 1/4 of the input and ``aux`` at 1/2 (BiSeNetV2's auxiliary heads); eval mode: one tensor."""

    name = "stride"
    strides = (4, 2)


def test_loss_scale_is_applied_to_outputs_at_their_own_stride(synth64, tmp_path, monkeypatch):
    """``train.loss_scale = 0.25`` reaches the loss: every step's loss is cross-entropy of ``out`` (1/4, as
    it is) and of ``aux`` (1/2, each 2x2 block's mean) against the labels at rows/columns 4i + 2."""
    import torch.nn.functional as F

    from cityseg.train.losses import CombinedLoss

    monkeypatch.setitem(models.MODELS, "stride", models.Entry(partial(StrideNet), "stride test net"))
    seen = []
    forward = CombinedLoss.forward

    def spy(self, outputs, target, progress=None):
        loss = forward(self, outputs, target, progress)
        seen.append(({k: v.detach() for k, v in outputs.items()}, target, loss.detach()))
        return loss

    monkeypatch.setattr(CombinedLoss, "forward", spy)
    loss = [{"name": "ce"}, {"name": "ce", "weight": 0.4, "output": "aux"}]
    cfg = tiny_cfg(**{"model.name": "stride", "train.epochs": 1, "train.loss_scale": 0.25, "data.label_mode": "trainIds", "loss": loss})
    summary = train(cfg, synth64, tmp_path / "run", progress=False)
    assert summary["epoch"] == 1 and len(seen) == 3  # 10 images, batch 4
    for outputs, target, got in seen:
        assert outputs["out"].shape[-2:] == (16, 32) and outputs["aux"].shape[-2:] == (32, 64) and target.shape[-2:] == (64, 128)
        small = target[:, 2::4, 2::4]
        assert bool((small == 255).any())  # trainIds: ignored pixels are in the sample
        want = F.cross_entropy(outputs["out"], small, ignore_index=255) + 0.4 * F.cross_entropy(F.avg_pool2d(outputs["aux"], 2), small, ignore_index=255)
        assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_resume_before_the_first_checkpoint_starts_fresh(synth64, tmp_path, capsys):
    """A scheduler restarts the same command after a kill in epoch 1: no last.pt yet, so --resume starts
    the run afresh (one notice line) with the run's own config.toml, and ends where an uninterrupted run does."""
    args = tiny_cli_args(synth64)
    assert main(["train", "--out", str(tmp_path / "ref"), *args]) == 0
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "config.toml").write_text((tmp_path / "ref" / "config.toml").read_text())  # written at start
    capsys.readouterr()
    assert main(["train", "--data", str(synth64), "--out", str(killed), "--resume", "--quiet"]) == 0
    assert "no checkpoint to resume yet; starting a fresh run" in capsys.readouterr().out
    assert_same_weights(weights(tmp_path / "ref"), weights(killed))
    # the same with the full command line on a folder that does not exist yet
    assert main(["train", "--out", str(tmp_path / "new"), "--resume", *args]) == 0
    assert_same_weights(weights(tmp_path / "ref"), weights(tmp_path / "new"))


class BNNet(TinyNet):
    """TinyNet with BatchNorm: running statistics are state that a resumed run must carry over too.
    Training forwards record the dtype of the logits (bf16 under autocast)."""

    name = "bn"
    dtypes: list = []

    def __init__(self, num_classes: int = 34, width: int = 8):
        super().__init__(num_classes, width)
        conv = partial(nn.Conv2d, kernel_size=3, padding=1)
        self.body = nn.Sequential(conv(3, width), nn.BatchNorm2d(width), nn.ReLU(), nn.Dropout2d(0.2), conv(width, width), nn.BatchNorm2d(width), nn.ReLU())

    def forward(self, x):
        out = super().forward(x)
        if self.training:
            BNNet.dtypes.append(out.dtype)
        return out


def standard_cfg(**over):
    """The standard recipe on the tiny data: augmentation, 2 workers, warmup + poly, AdamW, OHEM with class
    weights + Lovász, grad clipping, BatchNorm, and bf16 autocast where the CPU has it natively."""
    from cityseg.runtime import native_bf16

    base = {"model.name": "bn", "train.epochs": 2, "train.batch_size": 4, "data.workers": 2, "schedule.warmup_iters": 2, "train.fast": native_bf16()}
    cfg = tiny_cfg("standard", **{**base, **over})
    cfg["loss"] = cfg["loss"][:1]  # the recipe's OHEM term; the Lovász term adds time, not coverage
    assert cfg["augment"]["enabled"] and cfg["optim"]["name"] == "adamw" and cfg["schedule"]["name"] == "poly" and cfg["train"]["grad_clip"] > 0
    assert cfg["loss"][0]["name"] == "ohem" and cfg["loss"][0]["class_weights"] == "auto"
    return cfg


def test_standard_recipe_interrupted_and_resumed_equals_uninterrupted(synth64, tmp_path, monkeypatch):
    """Bitwise: every source of randomness is restored or a function of (seed, epoch, index), and the CPU
    kernels (bf16 autocast included) give the same bits for the same inputs in one process."""
    monkeypatch.setitem(models.MODELS, "bn", models.Entry(partial(BNNet), "BatchNorm test net"))
    cfg = standard_cfg()  # 10 images, batch 4, drop_last: 2 steps per epoch
    train(cfg, synth64, tmp_path / "full", progress=False)
    TinyNet.calls, TinyNet.hooks = 0, {3: "sigint"}  # epoch 2, step 1 of 2
    part = train(cfg, synth64, tmp_path / "resumed", progress=False)
    assert part["stopped"] == "interrupted" and (part["epoch"], part["step"]) == (1, 1)
    TinyNet.hooks = {}
    assert train(cfg, synth64, tmp_path / "resumed", resume=True, progress=False)["stopped"] == ""
    a, b = (load_checkpoint(tmp_path / name / "last.pt") for name in ("full", "resumed"))
    assert_same_weights(a["model"], b["model"])
    assert any(k.endswith("running_var") for k in a["model"])
    for k, state in a["optimizer"]["state"].items():
        assert_same_weights(state, b["optimizer"]["state"][k])
    assert a["scheduler"] == b["scheduler"]
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])


def test_bf16_autocast_training_is_finite_and_learns(synth64, tmp_path, monkeypatch):
    monkeypatch.setitem(models.MODELS, "bn", models.Entry(partial(BNNet), "BatchNorm test net"))
    BNNet.dtypes = []
    cfg = tiny_cfg(**{"model.name": "bn", "train.epochs": 1, "train.fast": True})
    out = train(cfg, synth64, tmp_path / "bf16", progress=False)
    assert BNNet.dtypes and set(BNNet.dtypes) == {torch.bfloat16}
    from cityseg.train.state import seed_everything

    seed_everything(cfg["train"]["seed"])  # the run's initial weights
    before = BNNet().state_dict()
    ck = load_checkpoint(tmp_path / "bf16" / "last.pt")
    assert math.isfinite(out["history"][0]["train_loss"]) and math.isfinite(out["metrics"]["val_loss"])
    for k, v in ck["model"].items():
        assert v.dtype == before[k].dtype and (not v.is_floating_point() or bool(torch.isfinite(v).all())), k
    assert not torch.equal(before["head.weight"], ck["model"]["head.weight"])


@pytest.mark.parametrize(("label_mode", "best_epoch"), [("trainIds", 2), ("labelIds", 1)])
def test_best_checkpoint_holds_the_weights_of_the_best_epoch(synth64, tmp_path, monkeypatch, label_mode, best_epoch):
    """best.pt is selected by miou_19 for trainIds runs and miou_34 for labelIds runs (scores patched so the
    two, and pixel accuracy, peak at different epochs, with worse epochs after the peak)."""
    import cityseg.train.run as run_module

    scores = {"miou_19": [0.2, 0.6, 0.4], "miou_34": [0.5, 0.3, 0.4], "pixel_acc": [0.1, 0.2, 0.9]}
    epoch_weights = {}
    save = run_module.save_checkpoint

    def fake_evaluate(ctx, loader, mode, show=False):
        e = len(epoch_weights)  # the epochs recorded so far
        return {**{k: v[e] for k, v in scores.items()}, "val_loss": 1.0}

    def spy_save(path, ckpt):
        if path.name == "last.pt" and ckpt.step == 0:
            epoch_weights[ckpt.epoch] = {k: v.clone() for k, v in ckpt.model.items()}
        save(path, ckpt)

    monkeypatch.setattr(run_module, "evaluate", fake_evaluate)
    monkeypatch.setattr(run_module, "save_checkpoint", spy_save)
    monkeypatch.setattr(run_module, "plot_curves", lambda *a: None)  # time the test does not need
    train(tiny_cfg(**{"train.epochs": 3, "data.label_mode": label_mode}), synth64, tmp_path / "run", progress=False)
    assert sorted(epoch_weights) == [1, 2, 3]
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    key = "miou_19" if label_mode == "trainIds" else "miou_34"
    assert best["epoch"] == best_epoch and best["best_miou"] == scores[key][best_epoch - 1] == best["metrics"][key]
    assert_same_weights(best["model"], epoch_weights[best_epoch])
    assert not torch.equal(best["model"]["head.weight"], epoch_weights[3]["head.weight"])  # later epochs differ


def test_max_minutes_cuts_training_at_the_deadline_and_resumes_exactly(synth64, tmp_path, monkeypatch):
    """A clock that advances one minute per training forward: with ``max_minutes = 1.5`` each invocation
    stops after the step during which the deadline passed (the second), resumably, mid-epoch or not."""
    from types import SimpleNamespace

    import cityseg.train.run as run_module

    cfg = tiny_cfg(**{"train.epochs": 2, "train.checkpoint_minutes": 0.0})  # 3 steps per epoch
    train(cfg, synth64, tmp_path / "full", progress=False)
    TinyNet.calls = 0
    monkeypatch.setattr(run_module, "time", SimpleNamespace(monotonic=lambda: 60.0 * TinyNet.calls))
    monkeypatch.setattr(run_module, "plot_curves", lambda *a: None)  # time the test does not need
    limited = apply_overrides(cfg, {"train.max_minutes": 1.5})
    lines: list[str] = []
    stops = []
    for resume in (False, True, True):
        s = train(limited, synth64, tmp_path / "cut", resume=resume, progress=False, log=lines.append)
        stops.append((s["stopped"], s["epoch"], s["step"]))
    # steps 1-2; then step 3 (ends epoch 1) and 4; then 5 and 6 (the last: the run is complete)
    assert stops == [("time limit", 0, 2), ("time limit", 1, 1), ("time limit", 2, 0)]
    assert sum("time limit of 1.5 min reached" in line for line in lines) == 3
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "cut"))


def test_checkpoint_minutes_saves_mid_epoch_when_due(synth64, tmp_path, monkeypatch):
    """The same one-minute-per-forward clock with ``checkpoint_minutes = 1.5`` and no time limit: a mid-epoch
    last.pt at the step during which 1.5 minutes since the last save passed, none at an epoch's last step
    (the epoch end saves), and the run is not stopped by it."""
    from types import SimpleNamespace

    import cityseg.train.run as run_module

    saved = []
    save = run_module.save_checkpoint

    def spy_save(path, ckpt):
        if path.name == "last.pt":
            saved.append((ckpt.epoch, ckpt.step))
        save(path, ckpt)

    monkeypatch.setattr(run_module, "time", SimpleNamespace(monotonic=lambda: 60.0 * TinyNet.calls))
    monkeypatch.setattr(run_module, "save_checkpoint", spy_save)
    monkeypatch.setattr(run_module, "plot_curves", lambda *a: None)
    cfg = tiny_cfg(**{"train.epochs": 2, "train.checkpoint_minutes": 1.5})  # 3 steps per epoch
    summary = train(cfg, synth64, tmp_path / "run", progress=False)
    assert summary["stopped"] == "" and summary["epoch"] == 2
    # due after step 2 (120 s > 90 s), then 90 s after that save: step 5; epoch ends at steps 3 and 6
    assert saved == [(0, 2), (1, 0), (1, 2), (2, 0)]


def test_tensorboard_writes_scalars_or_refuses_with_one_line(synth64, tmp_path, monkeypatch, capsys):
    """Without the tensorboard package, ``--tensorboard`` is a one-line error (exit 2) before any training;
    with it, every epoch's scalars go to RUN_DIR/tensorboard (a stand-in SummaryWriter records them here)."""
    import sys
    import types

    cfg = tiny_cfg(**{"train.epochs": 2, "train.tensorboard": True})
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the import fails as if not installed
    with pytest.raises(CitysegError, match="needs the tensorboard package"):
        train(cfg, synth64, tmp_path / "missing", progress=False)
    code, err = _cli(capsys, "train", "--out", str(tmp_path / "cli"), *tiny_cli_args(synth64), "--tensorboard")
    assert code == 2 and "pip install tensorboard" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "missing").exists() and not (tmp_path / "cli").exists()

    class Writer:
        made: list = []

        def __init__(self, log_dir):
            self.log_dir, self.scalars, self.closed = log_dir, [], False
            Writer.made.append(self)

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, step))

        def flush(self):
            pass

        def close(self):
            self.closed = True

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    train(cfg, synth64, tmp_path / "tb", progress=False)
    (w,) = Writer.made
    assert w.log_dir == str(tmp_path / "tb" / "tensorboard") and w.closed
    for tag in ("train_loss", "val_loss", "miou_34", "lr"):
        assert [step for t, step in w.scalars if t == tag] == [1, 2], tag


def test_tensorboard_event_files(synth64, tmp_path):
    """The real SummaryWriter's event files, read back with tensorboard's own reader, hold every epoch's
    scalars with the values of the run's history (tensorboard is a dev dependency: missing, it fails)."""
    accumulator = require_oracle("tensorboard.backend.event_processing.event_accumulator")
    summary = train(tiny_cfg(**{"train.epochs": 2, "train.tensorboard": True}), synth64, tmp_path / "tb", progress=False)
    assert list((tmp_path / "tb" / "tensorboard").glob("events.out.tfevents.*"))
    events = accumulator.EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    events.Reload()
    for tag in ("train_loss", "val_loss", "miou_34", "lr"):
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        want = [(row["epoch"], pytest.approx(row[tag], rel=1e-6)) for row in summary["history"]]
        assert got == want, tag


# ---- best.pt: the weights and what prediction needs; last.pt: the whole training state ----------------
WIDTH = 128


def wide_cfg(**over):
    return tiny_cfg(**{"model.options": {"width": WIDTH}, "train.epochs": 1, **over})


@pytest.fixture(scope="module")
def wide_run(synth64, tmp_path_factory):
    """One epoch of a wider tiny net (enough weights, about 155 k parameters, that best.pt's size is theirs)."""
    out = tmp_path_factory.mktemp("run") / "run"
    models.MODELS["tiny"] = models.Entry(partial(TinyNet), "tiny test net")
    try:
        train(wide_cfg(), synth64, out, progress=False)
    finally:
        models.MODELS.pop("tiny", None)
    return out


def test_best_pt_is_the_weights_without_the_optimizer(wide_run):
    best, last = load_checkpoint(wide_run / "best.pt"), load_checkpoint(wide_run / "last.pt")
    state_bytes = sum(v.numel() * v.element_size() for v in best["model"].values())
    params = sum(v.numel() for k, v in best["model"].items() if k.endswith(("weight", "bias")))
    assert params == 3 * WIDTH * 9 + WIDTH + WIDTH * WIDTH * 9 + WIDTH + WIDTH * 34 + 34  # counted by hand
    assert (wide_run / "best.pt").stat().st_size < 1.1 * state_bytes + 64 * 1024
    # Adam keeps two moments per weight: last.pt is about three times the weights
    assert (wide_run / "last.pt").stat().st_size > 2.5 * state_bytes
    assert best["optimizer"] is None and best["scheduler"] is None and best["rng"] is None and best["train_state"] is None
    assert last["optimizer"] is not None and last["rng"] is not None
    for key in ("model_name", "model_options", "label_mode", "num_classes", "class_names", "input_size", "interpolation", "mean", "std", "epoch"):
        assert best[key] == last[key], key
    assert best["config"] == last["config"] and best["best_miou"] == last["best_miou"]
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])  # one epoch: best is last


def test_best_pt_predicts_and_scores_like_last_pt(wide_run, synth64):
    image = np.random.default_rng(0).integers(0, 256, (128, 256, 3), dtype=np.uint8)
    a, b = (Predictor.from_checkpoint(wide_run / n).predict(image) for n in ("best.pt", "last.pt"))
    assert a.shape == (128, 256) and np.array_equal(a, b)
    full, _, _ = score_checkpoint(synth64, "val", wide_run / "best.pt", workers=1)
    ref, _, _ = score_checkpoint(synth64, "val", wide_run / "last.pt", workers=1)
    assert full.results()["n_images"] == 2 and full.results()["mIoU_34"] == ref.results()["mIoU_34"]


@pytest.mark.parametrize("name", ["best.pt", "last.pt"])
def test_init_from_takes_the_weights_of_either_file(wide_run, synth64, tmp_path, name):
    run = setup(wide_cfg(**{"train.init_from": str(wide_run / name)}), synth64, tmp_path / "fine", D.init_distributed_mode(), print)
    want = load_checkpoint(wide_run / name)["model"]
    got = run.ctx.net.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert run.epoch == 0 and run.history == []  # a fresh run: only the weights came over


def test_resume_from_last_pt_continues_and_from_best_pt_is_refused(wide_run, synth64, tmp_path, capsys):
    resumed = tmp_path / "resumed"
    shutil.copytree(wide_run, resumed)
    summary = train(wide_cfg(**{"train.epochs": 2}), synth64, resumed, resume=True, progress=False)
    assert summary["epoch"] == 2 and load_checkpoint(resumed / "last.pt")["epoch"] == 2
    shutil.copy(resumed / "best.pt", resumed / "last.pt")
    with pytest.raises(CitysegError, match=r"last.pt: holds weights only .*use the run's own last.pt"):
        train(wide_cfg(**{"train.epochs": 3}), synth64, resumed, resume=True, progress=False)
    flags = ["--data", str(synth64), "--out", str(resumed), "--resume", "--epochs", "3", "--workers", "0", "--quiet"]
    assert main(["train", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds weights only" in err and len(err.splitlines()) == 1
