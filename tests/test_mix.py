"""Training on several sources: the weighted sampler, ClassMix, ``train.init_from``, config errors, and
exact resume of a two-source run. A tiny conv net with dropout (so RNG restoration matters) trains on
two generated SynthCity roots at 64x128."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch

from cityseg import models
from cityseg.checkpoint import load_checkpoint
from cityseg.data.dataset import CityscapesDataset
from cityseg.data.mix import MixedDataset
from cityseg.data.transforms import classmix
from cityseg.errors import CitysegError
from cityseg.train import distributed as D
from cityseg.train.config import apply_overrides, dump_toml, load_recipe
from cityseg.train.init import init_from_checkpoint
from cityseg.train.mix import WeightedEpochBatchSampler, weighted_order
from cityseg.train.run import build_train_set, setup, train
from cityseg.train.sampler import EpochBatchSampler
from hooknet import HookNet as MixNet


@pytest.fixture(autouse=True)
def mixnet(monkeypatch):
    monkeypatch.setitem(models.MODELS, "mixnet", models.Entry(partial(MixNet), "mix test net"))
    MixNet.hooks, MixNet.calls = {}, 0


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    from cityseg.data.synth import generate

    a, b = tmp_path_factory.mktemp("real"), tmp_path_factory.mktemp("synth")
    generate(a, train=5, val=2, test=0, size=(64, 128), seed=4)
    generate(b, train=3, val=0, test=0, size=(64, 128), seed=5)
    return a, b


def cfg_with(**over):
    cfg, _ = load_recipe("seed")
    base = {"model.name": "mixnet", "train.epochs": 2, "train.batch_size": 4, "data.size": [64, 128], "data.workers": 0}
    base.update({"train.eval_batch_size": 2, "train.fast": False, **over})
    return apply_overrides(cfg, base)


def sources(*pairs):
    return [{"root": str(r), "weight": w} for r, w in pairs]


# ---- the weighted order (pure functions) ---------------------------------------------------------
def test_weights_are_honoured_within_binomial_tolerance():
    lengths, weights = [10, 30, 5], [0.5, 0.3, 0.2]
    offsets = np.cumsum([0, *lengths])
    counts, draws = np.zeros(3), 0
    for epoch in range(60):
        order = np.array(weighted_order(7, epoch, lengths, weights, sum(lengths)))
        counts += np.histogram(order, bins=offsets)[0]
        draws += len(order)
    for c, w in zip(counts, weights, strict=True):
        assert abs(c - draws * w) < 4.5 * math.sqrt(draws * w * (1 - w)), (c, draws * w)


def test_order_is_deterministic_and_each_source_is_a_pass_before_a_repeat():
    a = weighted_order(3, 2, [4, 6], [0.9, 0.1], 10)
    assert a == weighted_order(3, 2, [4, 6], [0.9, 0.1], 10)
    assert a != weighted_order(3, 3, [4, 6], [0.9, 0.1], 10) and a != weighted_order(4, 2, [4, 6], [0.9, 0.1], 10)
    first = [i for i in a if i < 4][:4]  # source 0 (4 frames) drawn ~9 times: its first 4 draws are a permutation
    assert sorted(first) == [0, 1, 2, 3]


def test_one_source_is_exactly_the_plain_shuffle():
    for epoch in range(3):
        plain = EpochBatchSampler(10, 4, seed=5)
        plain.set_epoch(epoch)
        assert weighted_order(5, epoch, [10], [0.3], 10) == plain.epoch_order()


@pytest.mark.parametrize("world", [2, 4])
def test_union_of_process_batches_is_the_single_process_batch_and_resume_skips(world):
    one = WeightedEpochBatchSampler([7, 9], [0.7, 0.3], 8, seed=1)
    ranks = [WeightedEpochBatchSampler([7, 9], [0.7, 0.3], 8, seed=1, rank=r, world_size=world) for r in range(world)]
    for s in [one, *ranks]:
        s.set_epoch(3)
    single = list(one)
    per_rank = [list(s) for s in ranks]
    assert len(single) == len(one) == 2
    for k, batch in enumerate(single):
        assert [i for b in per_rank for i in b[k]] == batch
    one.set_epoch(3, start_step=1)
    assert list(one) == single[1:]


# ---- ClassMix -----------------------------------------------------------------------------------
def test_classmix_pastes_exactly_half_the_classes_of_the_second_frame():
    rng = np.random.default_rng(0)
    image, image2 = (rng.integers(0, 256, (6, 8, 3), dtype=np.uint8) for _ in range(2))
    label = np.full((6, 8), 9, np.uint8)
    label2 = np.array([[1, 2, 3, 255] * 2] * 6, np.uint8)  # classes 1, 2, 3 and the ignore value
    out_image, out_label, chosen = classmix(image, label, image2, label2, np.random.default_rng(1), ignore_value=255)
    assert len(chosen) == 2 and 255 not in chosen and set(chosen) <= {1, 2, 3}
    mask = np.isin(label2, chosen)
    assert np.array_equal(out_label[mask], label2[mask]) and np.array_equal(out_image[mask], image2[mask])
    assert np.array_equal(out_label[~mask], label[~mask]) and np.array_equal(out_image[~mask], image[~mask])
    assert (out_label[label2 == 255] == 9).all()  # ignore pixels of the second frame are never pasted
    assert label[0, 0] == 9 and image is not out_image  # inputs untouched
    again = classmix(image, label, image2, label2, np.random.default_rng(1), ignore_value=255)
    assert np.array_equal(again[1], out_label)
    only_void = classmix(image, label, image2, np.full_like(label2, 255), rng, ignore_value=255)
    assert np.array_equal(only_void[1], label) and len(only_void[2]) == 0


def test_mixed_dataset_first_source_matches_the_plain_dataset_and_classmix_is_per_sample(roots):
    cfg = cfg_with(**{"augment.enabled": True, "data.label_mode": "trainIds"})
    plain = build_train_set(cfg, roots[0], "trainIds")
    assert isinstance(plain, CityscapesDataset)  # no sources, no ClassMix: the training set of before
    mixed = build_train_set(apply_overrides(cfg, {"data.sources": sources((roots[0], 1.0), (roots[1], 1.0))}), roots[0], "trainIds")
    assert isinstance(mixed, MixedDataset) and mixed.lengths == [5, 3] and mixed.locate(6) == (1, 1)
    for ds in (plain, mixed):
        ds.set_epoch(2)
    for i in range(5):
        assert all(torch.equal(a, b) for a, b in zip(plain[i], mixed[i], strict=True))
    cm = build_train_set(apply_overrides(cfg, {"augment.classmix": 1.0}), roots[0], "trainIds")
    cm.set_epoch(2)
    x, y = cm[0]
    assert torch.equal(cm[0][1], y) and not torch.equal(y, plain[0][1])


def test_classmix_in_labelids_mode_never_pastes_unlabeled(roots):
    """labelIds have no ignore index: id 0 ("unlabeled", also the padding of down-scaled crops) is the void
    value ClassMix never pastes, so a 0 in a mixed label is a 0 of the first frame; the other classes are pasted."""
    over = {"augment.enabled": True, "augment.scale": [0.5, 0.6], "data.label_mode": "labelIds"}  # down-scaled: padded
    srcs = {"data.sources": sources((roots[0], 1.0), (roots[1], 1.0))}
    first = build_train_set(cfg_with(**over, **srcs), roots[0], "labelIds")
    mixed = build_train_set(cfg_with(**over, **srcs, **{"augment.classmix": 1.0}), roots[0], "labelIds")
    changed = 0
    for ds in (first, mixed):
        ds.set_epoch(1)
    for i in range(len(mixed)):
        a, b = first[i][1], mixed[i][1]
        assert bool((a == 0).any())  # the first frame has padding
        assert bool((a[b == 0] == 0).all()), i  # no 0 came from the second frame
        changed += int(bool((a != b).any()))
    assert changed >= len(mixed) - 1  # classes were pasted (a frame paired with itself may change nothing)


def test_classmix_samples_with_workers_equal_those_without(roots):
    """Two DataLoader workers produce the batches one process does: every sample is a function of
    (seed, epoch, index), whichever worker draws it."""
    from cityseg.runtime import process_context
    from cityseg.train.mix import train_sampler

    cfg = cfg_with(**{"augment.enabled": True, "augment.classmix": 0.7, "data.sources": sources((roots[0], 0.6), (roots[1], 0.4))})
    ds = build_train_set(cfg, roots[0], cfg["data"]["label_mode"])
    batches = {}
    for workers in (0, 2):
        sampler = train_sampler(cfg, ds.lengths, D.DistInfo())
        got = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            ds.set_epoch(epoch)
            ctx = process_context() if workers else None
            got += list(torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=workers, multiprocessing_context=ctx))
        batches[workers] = got
    assert len(batches[0]) == len(batches[2]) == 4
    for (x0, y0), (x2, y2) in zip(batches[0], batches[2], strict=True):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)


def test_classmix_partners_change_from_epoch_to_epoch(roots, monkeypatch):
    """The second frame of each sample is drawn anew every epoch (and again the same for the same epoch)."""
    cfg = cfg_with(**{"augment.enabled": True, "augment.classmix": 1.0, "data.sources": sources((roots[0], 1.0), (roots[1], 1.0))})
    ds = build_train_set(cfg, roots[0], cfg["data"]["label_mode"])
    calls = []
    augmented = MixedDataset.augmented
    monkeypatch.setattr(MixedDataset, "augmented", lambda self, index, rng: calls.append(index) or augmented(self, index, rng))

    def partners(epoch):
        ds.set_epoch(epoch)
        calls.clear()
        for i in range(len(ds)):
            ds[i]
        assert calls[0::2] == list(range(len(ds)))  # each sample: its own frame, then its partner
        return calls[1::2]

    p0, p1, p2 = partners(0), partners(1), partners(2)
    assert partners(1) == p1
    assert p0 != p1 and p1 != p2 and p0 != p2
    assert len(set(p0) | set(p1) | set(p2)) > len(ds) // 2  # partners spread over the frames of both sources


# ---- config -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "over, message",
    [
        ({"data.sources": [{"root": "", "weight": 1.0}]}, "data.sources[0].root must be a dataset folder"),
        ({"data.sources": [{"root": "a"}, {"root": "b", "weight": 0}]}, "data.sources[1].weight must be a positive number"),
        ({"data.sources": [{"root": "a", "weight": "x"}]}, "data.sources[0].weight must be a positive number"),
        ({"data.sources": [{"root": "a", "wieght": 1}]}, "unknown config key data.sources[0].'wieght'"),
        ({"data.sources": ["a"]}, "data.sources must be a list of tables"),
        ({"augment.classmix": 1.5, "augment.enabled": True}, "augment.classmix is a probability"),
        ({"augment.classmix": 0.5}, "augment.classmix needs augment.enabled = true"),
    ],
)
def test_bad_mix_config_is_one_line_naming_the_key(over, message):
    with pytest.raises(CitysegError, match=None) as e:
        cfg_with(**over)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cli_bad_source_weight_is_one_line_exit_2(roots, tmp_path, capsys):
    from cityseg.cli import main

    bad = f'data.sources=[{{root="{roots[1]}", weight=-1}}]'
    code = main(["train", "--data", str(roots[0]), "--out", str(tmp_path / "run"), "--model", "mixnet", "--set", bad])
    err = capsys.readouterr().err
    assert code == 2 and "data.sources[0].weight must be a positive number" in err and len(err.strip().splitlines()) == 1


def test_set_parses_sources_as_toml_and_a_missing_root_names_its_key(roots, tmp_path):
    cfg = apply_overrides(cfg_with(), [f'data.sources=[{{root="{roots[0]}", weight=0.7}}, {{root="{tmp_path / "nope"}", weight=0.3}}]'])
    assert cfg["data"]["sources"][0] == {"root": str(roots[0]), "weight": 0.7}
    (tmp_path / "resolved.toml").write_text(dump_toml(cfg), encoding="utf-8")
    assert load_recipe(tmp_path / "resolved.toml")[0] == cfg  # the run's config.toml reads back
    with pytest.raises(CitysegError, match=r"data.sources\[1\].root = .*nope.*: no such folder"):
        train(cfg, roots[0], tmp_path / "run", progress=False)


# ---- training end to end --------------------------------------------------------------------------
def test_single_source_run_is_bitwise_the_plain_run(roots, tmp_path):
    """``data.sources`` naming only ``--data`` trains exactly as no ``data.sources``: same order, same augmentation."""
    over = {"train.epochs": 1, "augment.enabled": True}
    train(cfg_with(**over), roots[0], tmp_path / "plain", progress=False)
    train(cfg_with(**over, **{"data.sources": sources((roots[0], 0.5))}), roots[0], tmp_path / "one", progress=False)
    a, b = (load_checkpoint(tmp_path / n / "last.pt")["model"] for n in ("plain", "one"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_source_classmix_run_interrupted_and_resumed_equals_uninterrupted(roots, tmp_path):
    over = {"augment.enabled": True, "augment.classmix": 0.5, "data.sources": sources((roots[0], 0.7), (roots[1], 0.3))}
    cfg = cfg_with(**over)  # 8 draws per epoch, batch 4 -> 2 steps per epoch
    full = train(cfg, roots[0], tmp_path / "full", progress=False)
    assert (full["epoch"], full["steps_done"]) == (2, 4)
    MixNet.calls, MixNet.hooks = 0, {3: "sigint"}  # Ctrl-C in epoch 2, step 1 of 2
    part = train(cfg, roots[0], tmp_path / "resumed", progress=False)
    assert part["stopped"] == "interrupted" and (part["epoch"], part["step"]) == (1, 1)
    MixNet.hooks = {}
    train(cfg, roots[0], tmp_path / "resumed", resume=True, progress=False)
    a, b = (load_checkpoint(tmp_path / n / "last.pt") for n in ("full", "resumed"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert b["config"]["data"]["sources"] == over["data.sources"]


def test_init_from_copies_the_weights_and_refuses_another_shape(roots, tmp_path):
    train(cfg_with(**{"train.epochs": 1}), roots[0], tmp_path / "pre", progress=False)
    ckpt = tmp_path / "pre" / "last.pt"
    run = setup(cfg_with(**{"train.init_from": str(ckpt)}), roots[0], tmp_path / "fine", D.init_distributed_mode(), print)
    want = load_checkpoint(ckpt)["model"]
    assert all(torch.equal(v, want[k]) for k, v in run.ctx.net.state_dict().items())
    with pytest.raises(CitysegError, match=r"train.init_from = .*: shape mismatch at 'body.0.weight'"):
        init_from_checkpoint(MixNet(width=4), str(ckpt))
    with pytest.raises(CitysegError, match="checkpoint not found"):
        init_from_checkpoint(MixNet(), str(tmp_path / "none.pt"))
