"""`cityseg evaluate` and cityseg.evaluation: exactness against cityscapesScripts at full size, bad input."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cityseg import labels
from cityseg.cli import main
from cityseg.data import layout
from cityseg.eval.evaluate import evaluate_pred_dir, score_pred_dir
from cityseg.io import read_instance, read_label, write_png

ROAD, SIDEWALK, BUILDING, CAR, TRUCK, PERSON, VEGETATION = 7, 8, 11, 26, 27, 24, 21


def same(a, b, tol: float = 1e-9) -> bool:
    a = math.nan if a is None else float(a)
    b = math.nan if b is None else float(b)
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


# ---- prediction sets built from the ground truth -----------------------------------------------
def _gt_copy(gt, inst, rng):
    return gt.copy()


def _swaps(gt, inst, rng):
    pd = gt.copy()
    pd[gt == CAR], pd[gt == TRUCK] = TRUCK, CAR
    pd[gt == ROAD] = SIDEWALK
    pd[gt == PERSON] = 25  # person -> rider
    return pd


def _noise(gt, inst, rng):
    return rng.integers(0, 34, gt.shape).astype(np.uint8)


def _void_on_valid(gt, inst, rng):
    pd = gt.copy()
    valid = labels.LABELID_TO_TRAINID[gt] != 255
    hit = valid & (rng.random(gt.shape) < 0.3)
    pd[hit] = rng.choice([0, 4, 9, 29, 30], hit.sum())  # void / ignored ids, caravan and trailer included
    return pd


def _missing_classes(gt, inst, rng):
    pd = gt.copy()
    pd[np.isin(gt, [CAR, BUILDING, 17])] = VEGETATION  # car, building, pole never predicted
    return pd


def _mix(gt, inst, rng):
    pd = _swaps(gt, inst, rng)
    noisy = rng.random(gt.shape) < 0.2
    pd[noisy] = rng.integers(0, 34, noisy.sum())
    pd[inst % 1000 == 1] = 0  # every second instance lost entirely
    pd[:, : gt.shape[1] // 8] = 33  # a band of bicycle false positives
    return pd


PRED_SETS = {"gt_copy": _gt_copy, "swaps": _swaps, "noise": _noise, "void_on_valid": _void_on_valid, "missing_classes": _missing_classes, "mix": _mix}


def write_predictions(root: Path, out: Path, make, seed: int = 0, subfolders: bool = True) -> Path:
    """One labelId PNG per val frame, named like a submission (``<stem>_pred.png``), in city subfolders."""
    rng = np.random.default_rng(seed)
    for s in layout.find_samples(root, "val"):
        gt = read_label(s.label)
        inst = read_instance(s.instance)
        folder = out / s.city if subfolders else out
        write_png(folder / f"{s.stem}_pred.png", make(gt, inst, rng))
    return out


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """cityscapesScripts' evaluator, called in-process with the arguments its CLI would use; returns its
    result dict (per-image pixel counts included, see ``official_pixel_accuracy``)."""
    tmp = tmp_path_factory.mktemp("oracle")
    saved = os.environ.get("CITYSCAPES_DATASET")
    os.environ["CITYSCAPES_DATASET"] = str(tmp)  # read once, when the module is imported
    try:
        from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev
    finally:  # never leak into other tests
        if saved is None:
            del os.environ["CITYSCAPES_DATASET"]
        else:
            os.environ["CITYSCAPES_DATASET"] = saved

    ev.args.evalInstLevelScore = True
    ev.args.evalPixelAccuracy = True
    ev.args.quiet = True
    ev.args.colorized = False
    ev.args.bold = ev.args.nocol = ""
    ev.args.JSONOutput = False  # its JSON writer cannot serialise the per-image counts (NumPy ints); the returned dict has it all
    added = not hasattr(np, "in1d")
    if added:  # NumPy 2.4 removed np.in1d, which the oracle (2.3.0) still calls; same semantics
        np.in1d = lambda a, b, invert=False: np.isin(np.asarray(a).ravel(), b, invert=invert)

    def run(root: Path, pred_dir: Path) -> dict:
        ev.args.predictionPath = str(pred_dir)
        ev.args.predictionWalk = None  # the module caches its walk of the prediction folder
        gts = sorted(str(s.label) for s in layout.find_samples(root, "val"))
        preds = [ev.getPrediction(ev.args, g) for g in gts]
        return ev.evaluateImgLists(preds, gts, ev.args)

    yield run
    if added:
        del np.in1d


def official_pixel_accuracy(ref: dict) -> tuple[float, float]:
    """(pixel accuracy over evaluated pixels, over all pixels) from the official script's own counts.

    With ``evalPixelAccuracy`` it stores two counts per image whose names say the opposite of what they
    hold (its mask is built with ``invert=True``): "nbNotIgnoredPixels" counts the pixels whose ground truth
    is ignored, "nbCorrectPixels" the wrong predictions on those. The evaluated pixels are the rest, and
    their correct predictions are the diagonal of its confusion matrix over the evaluated labelIds.
    """
    from cityscapesscripts.helpers.labels import labels as cs_labels

    conf = np.array(ref["confMatrix"], dtype=np.int64)
    evaluated = [lab.id for lab in cs_labels if lab.id >= 0 and not lab.ignoreInEval]
    total = int(conf.sum())
    ignored = sum(int(v["nbNotIgnoredPixels"]) for v in ref["perImageScores"].values())
    wrong_on_ignored = sum(int(v["nbCorrectPixels"]) for v in ref["perImageScores"].values())
    assert ignored == total - int(conf[evaluated].sum()), "the official per-image counts changed meaning"
    n_eval = total - ignored
    correct_eval = int(conf[evaluated, evaluated].sum())
    return correct_eval / n_eval, (total - (n_eval - correct_eval) - wrong_on_ignored) / total


def seed_reference(pairs: list[tuple[Path, Path]]) -> tuple[float, float]:
    """The seed's mIoU over the 34 labelIds and pixel accuracy over all pixels, from the PNGs (the official
    script has no such numbers): per id TP = pixels where both maps hold it, union = GT count + prediction
    count - TP; ids with an empty union are left out of the mean."""
    from PIL import Image

    tp, n_gt, n_pred = np.zeros(34), np.zeros(34), np.zeros(34)
    for gt_path, pred_path in pairs:
        gt, pred = (np.asarray(Image.open(p)).ravel() for p in (gt_path, pred_path))
        tp += np.bincount(gt[gt == pred], minlength=34)
        n_gt += np.bincount(gt, minlength=34)
        n_pred += np.bincount(pred, minlength=34)
    union = n_gt + n_pred - tp
    return float(np.mean(tp[union > 0] / union[union > 0])), float(tp.sum() / n_gt.sum())


def assert_equal_to_oracle(ours, ref):
    s = ours.scores()
    np.testing.assert_array_equal(ours.mat, np.array(ref["confMatrix"], dtype=np.int64))
    for name in labels.TRAINID_NAMES:
        assert same(s["class_iou"][name], ref["classScores"][name]), name
        assert same(s["class_iiou"][name], ref["classInstScores"][name]), name
    for cat in labels.CATEGORY_NAMES:
        assert same(s["category_iou"][cat], ref["categoryScores"][cat]), cat
        assert same(s["category_iiou"][cat], ref["categoryInstScores"][cat]), cat
    assert same(s["mIoU"], ref["averageScoreClasses"])
    assert same(s["iIoU"], ref["averageScoreInstClasses"])
    assert same(s["mIoU_categories"], ref["averageScoreCategories"])
    assert same(s["iIoU_categories"], ref["averageScoreInstCategories"])


def _check_set(name, make, synth_full, tmp_path, oracle):
    pred_dir = write_predictions(synth_full, tmp_path / name, make)
    ours = score_pred_dir(synth_full, "val", pred_dir)
    ref = oracle(synth_full, pred_dir)
    assert ours.n_images == 3
    assert_equal_to_oracle(ours, ref)
    scores = ours.scores()
    pixel_acc, pixel_acc_34 = official_pixel_accuracy(ref)
    assert same(scores["pixel_acc"], pixel_acc) and same(scores["pixel_acc_34"], pixel_acc_34)
    pairs = [(frame.label, next(pred_dir.rglob(f"{frame.stem}_pred.png"))) for frame in layout.find_samples(synth_full, "val")]
    miou_34, acc_34 = seed_reference(pairs)
    assert same(scores["mIoU_34"], miou_34) and same(scores["pixel_acc_34"], acc_34)
    return ours


@pytest.mark.parametrize("name", list(PRED_SETS))
def test_full_size_scores_equal_official_script(name, synth_full, tmp_path, oracle):
    ours = _check_set(name, PRED_SETS[name], synth_full, tmp_path, oracle)
    s = ours.scores()
    if name == "gt_copy":
        assert s["mIoU"] == 1.0 and s["iIoU"] == 1.0 and s["pixel_acc"] == 1.0 and s["pixel_acc_34"] == 1.0
    else:  # the sets must exercise non-trivial scores, or the comparison proves little
        assert 0 < s["mIoU"] < 1 and 0 <= s["iIoU"] < 1
    if name == "missing_classes":
        assert s["class_iou"]["car"] == 0.0 and s["class_iiou"]["car"] == 0.0


# ---- the CLI ------------------------------------------------------------------------------------
JSON_KEYS = ["mIoU", "iIoU", "mIoU_categories", "iIoU_categories", "pixel_acc", "mIoU_34", "pixel_acc_34", "per_class", "n_images"]


@pytest.fixture(scope="module")
def small_preds(synth_small, tmp_path_factory):
    """Predictions for synth_small's val split: the GT with car/truck swapped (flat, one folder)."""
    return write_predictions(synth_small, tmp_path_factory.mktemp("preds"), _swaps, subfolders=False)


