"""Recipes, overrides and their validation; LR schedules; the seeded distributed batch sampler; RNG state."""

from __future__ import annotations

import random
import tomllib

import numpy as np
import pytest
import torch

from cityseg.errors import CitysegError
from cityseg.train.config import DEFAULTS, apply_overrides, dump_toml, load_recipe, parse_override, recipe_names
from cityseg.train.sampler import EpochBatchSampler
from cityseg.train.schedule import lr_factor


def test_shipped_recipes():
    assert {"seed", "standard"} <= set(recipe_names())
    seed, _ = load_recipe("seed")
    assert seed["data"] == {**DEFAULTS["data"], "label_mode": "labelIds", "size": [128, 256], "interpolation": "bilinear", "mean": [], "std": [], "workers": 0}
    assert seed["augment"]["enabled"] is False
    assert seed["optim"] == {**DEFAULTS["optim"], "name": "adam", "lr": 1e-3, "eps": 1e-7, "betas": [0.9, 0.999], "weight_decay": 0.0}
    assert seed["schedule"]["name"] == "constant" and seed["schedule"]["warmup_iters"] == 0
    assert seed["loss"] == [{"name": "ce", "weight": 1.0, "class_weights": "none"}]
    assert seed["train"]["batch_size"] == 16 and seed["train"]["grad_clip"] == 0.0
    std, _ = load_recipe("standard")
    assert std["data"]["label_mode"] == "trainIds" and std["data"]["mean"] == [0.485, 0.456, 0.406]
    assert std["augment"]["enabled"] and std["augment"]["scale"] == [0.5, 2.0] and std["augment"]["photometric"]
    assert std["optim"]["name"] == "adamw" and std["schedule"]["name"] == "poly" and std["schedule"]["warmup_iters"] > 0
    assert [entry["name"] for entry in std["loss"]] == ["ohem", "lovasz"]


def test_overrides_are_type_checked():
    cfg, _ = load_recipe("seed")
    out = apply_overrides(
        cfg,
        [
            "optim.lr=3e-4",
            "train.epochs=5",
            "optim.name=adamw",
            "train.fast=true",
            "data.size=[64, 128]",
            "loss.0.weight=2",
            "model.options.reduction=8",
            "train.checkpoint_minutes=0.5",
            "train.loss_scale=0.5",
            'loss=[{name="ce"}, {name="dice", weight=0.5, smooth=0.0}]',
        ],
    )
    assert out["optim"]["lr"] == 3e-4 and out["train"]["epochs"] == 5 and out["optim"]["name"] == "adamw"
    assert out["train"]["fast"] is True and out["data"]["size"] == [64, 128]
    assert out["model"]["options"] == {"reduction": 8} and out["train"]["checkpoint_minutes"] == 0.5
    assert out["train"]["loss_scale"] == 0.5 and cfg["train"]["loss_scale"] == 1.0  # the seed's loss is at full size
    assert out["loss"][1] == {"name": "dice", "weight": 0.5, "smooth": 0.0}
    assert cfg["optim"]["lr"] == 1e-3  # the input is not modified
    for bad, msg in [
        ("train.epochs=2.5", "must be an integer"),
        ("optim.lr=[1]", "must be a number"),
        ("nope.x=1", "unknown config key"),
        ("train.nope=1", "unknown config key"),
        ("optim.name=rmsprop", "not one of"),
        ("train.fast=maybe", "auto"),
        ("data.size=[1, 2, 3]", "2 values"),
        ("train.epochs=0", "positive"),
        ("loss.3.weight=1", "loss terms"),
        ('loss=[{name="ce", gamma=2.0}]', "unknown config key"),
        ("train.drop_last=1", "boolean"),
        ("novalue", "key=value"),
        ("data.mean=[0.5]", "both"),
        ("train.checkpoint_minutes=-1", "train.checkpoint_minutes must be >= 0"),
        ("train.loss_scale=0", r"train.loss_scale must be in \(0, 1\]"),
        ("train.loss_scale=2", r"train.loss_scale must be in \(0, 1\]"),
    ]:
        with pytest.raises(CitysegError, match=msg) as e:
            apply_overrides(cfg, [bad])
        assert "\n" not in str(e.value)
    assert parse_override("optim.name=adamw") == ("optim.name", "adamw")
    assert parse_override("train.seed=12") == ("train.seed", 12)


