"""CityscapesDataset, preprocessing, paired augmentations and `cityseg check` against outside oracles."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import references
from cityseg import io, labels
from cityseg.cli import main
from cityseg.data import layout
from cityseg.data import transforms as T
from cityseg.data.check import check_dataset
from cityseg.data.dataset import CityscapesDataset
from cityseg.data.readers import read_frame
from conftest import write_tiny_dataset

SIZE = (12, 20)


# ---- the dataset contract ---------------------------------------------------------------------------
@pytest.mark.parametrize("cache", [True, False])
def test_dataset_contract(tiny_root, cache):
    ds = CityscapesDataset(tiny_root, "train", size=SIZE, cache=cache)
    assert len(ds) == 3 and ds.num_classes == 34 and ds.class_names == labels.LABELID_NAMES
    assert ds.label_mode == "labelIds" and ds.size == SIZE and ds.cache is cache
    for i, s in enumerate(ds.samples):  # paired by stem
        assert s.image.name == f"{s.stem}_leftImg8bit.png" and s.label.name == f"{s.stem}_gtFine_labelIds.png"
        x, y = ds[i]
        assert x.dtype == torch.float32 and x.shape == (3, *SIZE) and x.min() >= 0 and x.max() <= 1
        assert y.dtype == torch.int64 and y.shape == SIZE and y.min() >= 0 and y.max() <= 33
        image, label = references.frame(s.image, s.label, SIZE, "area")  # PIL and NumPy, not cityseg's resize
        exp_x = torch.from_numpy(image).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(x, exp_x, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(y.numpy(), label)
    assert ds[-1][1].shape == SIZE
    with pytest.raises(IndexError):
        ds[3]


def test_cached_equals_uncached(tiny_root):
    a = CityscapesDataset(tiny_root, "val", size=SIZE, label_mode="trainIds", interpolation="bilinear")
    b = CityscapesDataset(tiny_root, "val", size=SIZE, label_mode="trainIds", interpolation="bilinear", cache=False)
    for i in range(len(a)):
        torch.testing.assert_close(a[i][0], b[i][0], rtol=0, atol=0)
        assert torch.equal(a[i][1], b[i][1])


def test_train_ids_match_cityscapesscripts(tiny_root):
    from cityscapesscripts.helpers.labels import id2label

    ids = CityscapesDataset(tiny_root, "train", size=None, label_mode="labelIds")
    tr = CityscapesDataset(tiny_root, "train", size=None, label_mode="trainIds")
    assert tr.num_classes == 19 and tr.class_names == labels.TRAINID_NAMES
    y_ids, y_tr = ids[0][1].numpy(), tr[0][1].numpy()
    assert y_tr.shape == (24, 40)  # size=None: full resolution
    oracle = np.vectorize(lambda i: id2label[int(i)].trainId if id2label[int(i)].trainId not in (-1, 255) else 255)
    np.testing.assert_array_equal(y_tr, oracle(y_ids))
    assert set(np.unique(y_tr)) <= set(range(19)) | {255}


def test_resize_matches_torch_oracle(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    label = rng.integers(0, 34, (48, 80), dtype=np.uint8)
    t = torch.from_numpy(image).permute(2, 0, 1)[None].double()
    area = F.interpolate(t, size=SIZE, mode="area")[0].permute(1, 2, 0).numpy()
    bil = F.interpolate(t, size=SIZE, mode="bilinear", align_corners=False, antialias=False)[0].permute(1, 2, 0).numpy()
    assert np.abs(T.resize_image(image, SIZE, "area") - area).max() <= 0.5 + 1e-6  # box mean, rounded
    assert np.abs(T.resize_image(image, SIZE, "bilinear") - bil).max() <= 0.5 + 1e-6  # tf.image.resize, no antialias
    # the two differ: bilinear does not average the whole 4x4 block
    assert np.abs(T.resize_image(image, SIZE, "area").astype(int) - T.resize_image(image, SIZE, "bilinear")).max() > 20
    np.testing.assert_array_equal(T.resize_label(label, SIZE), label[::4, ::4])  # nearest never invents values
    assert T.resize_image(image, None) is image


def test_normalisation_and_preprocess_reuse(tiny_root):
    mean, std = T.IMAGENET_MEAN, T.IMAGENET_STD
    ds = CityscapesDataset(tiny_root, "train", size=SIZE, mean=mean, std=std)
    plain = CityscapesDataset(tiny_root, "train", size=SIZE)
    x, _ = ds[1]
    exp = (plain[1][0] - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(x, exp)
    # inference preprocesses a full-resolution image exactly like the dataset
    image = io.read_image(ds.samples[1].image)
    torch.testing.assert_close(T.preprocess(image, SIZE, "area", mean, std), x, rtol=0, atol=0)
    with pytest.raises(Exception, match="std must be positive"):
        CityscapesDataset(tiny_root, "train", size=SIZE, std=(0, 1, 1))


def test_read_frame_full_resolution(tiny_root):
    s = layout.find_samples(tiny_root, "val")[0]
    image, label, instance = read_frame(s)
    assert image.dtype == np.uint8 and image.shape == (24, 40, 3)
    np.testing.assert_array_equal(label, io.read_label(s.label))
    np.testing.assert_array_equal(instance, io.read_instance(s.instance))
    assert instance.max() == 26001 or 26 not in label  # instance ids are labelId*1000+k
    np.testing.assert_array_equal(io.read_image(s.color), labels.colorize(label))


def test_test_split_without_labels(tmp_path):
    root = write_tiny_dataset(tmp_path / "r", {"test": 2})
    ds = CityscapesDataset(root, "test", size=SIZE, label_mode="trainIds")
    assert ds.cache is False and ds.samples[0].label is None
    assert torch.all(ds[0][1] == 255)


def test_gtcoarse_and_train_extra(tmp_path):
    root = write_tiny_dataset(tmp_path / "r", {"train_extra": 2, "val": 1}, annotation="gtCoarse")
    ds = CityscapesDataset(root, "train_extra", size=SIZE, annotation="gtCoarse")
    assert len(ds) == 2 and ds.samples[0].label.name.endswith("_gtCoarse_labelIds.png")
    assert ds[1][0].shape == (3, *SIZE)
    assert layout.available_splits(root, "gtCoarse") == ["val", "train_extra"]
    with pytest.raises(Exception, match="annotations for split 'train_extra' are missing"):
        CityscapesDataset(root, "train_extra")  # gtFine has no train_extra
    stats = check_dataset(root, annotation="gtCoarse")
    assert stats.splits["train_extra"].pairs == 2


# ---- DataLoader workers and DistributedSampler --------------------------------------------------------
def test_pickle_workers_and_distributed_sampler(tiny_root):
    from torch.utils.data import DataLoader, DistributedSampler

    ds = CityscapesDataset(tiny_root, "train", size=SIZE, label_mode="trainIds")
    ds[0]  # opens the memmaps
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000  # paths, not arrays
    clone = pickle.loads(blob)
    assert torch.equal(clone[2][1], ds[2][1])
    loader = DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    xs, ys = zip(*loader)
    assert torch.equal(torch.cat(ys), torch.stack([ds[i][1] for i in range(3)]))
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(1)
        seen += list(sampler)
    assert set(seen) == {0, 1, 2} and len(seen) == 4  # every sample, padded to equal shards


# ---- paired augmentations ------------------------------------------------------------------------------
def _pair(h=48, w=80, seed=0, block=8):
    rng = np.random.default_rng(seed)
    lab = np.kron(rng.integers(0, 34, (h // block, w // block), dtype=np.uint8), np.ones((block, block), np.uint8))
    return labels.colorize(lab).copy(), lab  # the image encodes its label: alignment is checkable


def _aligned_fraction(image, label, ignore=255):
    valid = label != ignore
    return (np.all(labels.colorize(label) == image, axis=-1) & valid).sum() / max(1, valid.sum())


def test_random_scale_crop():
    image, label = _pair()
    t = T.Compose([T.RandomScaleCrop(scale=(0.5, 2.0), crop=(32, 48), ignore_index=255), T.RandomHorizontalFlip()])
    aligned, misaligned = [], []
    for seed in range(20):
        a = t(image, label, rng=np.random.default_rng(seed))
        b = t(image, label, rng=np.random.default_rng(seed))
        assert a[0].shape == (32, 48, 3) and a[1].shape == (32, 48) and a[0].dtype == np.uint8
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])  # repeatable from the generator
        assert set(np.unique(a[1])) <= set(np.unique(label)) | {255}  # nearest: no invented ids
        aligned.append(_aligned_fraction(*a))  # image and label moved together (bilinear blurs block edges)
        misaligned.append(_aligned_fraction(a[0], a[1][:, ::-1]))
    assert min(aligned) > 0.55 and np.mean(aligned) > np.mean(misaligned) + 0.4
    # scale 1: an exact crop of both
    ci, cl = T.RandomScaleCrop(scale=(1, 1), crop=(32, 48))(image, label, rng=np.random.default_rng(3))
    assert _aligned_fraction(ci, cl) == 1.0
    small, slab = T.RandomScaleCrop(scale=(0.5, 0.5), crop=(32, 48))(image, label, rng=np.random.default_rng(0))
    assert np.all(slab[24:] == 255) and np.all(slab[:, 40:] == 255) and np.all(slab[:24, :40] != 255)
    assert np.all(small[24:] == 0) and np.all(small[:, 40:] == 0)  # padded bottom/right: image 0, label ignore
    _, lab0 = T.RandomScaleCrop(scale=(0.5, 0.5), crop=(32, 48), ignore_index=0)(image, label)
    assert np.all(lab0[24:] == 0)  # labelIds: the caller's fill value
    with pytest.raises(Exception, match="scale range"):
        T.RandomScaleCrop(scale=(0, 1))


def test_horizontal_flip():
    image, label = _pair()
    fi, fl = T.RandomHorizontalFlip(1.0)(image, label)
    np.testing.assert_array_equal(fi, image[:, ::-1])
    np.testing.assert_array_equal(fl, label[:, ::-1])
    same = T.RandomHorizontalFlip(0.0)(image, label)
    assert same[0] is image and same[1] is label
    flips = [T.RandomHorizontalFlip(0.5)(image, label, rng=np.random.default_rng(s))[1][0, 0] != label[0, 0] for s in range(200)]
    assert 60 < sum(flips) < 140 or label[0, 0] == label[0, -1]


def test_photometric_jitter():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    label = rng.integers(0, 34, (16, 24), dtype=np.uint8)
    ident, lab = T.PhotometricJitter(0, 0, 0, 0)(image, label)
    np.testing.assert_array_equal(ident, image)
    assert lab is label
    out, _ = T.PhotometricJitter(0.4, 0, 0, 0)(image, label, rng=np.random.default_rng(7))
    f = np.random.default_rng(7)
    f.permutation(4)
    factor = f.uniform(0.6, 1.4)
    np.testing.assert_allclose(out, np.clip(image * factor, 0, 255), atol=1.0)
    gray = np.repeat(image[..., :1], 3, axis=-1)  # saturation and hue leave gray pixels gray
    g, _ = T.PhotometricJitter(0, 0, 0.5, 0.3)(gray, label, rng=np.random.default_rng(1))
    assert np.abs(g.astype(int) - gray).max() <= 2
    full = T.PhotometricJitter(0.3, 0.3, 0.3, 0.1)
    a = full(image, label, rng=np.random.default_rng(5))[0]
    assert np.array_equal(a, full(image, label, rng=np.random.default_rng(5))[0]) and not np.array_equal(a, image)


def test_dataset_seeded_augmentation(tiny_root):
    from torch.utils.data import DataLoader

    aug = T.train_transform(crop=(8, 16), ignore_index=255)
    ds = CityscapesDataset(tiny_root, "train", size=SIZE, label_mode="trainIds", transform=aug, seed=42)
    a = [ds[i] for i in range(3)]
    assert a[0][0].shape == (3, 8, 16) and a[0][1].shape == (8, 16)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(a, [ds[i] for i in range(3)]))  # repeatable
    with_workers = list(DataLoader(ds, batch_size=1, num_workers=2))  # independent of the worker that loads it
    assert all(torch.equal(x[1], y[1][0]) for x, y in zip(a, with_workers))
    ds.set_epoch(1)
    assert not all(torch.equal(x[0], ds[i][0]) for i, x in enumerate(a))  # a new epoch, new augmentation
    plain = CityscapesDataset(tiny_root, "train", size=SIZE, transform=lambda im, lb: (im[:, ::-1], lb[:, ::-1]), seed=1, cache=False)
    assert torch.equal(plain[0][1], CityscapesDataset(tiny_root, "train", size=SIZE)[0][1].flip(-1))


# ---- cityseg check ----------------------------------------------------------------------------------------
def test_check_counts_pixels(tiny_root, monkeypatch):
    import cityseg.data.check as check_mod

    stats = check_dataset(tiny_root)
    assert stats.ok and list(stats.splits) == ["train", "val"]
    assert stats.splits["train"].pairs == 3 and stats.splits["val"].pairs == 2
    assert stats.splits["train"].instances == 3 and stats.splits["train"].sizes == {"24x40": 3}
    for split in ("train", "val"):
        exp = sum(np.bincount(io.read_label(s.label).ravel(), minlength=34) for s in layout.find_samples(tiny_root, split))
        np.testing.assert_array_equal(stats.splits[split].pixels, exp)
        assert abs(stats.splits[split].shares().sum() - 1) < 1e-9
    monkeypatch.setattr(check_mod, "PARALLEL_MIN_FILES", 1)  # the 2-process path gives the same numbers
    par = check_dataset(tiny_root, workers=2)
    np.testing.assert_array_equal(par.splits["train"].pixels, stats.splits["train"].pixels)
    text = stats.format()
    assert re.search(r"^\s+7\s+road\s+\*\s+0\s", text, re.M) and re.search(r"^\s+0\s+unlabeled\s+-\s", text, re.M)


def test_check_instance_disagreement(tiny_root):
    s = layout.find_samples(tiny_root, "val")[1]
    inst = io.read_instance(s.instance).astype(np.uint16)
    inst[0, 0] = (int(io.read_label(s.label)[0, 0]) + 1) % 34
    io.write_png(s.instance, inst)
    stats = check_dataset(tiny_root, fail_fast=False)
    assert len(stats.problems) == 1 and str(s.instance) in stats.problems[0] and "disagree" in stats.problems[0]


def test_check_cli_on_synthcity(synth_small, capsys, tmp_path):
    rc = main(["check", "--data", str(synth_small), "--json", str(tmp_path / "s.json")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert re.search(r"train:\s+8 pairs", out) and re.search(r"val:\s+4 pairs", out)
    assert "evaluated classes present" in out
    import json

    data = json.loads((tmp_path / "s.json").read_text())
    assert data["splits"]["train"]["pairs"] == 8 and data["splits"]["val"]["pairs"] == 4


def test_photometric_jitter_matches_the_plain_formulas():
    """The in-place implementation against the textbook one (torchvision semantics, one pass per step)."""

    def gray(x):
        return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]

    def reference(image, rng, b=0.3, c=0.3, s=0.3):
        x = image.astype(np.float64)
        for op in rng.permutation(4):
            if op == 0:
                x = x * rng.uniform(1 - b, 1 + b)
            elif op == 1:
                f = rng.uniform(1 - c, 1 + c)
                m = gray(np.clip(x, 0, 255)).mean()
                x = m + f * (x - m)
            elif op == 2:
                f = rng.uniform(1 - s, 1 + s)
                g = gray(np.clip(x, 0, 255))[..., None]
                x = g + f * (x - g)
        return np.clip(x + 0.5, 0, 255).astype(np.uint8)

    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    jitter = T.PhotometricJitter(0.3, 0.3, 0.3, 0.0)
    for seed in range(10):
        got = jitter(image, None, rng=np.random.default_rng(seed))[0]
        want = reference(image, np.random.default_rng(seed))
        assert np.abs(got.astype(int) - want).max() <= 1 and (got != want).mean() < 0.01