def test_cli_pred_dir_writes_json_table_and_confusion(synth_small, small_preds, tmp_path, capsys):
    out = tmp_path / "res" / "scores.json"
    rc = main(["evaluate", "--data", str(synth_small), "--split", "val", "--pred-dir", str(small_preds), "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())  # strict: NaN must have become null
    assert list(res) == JSON_KEYS
    assert res == json.loads(json.dumps(evaluate_pred_dir(synth_small, "val", small_preds)))
    assert res["n_images"] == 4 and 0 <= res["mIoU"] <= 1
    assert set(res["per_class"]) == set(labels.TRAINID_NAMES)
    assert res["per_class"]["car"]["iou"] == 0.0 and res["per_class"]["road"]["iiou"] is None
    assert (out.parent / "confusion.png").stat().st_size > 0
    text = capsys.readouterr().out
    assert "mIoU" in text and "iIoU" in text and "34" in text and "car" in text


def test_cli_env_results_folder_is_default_pred_dir(synth_small, small_preds, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CITYSCAPES_RESULTS", str(small_preds))
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--data", str(synth_small), "--split", "val", "--json", "r.json"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["n_images"] == 4


def test_pred_dir_scoring_never_imports_torch(synth_small, small_preds, tmp_path):
    """Scoring PNGs needs NumPy and a PNG decoder only: importing torch would cost seconds of start-up per
    run (the `evaluate --pred-dir` speed target is judged against the official script, which has none)."""
    code = (
        "import sys\n"
        "from cityseg.cli import main\n"
        f"rc = main(['evaluate', '--data', {str(synth_small)!r}, '--split', 'val', '--pred-dir', {str(small_preds)!r},"
        f" '--json', {str(tmp_path / 'r.json')!r}, '--no-confusion'])\n"
        "assert rc == 0, rc\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not loaded, loaded[:5]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "r.json").read_text())["n_images"] == 4


def _broken_pred_dir(synth_small, small_preds, tmp_path, how):
    d = tmp_path / "bad"
    shutil.copytree(small_preds, d)
    victim = sorted(d.glob("*.png"))[1]
    arr = read_label(victim)
    if how == "wrong_size":
        write_png(victim, arr[::2, ::2])
    elif how == "multi_channel":
        write_png(victim, np.repeat(arr[:, :, None], 3, axis=2))
    elif how == "not_labelids":
        arr = arr.copy()
        arr[0, 0] = 255
        write_png(victim, arr)
    elif how == "missing":
        victim.unlink()
    elif how == "duplicate":
        shutil.copy(victim, d / victim.name.replace("_pred.png", "_pred2.png"))
    return d, victim


@pytest.mark.parametrize(
    "how, expect",
    [
        ("wrong_size", "full size"),
        ("multi_channel", "3 channels"),
        ("not_labelids", "not a labelId"),
        ("missing", "no prediction"),
        ("duplicate", "several predictions"),
    ],
)
def test_cli_bad_predictions_exit_2_with_one_line(how, expect, synth_small, small_preds, tmp_path, capsys):
    d, victim = _broken_pred_dir(synth_small, small_preds, tmp_path, how)
    out = tmp_path / "out" / "scores.json"
    rc = main(["evaluate", "--data", str(synth_small), "--split", "val", "--pred-dir", str(d), "--json", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and expect in err and "Traceback" not in err
    stem = layout.parse_stem(victim.name)
    assert stem in err  # names the prediction (or, when missing, the ground truth) file
    assert not out.exists() and not (out.parent / "confusion.png").exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no temporary leftovers either


def test_cli_needs_a_source(synth_small, monkeypatch, capsys):
    monkeypatch.delenv("CITYSCAPES_RESULTS", raising=False)
    assert main(["evaluate", "--data", str(synth_small)]) == 2
    assert "--checkpoint" in capsys.readouterr().err


# ---- a checkpoint -------------------------------------------------------------------------------
def _tiny_predictor():
    """A fixed random 1x1-conv trainId "model" at 64x128: the protocol, not the accuracy, is under test."""
    import torch

    from cityseg.infer.predictor import Predictor

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 19, 3, padding=1), torch.nn.Conv2d(19, 19, 1))
    return Predictor(model, label_mode="trainIds", input_size=(64, 128))


def test_checkpoint_protocol_equals_pred_dir_of_its_own_predictions(synth_small, tmp_path):
    """Default protocol = Predictor.predict (bilinear logits to full size, argmax, trainIds -> labelIds),
    scored at full size: identical to writing those predictions out and scoring the folder. At model
    size: the model-resolution argmax against nearest-downsampled labelIds and instanceIds."""
    import references
    from cityseg.eval.evaluate import score_checkpoint
    from cityseg.eval.metrics import CityscapesEvaluator
    from cityseg.io import read_image

    predictor = _tiny_predictor()
    full, small, _ = score_checkpoint(synth_small, "val", None, at_model_size=True, predictor=predictor, workers=2)
    expect_small = CityscapesEvaluator()
    for s in layout.find_samples(synth_small, "val"):
        image = read_image(s.image)
        pred = predictor.predict(image)
        assert pred.shape == image.shape[:2] and pred.max() <= 33
        write_png(tmp_path / "preds" / f"{s.stem}.png", pred)
        low = predictor.predict_model_size(image)
        assert low.shape == (64, 128)
        expect_small.add(low, references.resize_nearest(read_label(s.label), (64, 128)), references.resize_nearest(read_instance(s.instance), (64, 128)))
    assert full.results() == evaluate_pred_dir(synth_small, "val", tmp_path / "preds")
    np.testing.assert_array_equal(small.mat, expect_small.mat)
    assert small.results() == expect_small.results()
    assert full.n_images == small.n_images == 4


@pytest.fixture(scope="module")
def one_frame(tmp_path_factory):
    from cityseg.data.synth import generate

    root = tmp_path_factory.mktemp("one_frame")
    generate(root, train=0, val=1, test=0, size=(256, 512), seed=5)
    return root


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory):
    """A randomly initialised registered model, saved like training does."""
    import torch

    from cityseg.checkpoint import save_checkpoint
    from cityseg.models import build_model

    torch.manual_seed(0)
    model = build_model("residual_unet", num_classes=19, padding="same")
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "model_name": "residual_unet",
            "model_options": {"padding": "same"},
            "label_mode": "trainIds",
            "num_classes": 19,
            "input_size": [64, 128],
            "interpolation": "area",
            "mean": None,
            "std": None,
        },
    )
    return path


def test_cli_checkpoint_end_to_end(one_frame, real_checkpoint, tmp_path, capsys):
    out = tmp_path / "ckpt" / "scores.json"
    rc = main(["evaluate", "--data", str(one_frame), "--checkpoint", str(real_checkpoint), "--json", str(out), "--at-model-size", "--workers", "1"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert list(res) == JSON_KEYS and res["n_images"] == 1
    small = json.loads((out.parent / "scores_model_size.json").read_text())
    assert list(small) == JSON_KEYS and small["n_images"] == 1
    assert (out.parent / "confusion.png").stat().st_size > 0
    assert "at model size" in capsys.readouterr().out


def test_cli_options_reach_the_predictor(one_frame, monkeypatch, tmp_path):
    from cityseg.infer import predictor as inference

    seen = {}

    def fake(path, **kwargs):
        seen.update(kwargs, path=path)
        return _tiny_predictor()

    monkeypatch.setattr(inference.Predictor, "from_checkpoint", staticmethod(fake))
    rc = main(["evaluate", "--data", str(one_frame), "--checkpoint", "x.pt", "--flip", "--scales", "0.75,1,1.25", "--mode", "slide", "--out", str(tmp_path)])
    assert rc == 0
    assert seen == {"path": "x.pt", "device": "cpu", "flip": True, "scales": (0.75, 1.0, 1.25), "mode": "slide"}
    assert (tmp_path / "confusion.png").exists()


def test_cli_rejects_tta_without_checkpoint(synth_small, small_preds, capsys):
    rc = main(["evaluate", "--data", str(synth_small), "--pred-dir", str(small_preds), "--flip"])
    assert rc == 2 and "--checkpoint" in capsys.readouterr().err


def test_cli_bad_checkpoint_is_one_line(one_frame, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "o" / "s.json"
    rc = main(["evaluate", "--data", str(one_frame), "--checkpoint", str(bad), "--json", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "bad.pt" in err and not out.exists()


def test_table_and_confusion_heatmap_show_the_scores(synth_small, small_preds, tmp_path, capsys, monkeypatch):
    """The stdout table carries the JSON's numbers (percent, one decimal) for every class and category; the
    heatmap is the row-normalised 19x(19+void) matrix with class names on both axes."""
    import matplotlib.axes
    import matplotlib.figure

    from cityseg.eval.metrics import EVAL_IDS

    shown = {}
    real_imshow = matplotlib.axes.Axes.imshow

    def imshow(ax, a, **k):
        shown["matrix"] = np.asarray(a)
        return real_imshow(ax, a, **k)

    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", imshow)
    real_savefig = matplotlib.figure.Figure.savefig

    def savefig(fig, *a, **k):
        ax = fig.axes[0]
        shown["x"] = [t.get_text() for t in ax.get_xticklabels()]
        shown["y"] = [t.get_text() for t in ax.get_yticklabels()]
        return real_savefig(fig, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--data", str(synth_small), "--pred-dir", str(small_preds), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    text = capsys.readouterr().out

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"

    class_block = text.split("mean (19)")[0].splitlines()  # "sky" is a class and a category
    for name, s in res["per_class"].items():  # names may hold spaces ("traffic light"): fixed 15-char column
        cells = [c for c in class_block if c.startswith(f"{name:<15}")]
        assert len(cells) == 1, name
        assert cells[0][15:].split() == [pct(s["iou"]), pct(s["iiou"])], name

    def row(label):
        (line,) = [x for x in text.splitlines() if x.startswith(label)]
        return line[len(label) :].split()

    assert row("mean (19)") == [pct(res["mIoU"]), pct(res["iIoU"])]
    assert row("mean (7)") == [pct(res["mIoU_categories"]), pct(res["iIoU_categories"])]
    assert f"pixel accuracy (evaluated pixels): {pct(res['pixel_acc'])}%" in text
    assert f"mIoU_34 {pct(res['mIoU_34'])}%" in text and f"pixel_acc_34 {pct(res['pixel_acc_34'])}%" in text
    assert all(any(line.startswith(cat) for line in text.splitlines()) for cat in labels.CATEGORY_NAMES)
    # the heatmap: rows = ground truth over the 19 classes, columns = predictions (+ void), rows sum to 1
    ours = score_pred_dir(synth_small, "val", small_preds).mat.astype(np.float64)
    m = shown["matrix"]
    assert m.shape == (19, 20)
    present = ours[EVAL_IDS].sum(1) > 0
    np.testing.assert_allclose(m[present].sum(1), 1.0)
    assert np.isnan(m[~present]).all()
    car, truck = labels.TRAINID_NAMES.index("car"), labels.TRAINID_NAMES.index("truck")
    assert m[car, truck] == 1.0  # the prediction set swaps every car pixel to truck
    assert shown["y"] == list(labels.TRAINID_NAMES) and shown["x"] == list(labels.TRAINID_NAMES) + ["void"]