def test_recipe_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepochs = 'many'\n")
    with pytest.raises(CitysegError, match=f"{bad}: train.epochs must be an integer"):
        load_recipe(str(bad))
    bad.write_text("[training]\nepochs = 3\n")
    with pytest.raises(CitysegError, match="unknown section 'training'"):
        load_recipe(str(bad))
    bad.write_text("[train\n")
    with pytest.raises(CitysegError, match="cannot read TOML config: TOMLDecodeError"):
        load_recipe(str(bad))
    ok = tmp_path / "ok.toml"
    ok.write_text("[train]\nepochs = 3\n")  # partial files inherit the defaults
    cfg, _ = load_recipe(str(ok))
    assert cfg["train"]["epochs"] == 3 and cfg["optim"] == DEFAULTS["optim"]


def test_dump_toml_round_trips():
    cfg, _ = load_recipe("standard")
    cfg = apply_overrides(cfg, ["model.options.upsample=bilinear", "loss.0.class_weights=[1.0, 2.5]"])
    again = tomllib.loads(dump_toml(cfg))
    assert again == cfg


def test_lr_schedules():
    assert lr_factor(0, 100, "constant") == 1.0
    assert lr_factor(50, 100, "poly", power=1.0) == pytest.approx(0.5)
    assert lr_factor(50, 100, "poly", power=0.9) == pytest.approx(0.5**0.9)
    assert lr_factor(0, 100, "poly", warmup_iters=10, warmup_factor=0.1) == pytest.approx(0.1)
    assert lr_factor(5, 100, "poly", warmup_iters=10, warmup_factor=0.1) == pytest.approx(0.55)
    assert lr_factor(10, 100, "poly", warmup_iters=10) == pytest.approx(1.0)
    assert lr_factor(55, 100, "poly", power=1.0, warmup_iters=10) == pytest.approx(0.5)
    assert lr_factor(100, 100, "poly", floor=0.01) == pytest.approx(0.01)
    assert lr_factor(50, 100, "cosine") == pytest.approx(0.5)


def test_sampler_ranks_partition_the_single_process_batches():
    single = EpochBatchSampler(22, 6, seed=5, drop_last=False)
    single.set_epoch(3)
    ranks = [EpochBatchSampler(22, 6, seed=5, rank=r, world_size=2) for r in range(2)]
    for s in ranks:
        s.set_epoch(3)
    one = list(single)
    two = [list(s) for s in ranks]
    assert [len(b) for b in one] == [6, 6, 6, 4] and len(single) == 4
    for k, batch in enumerate(one):
        assert two[0][k] + two[1][k] == batch
    assert sorted(i for b in one for i in b) == list(range(22))
    # a partial last batch that does not split evenly across 4 processes is dropped there
    four = EpochBatchSampler(22, 8, seed=5, rank=0, world_size=4)
    assert len(four) == 2 and len(list(four)) == 2
    # another epoch, another order; the same epoch, the same order; start_step skips batches
    single.set_epoch(4)
    assert list(single) != one
    single.set_epoch(3, start_step=2)
    assert list(single) == one[2:]
    with pytest.raises(CitysegError, match="divisible"):
        EpochBatchSampler(10, 5, world_size=2)


