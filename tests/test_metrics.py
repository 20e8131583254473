"""Confusion matrix and Cityscapes scores: hand-computed cases and cityscapesScripts as the oracle."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from cityseg import labels
from cityseg.eval import metrics
from cityseg.io import write_png

ROAD, SIDEWALK, BUILDING, CAR, TRUCK, PERSON, RIDER = 7, 8, 11, 26, 27, 24, 25
UNLABELED, PARKING, CARAVAN = 0, 9, 29


def same(a: float, b: float, tol: float = 1e-9) -> bool:
    a, b = float(a), float(b)
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


# ---- official scores on a hand-computed case ---------------------------------------------------
def _hand_case() -> metrics.CityscapesEvaluator:
    gt = np.array([[ROAD, ROAD, ROAD, ROAD, SIDEWALK, SIDEWALK, UNLABELED, PARKING]], dtype=np.uint8)
    pd = np.array([[ROAD, ROAD, UNLABELED, SIDEWALK, SIDEWALK, ROAD, ROAD, SIDEWALK]], dtype=np.uint8)
    ev = metrics.CityscapesEvaluator()
    ev.add(pd, gt, np.zeros_like(gt, dtype=np.int32))
    return ev


def test_official_class_iou_hand_case():
    s = _hand_case().scores()
    # road: tp 2; fn 2 (a void prediction + a sidewalk prediction); fp 1 (on sidewalk; the road
    # prediction on GT "unlabeled" counts nowhere) -> 2/5
    assert same(s["class_iou"]["road"], 2 / 5)
    # sidewalk: tp 1, fn 1, fp 1 (on road; the one on GT "parking" is ignored) -> 1/3
    assert same(s["class_iou"]["sidewalk"], 1 / 3)
    # every other class is absent from GT and (counted) predictions: NaN and skipped
    assert all(math.isnan(v) for k, v in s["class_iou"].items() if k not in ("road", "sidewalk"))
    assert same(s["mIoU"], (2 / 5 + 1 / 3) / 2)
    # flat: tp 5 (road/sidewalk confusions stay inside the category), fn 1 (void prediction) -> 5/6
    assert same(s["category_iou"]["flat"], 5 / 6)
    assert same(s["mIoU_categories"], 5 / 6)
    # pixel accuracy over the 6 evaluated pixels: 3 correct
    assert same(s["pixel_acc"], 3 / 6)
    # the seed's numbers count void ids too: 34-class IoU over classes with a non-zero union
    # road: tp 2, fp 2, fn 2 -> 1/3; sidewalk: tp 1, fp 2, fn 1 -> 1/4; unlabeled: tp 0 -> 0; parking 0
    assert same(s["mIoU_34"], (1 / 3 + 1 / 4 + 0 + 0) / 4)
    assert same(s["pixel_acc_34"], 3 / 8)
    # no instances at all: iIoU classes without FP are NaN
    assert math.isnan(s["iIoU"])


def test_results_json_is_stable_and_nan_free():
    res = _hand_case().results()
    assert list(res) == ["mIoU", "iIoU", "mIoU_categories", "iIoU_categories", "pixel_acc", "mIoU_34", "pixel_acc_34", "per_class", "n_images"]
    assert list(res["per_class"]) == list(labels.TRAINID_NAMES)
    assert res["per_class"]["road"] == {"iou": pytest.approx(0.4), "iiou": None}
    assert res["per_class"]["car"]["iou"] is None and res["iIoU"] is None
    assert res["n_images"] == 1
    json.loads(json.dumps(res, allow_nan=False))  # strict JSON


def test_instance_weighting_hand_case():
    # two GT cars: a big one (100 px, 50 predicted car, 50 truck) and a small one (10 px, all car);
    # 5 truck pixels predicted as car elsewhere -> class FP 5 (unweighted)
    gt = np.full((1, 120), CAR, dtype=np.uint8)
    gt[0, 110:115] = TRUCK
    gt[0, 115:] = ROAD
    inst = np.zeros_like(gt, dtype=np.int32)
    inst[0, :100] = 26001
    inst[0, 100:110] = 26002
    inst[0, 110:115] = 27001
    pd = gt.copy()
    pd[0, 50:100] = TRUCK
    pd[0, 110:115] = CAR
    ev = metrics.CityscapesEvaluator()
    ev.add(pd, gt, inst)
    s = ev.scores()
    w1, w2 = metrics.AVG_CLASS_SIZE["car"] / 100, metrics.AVG_CLASS_SIZE["car"] / 10
    tpw, fnw = 50 * w1 + 10 * w2, 50 * w1
    assert same(s["class_iiou"]["car"], tpw / (tpw + 5 + fnw))
    # truck instance (5 px) got no truck prediction; truck FP = 50 car pixels predicted truck
    assert same(s["class_iiou"]["truck"], 0.0)
    # vehicle category: every car/truck confusion stays in the category -> no FN, no FP
    assert same(s["category_iiou"]["vehicle"], 1.0)
    assert math.isnan(s["class_iiou"]["road"]) and math.isnan(s["category_iiou"]["human"])


def test_trainid_predictions_are_mapped_to_labelids():
    gt = np.array([[ROAD, CAR, UNLABELED]], dtype=np.uint8)
    a, b = metrics.CityscapesEvaluator(), metrics.CityscapesEvaluator()
    a.add(np.array([[0, 13, 255]], dtype=np.uint8), gt, pred_mode="trainIds")
    b.add(np.array([[ROAD, CAR, UNLABELED]], dtype=np.uint8), gt)
    np.testing.assert_array_equal(a.mat, b.mat)
    assert same(a.scores()["mIoU"], 1.0)


def test_evaluator_rejects_non_labelids():
    ev = metrics.CityscapesEvaluator()
    with pytest.raises(ValueError, match="not a labelId"):
        ev.add(np.array([[34]], dtype=np.uint8), np.array([[7]], dtype=np.uint8))
    with pytest.raises(ValueError, match="shape"):
        ev.add(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8))


# ---- cityscapesScripts as the oracle (small images: fast) --------------------------------------
@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
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
    ev.args.evalPixelAccuracy = False
    ev.args.quiet = True
    ev.args.colorized = False
    ev.args.bold = ev.args.nocol = ""
    ev.args.JSONOutput = False
    added = not hasattr(np, "in1d")
    if added:  # NumPy 2.4 removed np.in1d, which the oracle (2.3.0) still calls; same semantics
        np.in1d = lambda a, b, invert=False: np.isin(np.asarray(a).ravel(), b, invert=invert)
    yield ev
    if added:
        del np.in1d


def _random_frame(rng, h=48, w=96):
    gt = rng.integers(0, 34, (h, w)).astype(np.uint8)
    inst = gt.astype(np.int32)
    for lid in (PERSON, RIDER, CAR, TRUCK, CARAVAN, 33):
        m = gt == lid
        # split each class into 1..3 instances of different sizes; some pixels stay "crowd" (= labelId)
        k = rng.integers(0, 4, m.sum())
        inst[m] = np.where(k > 0, lid * 1000 + k - 1, lid)
    return gt, inst


def test_scores_equal_oracle_on_random_small_frames(oracle, tmp_path):
    rng = np.random.default_rng(3)
    ev = metrics.CityscapesEvaluator()
    preds, gts = [], []
    for i in range(3):
        gt, inst = _random_frame(rng)
        pd = gt.copy()
        flip = rng.random(gt.shape) < 0.4
        pd[flip] = rng.integers(0, 34, flip.sum())
        if i == 1:
            pd[pd == CAR] = TRUCK  # systematic swap
            pd[gt == 12] = 13  # wall missing from predictions
        g = tmp_path / f"c_000000_00000{i}_gtFine_labelIds.png"
        write_png(g, gt)
        write_png(tmp_path / f"c_000000_00000{i}_gtFine_instanceIds.png", inst.astype(np.uint16))
        write_png(tmp_path / f"c_000000_00000{i}_pred.png", pd)
        gts.append(str(g))
        preds.append(str(tmp_path / f"c_000000_00000{i}_pred.png"))
        ev.add(pd, gt, inst)
    ref = oracle.evaluateImgLists(preds, gts, oracle.args)
    s = ev.scores()
    np.testing.assert_array_equal(ev.mat, np.array(ref["confMatrix"]))
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
    assert not math.isnan(s["iIoU"])
