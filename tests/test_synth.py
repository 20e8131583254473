"""SynthCity: layout, consistency of the five files, determinism, class coverage, and that colours alone
do not give the labels away. Outside oracle: cityscapesscripts (label table, polygon rasteriser)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from cityseg import labels
from cityseg.cli import main
from cityseg.data import layout, synth
from cityseg.data.synth import write as synth_write
from cityseg.errors import CitysegError
from cityseg.io import read_image, read_instance, read_label
from conftest import require_oracle

KINDS = ("labelIds", "instanceIds", "color", "labelTrainIds")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _frames(root, split):
    return layout.find_samples(root, split)


# ---- layout ----------------------------------------------------------------------------------
def test_layout_names_and_dtypes(synth_small):
    counts = {"train": 8, "val": 4, "test": 2}
    cities = {}
    for split, n in counts.items():
        samples = _frames(synth_small, split)
        assert len(samples) == n
        cities[split] = {s.city for s in samples}
        for s in samples:
            assert layout.STEM_RE.fullmatch(s.stem)
            assert s.image == layout.image_path(synth_small, split, s.stem)
            assert s.image.parent.name == s.city and s.image.parent.parent.name == split
            with Image.open(s.image) as im:
                assert (im.mode, im.size) == ("RGB", (512, 256))
            for kind in KINDS:
                p = layout.annotation_path(synth_small, split, s.stem, kind)
                with Image.open(p) as im:
                    mode = im.mode
                    assert im.size == (512, 256)
                assert mode == {"labelIds": "L", "labelTrainIds": "L", "color": "RGB"}.get(kind, mode)
            assert read_instance(layout.annotation_path(synth_small, split, s.stem, "instanceIds")).max() > 255  # 16-bit
            poly = json.loads(layout.annotation_path(synth_small, split, s.stem, "polygons").read_text())
            assert (poly["imgHeight"], poly["imgWidth"]) == (256, 512)
            assert poly["objects"] and all(set(o) == {"label", "polygon"} for o in poly["objects"])
    # every split has its own cities, like real Cityscapes
    assert not cities["train"] & cities["val"] and not cities["val"] & cities["test"] and not cities["train"] & cities["test"]
    info = json.loads((synth_small / synth.MARKER).read_text())
    assert info["complete"] and info["counts"] == counts and info["size"] == [256, 512]
    assert not list(synth_small.rglob("*.tmp"))


# ---- the five files agree --------------------------------------------------------------------
def test_annotation_files_agree(synth_small):
    for split in ("train", "val"):
        for s in _frames(synth_small, split):
            lab = read_label(s.label, max_value=33)
            inst = read_instance(s.instance)
            train = read_label(layout.annotation_path(synth_small, split, s.stem, "labelTrainIds"))
            color = read_image(s.color)
            np.testing.assert_array_equal(train, labels.LABELID_TO_TRAINID[lab])
            np.testing.assert_array_equal(color, labels.LABELID_PALETTE[lab])
            # instanceIds: labelId*1000+k for classes with instances, the labelId elsewhere
            small = inst < 1000
            np.testing.assert_array_equal(inst[small], lab[small])
            np.testing.assert_array_equal(inst[~small] // 1000, lab[~small])
            has_inst = np.array([labels.ID_TO_LABEL[i].hasInstances for i in range(34)])
            assert has_inst[lab[~small]].all()
            assert not has_inst[lab[small]].any(), "an instance-class pixel without an instance id"
            # the polygon file redraws the labelIds exactly (same polygons, same order)
            poly = json.loads(layout.annotation_path(synth_small, split, s.stem, "polygons").read_text())
            redraw = np.zeros_like(lab)
            for obj in poly["objects"]:
                cv2.fillPoly(redraw, [np.array(obj["polygon"], np.int32)], labels.NAME_TO_LABEL[obj["label"]].id)
            np.testing.assert_array_equal(redraw, lab)


def test_official_scripts_accept_every_value(synth_small):
    """cityscapesscripts' own table knows every value written, and its rasteriser redraws our polygons."""
    cs_labels = require_oracle("cityscapesscripts.helpers.labels")
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2labelImg import createLabelImage

    cs_colors = {tuple(lab.color) for lab in cs_labels.labels}
    cs_train = {lab.trainId for lab in cs_labels.labels if 0 <= lab.trainId < 255} | {255}
    for split in ("train", "val", "test"):
        for s in _frames(synth_small, split):
            lab = read_label(s.label)
            for v in np.unique(lab):
                assert int(v) in cs_labels.id2label
            for v in np.unique(read_instance(s.instance)):
                v = int(v)
                if v >= 1000:
                    assert cs_labels.id2label[v // 1000].hasInstances
                else:
                    assert v in cs_labels.id2label and not cs_labels.id2label[v].hasInstances
            train = read_label(layout.annotation_path(synth_small, split, s.stem, "labelTrainIds"))
            assert {int(v) for v in np.unique(train)} <= cs_train
            color = read_image(s.color).reshape(-1, 3)
            assert {tuple(int(c) for c in v) for v in np.unique(color, axis=0)} <= cs_colors
            ann = Annotation()
            ann.fromJsonFile(str(layout.annotation_path(synth_small, split, s.stem, "polygons")))
            assert all(obj.label in cs_labels.name2label for obj in ann.objects)
            official = np.asarray(createLabelImage(ann, "ids"))
            assert official.shape == lab.shape
            # PIL and OpenCV rasterise polygon edges differently; the interiors must agree
            assert (official == lab).mean() > 0.97


# ---- determinism -----------------------------------------------------------------------------
def test_deterministic_per_seed_and_independent_of_workers(tmp_path):
    kw = dict(train=2, val=1, test=1, size=(64, 128))
    a, b, c, d = (tmp_path / n for n in "abcd")
    synth.generate(a, seed=3, **kw)
    synth.generate(b, seed=3, workers=2, **kw)
    synth.generate(c, seed=4, **kw)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert len(fa) == 4 * 6 + 1
    assert fa == fb
    assert fa.keys() == fc.keys()
    for name in fa:
        if name.endswith("_leftImg8bit.png") or name.endswith("_labelIds.png"):
            assert fa[name] != fc[name], name
    # per-frame RNG: a frame does not depend on how many frames are generated
    synth.generate(d, seed=3, train=1, val=0, test=0, size=(64, 128))
    stem = synth.frame_stem("train", 0, 1)
    np.testing.assert_array_equal(read_image(layout.image_path(d, "train", stem)), synth.render_frame(3, "train", 0, (64, 128))[0])


# ---- content ---------------------------------------------------------------------------------
def _classes_present(root, splits) -> set[int]:
    present = set()
    for split in splits:
        for s in _frames(root, split):
            ids, n = np.unique(read_label(s.label), return_counts=True)
            present |= {int(i) for i in ids}
    return present


def test_class_coverage_small(synth_small):
    present = _classes_present(synth_small, ("train", "val", "test"))
    evaluated = set(labels.EVAL_LABEL_IDS) & present
    assert len(evaluated) >= 15, sorted(labels.ID_TO_LABEL[i].name for i in set(labels.EVAL_LABEL_IDS) - present)
    # the void regions of real frames
    assert {labels.NAME_TO_LABEL["ego vehicle"].id, labels.NAME_TO_LABEL["rectification border"].id} <= present


def test_class_coverage_full_size(synth_full):
    """A handful of default-size (1024x2048) frames already shows at least 15 of the 19 classes."""
    for split in ("train", "val"):
        for s in _frames(synth_full, split):
            assert read_label(s.label).shape == (1024, 2048)
    present = _classes_present(synth_full, ("train", "val"))
    assert len(set(labels.EVAL_LABEL_IDS) & present) >= 15


@pytest.mark.slow
def test_class_coverage_all_19(tmp_path):
    synth.generate(tmp_path, train=80, val=0, test=0, size=(256, 512), seed=0, workers=2)
    assert set(labels.EVAL_LABEL_IDS) <= _classes_present(tmp_path, ("train",))


def _lookup_miou(root, kind="image", levels=32, seen_only=False) -> float:
    """Val mIoU (19 classes, official TP/(TP+FP+FN), ignored GT excluded) of a per-pixel colour lookup
    (RGB quantised to ``levels`` per channel, majority trainId per bin) fitted on the train split.
    ``seen_only``: average over the classes the train split contains (rare classes may miss a small one)."""
    q = 256 // levels

    def pixels(split):
        for s in _frames(root, split):
            rgb = read_image(s.image if kind == "image" else s.color).astype(np.int64) // q
            bins = (rgb[..., 0] * levels + rgb[..., 1]) * levels + rgb[..., 2]
            yield bins.ravel(), labels.LABELID_TO_TRAINID[read_label(s.label)].ravel().astype(np.int64)

    hist = np.zeros((levels**3, 19), np.int64)
    for bins, gt in pixels("train"):
        ok = gt != 255
        np.add.at(hist, (bins[ok], gt[ok]), 1)
    pred_of_bin = np.where(hist.sum(1) > 0, hist.argmax(1), 255)
    conf = np.zeros((19, 20), np.int64)  # column 19: no prediction (empty bin) = false negative
    for bins, gt in pixels("val"):
        ok = gt != 255
        pred = pred_of_bin[bins[ok]]
        np.add.at(conf, (gt[ok], np.where(pred == 255, 19, pred)), 1)
    tp = np.diag(conf[:, :19]).astype(float)
    fn = conf.sum(1) - tp
    fp = conf[:, :19].sum(0) - tp
    denom = tp + fp + fn
    keep = (denom > 0) & (hist.sum(0) > 0 if seen_only else True)
    return float(np.mean(tp[keep] / denom[keep]))


def test_colour_lookup_cannot_read_the_labels(synth_small):
    """Colours overlap across classes: a per-pixel colour lookup scores low (measured ~0.1 mIoU)."""
    miou = _lookup_miou(synth_small, "image")
    assert miou < 0.30, f"colour-lookup val mIoU {miou:.3f}: colours give the labels away"
    # the measurement itself works: on the colour-coded ground truth the same lookup is perfect
    assert _lookup_miou(synth_small, "color", seen_only=True) > 0.99


# ---- writing: CLI, refusals, no half-written frames -------------------------------------------
def test_cli_small(tmp_path, capsys):
    out = tmp_path / "s"
    rc = main(["synth", str(out), "--train", "3", "--val", "2", "--test", "0", "--size", "64x128", "--seed", "1", "--workers", "1"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["train", "val", "test"]
    assert "3 frames" in lines[0] and "2 frames" in lines[1]
    assert len(_frames(out, "train")) == 3 and len(_frames(out, "val")) == 2
    assert not (out / "leftImg8bit" / "test").exists()
    # a rerun into the same SynthCity folder replaces it: no stale frames survive
    assert main(["synth", str(out), "--train", "1", "--val", "1", "--test", "0", "--size", "64x128"]) == 0
    assert len(_frames(out, "train")) == 1 and len(_frames(out, "val")) == 1
    assert len(list((out / "gtFine").rglob("*"))) == 2 * 2 + 5 * 2  # split + city folders + 5 files per frame


def test_cli_refuses_bad_output(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert main(["synth", str(f), "--train", "1", "--val", "0", "--test", "0", "--size", "32x64"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(f) in err and "not a folder" in err
    assert f.read_text() == "x"
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    assert main(["synth", str(other), "--train", "1", "--size", "32x64"]) == 2
    assert str(other) in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["mine.txt"]
    with pytest.raises(SystemExit) as e:  # argparse's own error, one line, exit 2
        main(["synth", str(tmp_path / "n"), "--size", "12x"])
    assert e.value.code == 2 and "invalid size" in capsys.readouterr().err
    with pytest.raises(CitysegError, match="count"):
        synth.generate(tmp_path / "n", train=-1)
    with pytest.raises(CitysegError, match="size"):
        synth.generate(tmp_path / "n", size=(8, 8))


def test_interrupted_frame_leaves_no_files(tmp_path, monkeypatch):
    real = synth_write.write_png
    calls = {"n": 0}

    def flaky(path, array):
        calls["n"] += 1
        if calls["n"] == 5 + 3:  # the second frame fails at its third PNG (5 PNGs per frame)
            raise OSError(28, "No space left on device", str(path))
        real(path, array)

    monkeypatch.setattr(synth_write, "write_png", flaky)
    with pytest.raises(OSError):
        synth.generate(tmp_path, train=3, val=0, test=0, size=(32, 64))
    stems = {layout.parse_stem(p.name) for p in tmp_path.rglob("*.*") if layout.parse_stem(p.name)}
    assert stems == {synth.frame_stem("train", 0, 3)}  # frame 0 complete, frame 1 removed entirely
    assert len([p for p in tmp_path.rglob("*.*") if layout.parse_stem(p.name)]) == 6
    assert not list(tmp_path.rglob("*.tmp"))
    assert json.loads((tmp_path / synth.MARKER).read_text())["complete"] is False


# ---- SynthCity 2: camera, colours, class shares, object kinds, randomisation ------------------------
def test_camera_is_the_cityscapes_camera():
    """Horizon and object sizes follow from the real intrinsics, height and pitch."""
    from cityseg.data.synth.camera import Camera

    for i in range(20):
        cam = Camera(np.random.default_rng(i), 1024, 2048)
        assert 1024 * 0.33 < cam.yh < 1024 * 0.5  # cy - fy * tan(pitch) ~ 427
        top, foot = cam.project([[0.0, 1.75, 10.0], [0.0, 0.0, 10.0]])
        assert 0.9 < (foot[1] - top[1]) / (1.75 * 2265.3 / 10) < 1.1  # a 1.75 m person 10 m ahead
        half = Camera(np.random.default_rng(i), 256, 512)
        assert abs(half.yh * 4 - cam.yh) < 1e-6


def _render(n, size=(256, 512), randomize=False):
    return [synth.render_frame(0, "train", i, size, randomize) for i in range(n)]


def test_colour_statistics_near_real_frames():
    from cityseg.data.check import CITYSCAPES_RGB

    images = np.stack([f[0] for f in _render(12)]).reshape(-1, 3) / 255.0
    mean, std = images.mean(0), images.std(0)
    assert np.abs(mean - CITYSCAPES_RGB[0]).max() < 0.04, mean
    assert np.abs(std - CITYSCAPES_RGB[1]).max() < 0.04, std
    assert mean[1] > mean[0] and mean[1] > mean[2]  # the green tint of the real camera


def test_every_object_kind_is_drawn_with_its_label():
    frames = _render(30)
    present = set()
    for _, lab, _, _ in frames:
        present |= {labels.ID_TO_LABEL[int(i)].name for i in np.unique(lab)}
    kinds = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation", "terrain", "sky")
    kinds += ("person", "rider", "car", "bicycle", "motorcycle", "ego vehicle", "rectification border", "out of roi", "static", "dynamic")
    assert set(kinds) <= present, sorted(set(kinds) - present)
    shares = np.bincount(np.concatenate([f[1].ravel() for f in frames]), minlength=34) / sum(f[1].size for f in frames)
    name = labels.NAME_TO_LABEL
    assert 0.22 < shares[name["road"].id] < 0.45 and 0.25 < shares[name["building"].id] + shares[name["vegetation"].id] < 0.5
    assert shares[name["car"].id] < 0.14 and shares[[name[k].id for k in ("truck", "bus", "train")]].sum() < 0.05


def test_randomize_is_deterministic_and_different(tmp_path, capsys):
    plain, rand = _render(2, (64, 128)), _render(2, (64, 128), randomize=True)
    again = _render(2, (64, 128), randomize=True)
    assert not np.array_equal(plain[0][0], rand[0][0])
    np.testing.assert_array_equal(rand[1][0], again[1][0])
    out = tmp_path / "r"
    assert main(["synth", str(out), "--train", "1", "--val", "0", "--test", "0", "--size", "64x128", "--randomize"]) == 0
    info = json.loads((out / synth.MARKER).read_text())
    assert info["randomize"] is True and info["version"] == synth.VERSION
    capsys.readouterr()
    assert main(["check", "--data", str(out)]) == 0
    text = capsys.readouterr().out
    assert "RGB mean" in text and "Cityscapes" in text and re.search(r"road\s+\*\s+0\s+[\d.]+%\s+32\.65%", text)