def test_rng_state_survives_weights_only_round_trip(tmp_path):
    from cityseg.checkpoint import load_checkpoint, save_checkpoint
    from cityseg.train.state import get_rng_state, set_rng_state

    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    state = get_rng_state()
    expected = (torch.rand(3), np.random.rand(3), np.random.randn(), random.random())
    save_checkpoint(tmp_path / "c.pt", {"model": {}, "model_name": "x", "label_mode": "labelIds", "num_classes": 34, "rng": [state]})
    loaded = load_checkpoint(tmp_path / "c.pt")["rng"][0]  # weights_only=True
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    set_rng_state(loaded)
    got = (torch.rand(3), np.random.rand(3), np.random.randn(), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and got[3] == expected[3]


def test_loss_output_key_is_checked():
    cfg, _ = load_recipe("standard")
    out = apply_overrides(cfg, ['loss=[{name="ohem"}, {name="ohem", weight=0.4, output="aux"}]'])
    assert out["loss"][1]["output"] == "aux" and "output" not in out["loss"][0]
    with pytest.raises(CitysegError, match=r"loss\[0\].output must name a model output"):
        apply_overrides(cfg, ['loss=[{name="ce", output=3}]'])


def test_loss_during_windows_are_checked():
    cfg, _ = load_recipe("standard")
    with pytest.raises(CitysegError, match=r"loss\[0\].during must be \[start, end\]"):
        apply_overrides(cfg, ['loss=[{name="ce", during=[0.5, 0.2]}]'])
    with pytest.raises(CitysegError, match="no loss term counts from 80% of the run on"):
        apply_overrides(cfg, ['loss=[{name="ce", during=[0, 0.8]}]'])
    with pytest.raises(CitysegError, match="no loss term counts from 50% of the run on"):
        apply_overrides(cfg, ['loss=[{name="ce", during=[0, 0.5]}, {name="dice", during=[0.6, 1]}]'])
    ok = apply_overrides(cfg, ['loss=[{name="ce", during=[0, 0.6]}, {name="dice", during=[0.5, 1]}]'])
    assert ok["loss"][1]["during"] == [0.5, 1.0]


def test_a_recipe_based_on_another_states_only_what_differs(tmp_path):
    fast, _ = load_recipe("cpu-fast")
    iou, _ = load_recipe("cpu-fast-iou")
    assert {k: v for k, v in iou.items() if k != "loss"} == {k: v for k, v in fast.items() if k != "loss"}
    assert [(e["name"], e.get("during")) for e in iou["loss"]] == [("ohem", [0.0, 0.8]), ("lovasz", [0.8, 1.0]), ("ohem", None)]
    real, _ = load_recipe("cpu-fast-real")  # the demo's: cpu-fast, RandConv on half the samples, 3 frozen stages, nothing else
    assert real["augment"].pop("randconv") == 0.5 and fast["augment"].pop("randconv") == 0
    assert real["train"].pop("frozen_stages") == 3 and fast["train"].pop("frozen_stages") == 0
    assert real == fast
    (tmp_path / "a.toml").write_text('base = "b.toml"\n[train]\nepochs = 3\n')
    (tmp_path / "b.toml").write_text('base = "standard"\n[train]\nepochs = 5\nbatch_size = 4\n')
    a, _ = load_recipe(tmp_path / "a.toml")
    assert a["train"]["epochs"] == 3 and a["train"]["batch_size"] == 4 and a["optim"]["name"] == "adamw"
    (tmp_path / "b.toml").write_text('base = "a.toml"\n')
    with pytest.raises(CitysegError, match="recipes name each other as base"):
        load_recipe(tmp_path / "a.toml")
    (tmp_path / "c.toml").write_text("base = 3\n")
    with pytest.raises(CitysegError, match="base must name a recipe"):
        load_recipe(tmp_path / "c.toml")
    (tmp_path / "d.toml").write_text('base = "nonesuch"\n')
    with pytest.raises(CitysegError, match="d.toml: base = 'nonesuch' is neither a shipped recipe"):  # names the file holding it
        load_recipe(tmp_path / "d.toml")
