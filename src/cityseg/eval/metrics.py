"""Every Cityscapes score, defined exactly as the official evaluator does, from one streaming accumulator.

One confusion matrix over the 34 labelIds (rows ground truth, columns prediction) holds everything the
pixel-level scores need; iIoU additionally needs per-image instance statistics from
``_gtFine_instanceIds.png``. ``CityscapesEvaluator`` accumulates both, one image at a time, and reproduces
cityscapesScripts' ``evalPixelLevelSemanticLabeling`` (v2.3.0):

* IoU of an evaluated class = TP / (TP + FP + FN) over the whole split. GT pixels of ignored labelIds count
  nowhere; FP only counts pixels whose GT is an evaluated class; a void prediction on a valid pixel is a FN.
  A class with TP + FP + FN = 0 is NaN and skipped in the mean.
* iIoU: TP and FN of every GT instance are weighted by ``AVG_CLASS_SIZE[class] / instance size``; FP are
  the plain (unweighted) pixel counts from the confusion matrix, as in the official script.
* Category IoU / iIoU the same over the 7 categories (category iIoU only for human and vehicle, whose
  prediction masks include the void vehicle ids caravan and trailer, as the official script has it).

The seed's numbers (34-class mIoU over all labelIds, pixel accuracy over all pixels) are reported next to
them for comparison: they count void classes and pixels and are not comparable to published results.

``CamVidEvaluator`` scores the 11 CamVid classes from the same pair counts and IoU definition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from cityseg import labels

#: mean instance size (pixels) per class over the Cityscapes train split, from cityscapesScripts'
#: ``evalPixelLevelSemanticLabeling.args.avgClassSize``; iIoU weights each instance by avg / size
AVG_CLASS_SIZE: dict[str, float] = {
    "bicycle": 4672.3249222261,
    "caravan": 36771.8241758242,
    "motorcycle": 6298.7200839748,
    "rider": 3930.4788056518,
    "bus": 35732.1511111111,
    "train": 67583.7075812274,
    "car": 12794.0202738185,
    "person": 3462.4756337644,
    "truck": 27855.1264367816,
    "trailer": 16926.9763313609,
}

N = labels.NUM_LABEL_IDS  # 34
#: bool[34]: labelId is one of the 19 evaluated classes
EVALUATED = np.array([not labels.ID_TO_LABEL[i].ignoreInEval for i in range(N)])
#: labelIds of the 19 evaluated classes in trainId order, and their names
EVAL_IDS = np.array(labels.EVAL_LABEL_IDS)
EVAL_NAMES = labels.TRAINID_NAMES


def _category_ids(category: str) -> np.ndarray:
    """Evaluated labelIds of ``category`` (official ``getIouScoreForCategory``)."""
    return np.array([lab.id for lab in labels.CATEGORY_TO_LABELS[category] if lab.id >= 0 and not lab.ignoreInEval])


def _instance_category_ids(category: str) -> np.ndarray:
    """All labelIds (void ones too) of an instance category (official ``generateInstanceStats``)."""
    return np.array([lab.id for lab in labels.CATEGORY_TO_LABELS[category] if lab.id >= 0])


CATEGORY_IDS = {c: _category_ids(c) for c in labels.CATEGORY_NAMES}
INSTANCE_CATEGORY_IDS = {c: _instance_category_ids(c) for c in labels.INSTANCE_CATEGORY_NAMES}
INSTANCE_CLASS_IDS = np.array([labels.NAME_TO_LABEL[n].id for n in labels.INSTANCE_CLASS_NAMES])


# ---- scores from a confusion matrix -------------------------------------------------------------
def iou_from_confusion(mat: np.ndarray, n_valid: int | None = None) -> dict[str, Any]:
    """Generic scores of a (trainId-space) matrix: per-class IoU (NaN where a class has zero union),
    mIoU over the non-NaN classes and pixel accuracy over all counted pixels.

    With ``n_valid`` only classes ``0..n_valid-1`` are scored and the indices above are void: GT rows of
    void count nowhere, and a void prediction on a valid pixel is a false negative (as officially)."""
    m = _as_numpy(mat).astype(np.float64)
    k = m.shape[0] if n_valid is None else int(n_valid)
    rows = m[:k]  # GT pixels of void indices count nowhere
    tp = np.diag(rows[:, :k])
    union = rows[:, :k].sum(0) + rows.sum(1) - tp  # row sums include void predictions: false negatives
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)
    total = rows.sum()
    return {"iou": iou, "mIoU": _nanmean(iou), "pixel_acc": float(tp.sum() / total) if total else math.nan}


def _as_numpy(mat) -> np.ndarray:
    """An array or a (possibly GPU) tensor as a NumPy array."""
    return mat.detach().cpu().numpy() if hasattr(mat, "detach") else np.asarray(mat)


def _nanmean(values) -> float:
    """Mean over non-NaN entries (official ``getScoreAverage``); NaN if there are none."""
    v = [float(x) for x in values if not math.isnan(float(x))]
    return sum(v) / len(v) if v else math.nan


def _ratio(tp: float, fp: float, fn: float) -> float:
    denom = tp + fp + fn
    return float(tp) / float(denom) if denom != 0 else math.nan


def _check_mat34(mat) -> np.ndarray:
    m = _as_numpy(mat).astype(np.int64, copy=False)
    if m.shape != (N, N):
        raise ValueError(f"expected a {N}x{N} labelId confusion matrix, got {m.shape}")
    return m


def class_iou(mat34: np.ndarray) -> dict[str, float]:
    """Official IoU of the 19 evaluated classes (trainId order), NaN where TP + FP + FN = 0."""
    m = _check_mat34(mat34)
    valid_rows = m[EVALUATED]  # GT pixels of ignored labelIds count nowhere
    out = {}
    for lid, name in zip(EVAL_IDS, EVAL_NAMES):
        tp = int(m[lid, lid])
        fn = int(m[lid].sum()) - tp  # includes void predictions on this class
        fp = int(valid_rows[:, lid].sum()) - tp
        out[name] = _ratio(tp, fp, fn)
    return out


def category_iou(mat34: np.ndarray) -> dict[str, float]:
    """Official IoU of the 7 categories (flat ... vehicle)."""
    m = _check_mat34(mat34)
    cat_of = np.array([labels.ID_TO_LABEL[i].category for i in range(N)])
    out = {}
    for cat, ids in CATEGORY_IDS.items():
        tp = int(m[np.ix_(ids, ids)].sum())
        fn = int(m[ids].sum()) - tp
        rows = EVALUATED & (cat_of != cat)
        fp = int(m[np.ix_(rows, ids)].sum())
        out[cat] = _ratio(tp, fp, fn)
    return out


def false_positives(mat34: np.ndarray, ids: Sequence[int], exclude_rows: Sequence[int]) -> int:
    """Pixels predicted as any of ``ids`` whose GT is an evaluated labelId not in ``exclude_rows``."""
    m = _check_mat34(mat34)
    rows = EVALUATED.copy()
    rows[np.asarray(exclude_rows)] = False
    return int(m[np.ix_(rows, np.asarray(ids))].sum())


def pixel_accuracy(mat34: np.ndarray) -> float:
    """Correct / all pixels whose GT is an evaluated class (void predictions there count as wrong)."""
    m = _check_mat34(mat34)
    total = int(m[EVALUATED].sum())
    return int(np.diag(m)[EVALUATED].sum()) / total if total else math.nan


def seed_scores(mat34: np.ndarray) -> dict[str, float]:
    """The seed's numbers: mIoU over all 34 labelIds (classes with zero union skipped) and pixel accuracy
    over all pixels, void included. Inflated and not comparable to the benchmark; reported for reference."""
    s = iou_from_confusion(_check_mat34(mat34))
    return {"mIoU_34": s["mIoU"], "pixel_acc_34": s["pixel_acc"], "iou_34": s["iou"]}


# ---- instance statistics (iIoU) -----------------------------------------------------------------
_INST_CLASSES = labels.INSTANCE_CLASS_NAMES  # 8 names
_INST_CATEGORIES = labels.INSTANCE_CATEGORY_NAMES  # human, vehicle
#: labelId -> index into _INST_CLASSES (-1: not an evaluated instance class)
_CLASS_INDEX = np.full(65536 // 1000 + 1, -1, dtype=np.int64)
for _i, _name in enumerate(_INST_CLASSES):
    _CLASS_INDEX[labels.NAME_TO_LABEL[_name].id] = _i
#: predicted labelId (0..255) -> index into _INST_CATEGORIES (-1: none)
_PRED_CATEGORY = np.full(256, -1, dtype=np.int64)
for _i, _cat in enumerate(_INST_CATEGORIES):
    _PRED_CATEGORY[INSTANCE_CATEGORY_IDS[_cat]] = _i
_CLASS_CATEGORY = np.array([_INST_CATEGORIES.index(labels.NAME_TO_LABEL[n].category) for n in _INST_CLASSES])
_CLASS_WEIGHT_NUM = np.array([AVG_CLASS_SIZE[n] for n in _INST_CLASSES])


def instance_stats(pred: np.ndarray, instance_ids: np.ndarray) -> np.ndarray:
    """Per-image iIoU statistics, float64 array 4 x K: rows (tpWeighted, fnWeighted, tp, fn), columns the
    8 instance classes followed by the 2 instance categories (K = 10).

    Instances are the ids > 1000 of ``_instanceIds.png`` (labelId * 1000 + k) of evaluated instance classes;
    each contributes its TP/FN pixel counts times ``AVG_CLASS_SIZE[class] / size``. Category TP counts
    pixels predicted as any labelId of the instance's category.
    """
    k = len(_INST_CLASSES)
    out = np.zeros((4, k + len(_INST_CATEGORIES)), dtype=np.float64)
    inst = np.asarray(instance_ids).reshape(-1)
    sel = inst > 1000
    if not sel.any():
        return out
    ids = inst[sel]
    p = np.asarray(pred).reshape(-1)[sel]
    if int(p.max()) >= N or int(p.min()) < 0:
        raise ValueError(f"prediction values must be labelIds 0..{N - 1}")
    # instance id -> compact index, then one bincount of (instance, predicted labelId) pairs; ids come out
    # ascending, the order in which the official script visits instances
    size_all = np.bincount(ids)
    uniq = np.flatnonzero(size_all)
    compact = np.zeros(size_all.size, dtype=np.intp)
    compact[uniq] = np.arange(uniq.size)
    counts = np.bincount(compact[ids] * N + p, minlength=uniq.size * N).reshape(uniq.size, N)
    cls = _CLASS_INDEX[np.minimum(uniq // 1000, _CLASS_INDEX.size - 1)]
    keep = cls >= 0  # instances of void classes (caravan, trailer) are skipped, as officially
    if not keep.any():
        return out
    uniq, cls, counts = uniq[keep], cls[keep], counts[keep]
    size = counts.sum(1)
    tp = counts[np.arange(uniq.size), uniq // 1000]
    in_cat = _PRED_CATEGORY[:N][None, :] == _CLASS_CATEGORY[cls][:, None]
    cat_tp = (counts * in_cat).sum(1)
    weight = _CLASS_WEIGHT_NUM[cls] / size.astype(np.float64)
    fn, cat_fn = size - tp, size - cat_tp
    cat = k + _CLASS_CATEGORY[cls]
    for row, col, val in (
        (0, cls, tp * weight),
        (1, cls, fn * weight),
        (2, cls, tp),
        (3, cls, fn),
        (0, cat, cat_tp * weight),
        (1, cat, cat_fn * weight),
        (2, cat, cat_tp),
        (3, cat, cat_fn),
    ):
        out[row] += np.bincount(col, weights=np.asarray(val, dtype=np.float64), minlength=out.shape[1])
    return out


def pair_counts(gt: np.ndarray, pred: np.ndarray, n: int = N) -> np.ndarray:
    """n x n int64 counts of (gt, pred) pairs of two equal-shape arrays with values in 0..n-1."""
    gt = np.ascontiguousarray(gt)
    pred = np.ascontiguousarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground truth shape {gt.shape}")
    if gt.dtype == np.uint8 and pred.dtype == np.uint8 and 0 < gt.size < 2**24 and n <= 256:
        gt, pred = gt.reshape(1, -1), pred.reshape(1, -1)
        import cv2  # a 2-D histogram: ~4x faster than bincount; float32 counts are exact below 2**24

        hist = cv2.calcHist([gt, pred], [0, 1], None, [n, n], [0, n, 0, n])
        return hist.astype(np.int64)
    code = gt.astype(np.int64 if n * n > 65535 else np.uint16) * n + pred.astype(np.int64 if n * n > 65535 else np.uint16)
    return np.bincount(code.reshape(-1), minlength=n * n).reshape(n, n).astype(np.int64)


def all_reduce_sum(flat: np.ndarray) -> np.ndarray:
    """``flat`` summed over all processes (itself unless torch.distributed is initialised), as float64,
    which carries int64 pixel counts exactly (< 2**53) and weighted sums."""
    import torch

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return np.asarray(flat, dtype=np.float64)
    t = torch.from_numpy(np.asarray(flat, dtype=np.float64))
    if torch.distributed.get_backend() == "nccl":
        t = t.cuda()
    torch.distributed.all_reduce(t)
    return t.cpu().numpy()


# ---- the full evaluator -------------------------------------------------------------------------
def _json_number(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


class CityscapesEvaluator:
    """Accumulate the official Cityscapes scores one image at a time.

    ``add(pred_labelIds, gt_labelIds, gt_instanceIds=None, pred_mode="labelIds")``: HxW integer arrays
    at the same size; trainId predictions (``pred_mode="trainIds"``) are mapped to labelIds first.
    ``scores()`` gives every number (per class/category dicts); ``results()`` the stable JSON dict.
    """

    def __init__(self):
        self.mat = np.zeros((N, N), dtype=np.int64)  # 34x34 labelId confusion, rows GT, columns prediction
        self.inst = np.zeros((4, len(_INST_CLASSES) + len(_INST_CATEGORIES)), dtype=np.float64)
        self.n_images = 0
        self.n_without_instances = 0

    def add(self, pred: np.ndarray, gt: np.ndarray, gt_instance_ids: np.ndarray | None = None, pred_mode: str = "labelIds") -> None:
        pred = _as_numpy(pred)
        gt = _as_numpy(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} != ground truth shape {gt.shape}")
        if labels.check_label_mode(pred_mode) == "trainIds":
            pred = labels.TRAINID_TO_LABELID[pred.astype(np.uint8)]
        if gt.size and int(gt.max()) >= N:
            raise ValueError(f"ground truth value {int(gt.max())} is not a labelId (0..{N - 1})")
        if pred.size and int(pred.max()) >= N:
            raise ValueError(f"prediction value {int(pred.max())} is not a labelId (0..{N - 1})")
        self.mat += pair_counts(gt, pred)
        if gt_instance_ids is None:
            self.n_without_instances += 1
        else:
            inst = _as_numpy(gt_instance_ids)
            if inst.shape != gt.shape:
                raise ValueError(f"instanceIds shape {inst.shape} != ground truth shape {gt.shape}")
            self.inst += instance_stats(pred, inst)
        self.n_images += 1

    def merge(self, other: CityscapesEvaluator) -> None:
        self.mat += other.mat
        self.inst += other.inst
        self.n_images += other.n_images
        self.n_without_instances += other.n_without_instances

    def all_reduce(self) -> None:
        """Sum everything over all processes (no-op unless torch.distributed is initialised)."""
        flat = np.concatenate([self.mat.reshape(-1), self.inst.reshape(-1), [self.n_images, self.n_without_instances]])
        flat = all_reduce_sum(flat)
        self.mat = np.rint(flat[: N * N]).astype(np.int64).reshape(N, N)
        self.inst = flat[N * N : -2].reshape(self.inst.shape)
        self.n_images, self.n_without_instances = int(flat[-2]), int(flat[-1])

    def scores(self) -> dict[str, Any]:
        """All scores as floats (NaN where undefined): class/category IoU and iIoU dicts and their means."""
        m = self.mat
        cls_iou = class_iou(m)
        cat_iou = category_iou(m)
        has_inst = self.n_without_instances == 0 and self.n_images > 0
        k = len(_INST_CLASSES)
        cls_iiou: dict[str, float] = {}
        for name in EVAL_NAMES:
            if name not in _INST_CLASSES or not has_inst:
                cls_iiou[name] = math.nan
                continue
            j = _INST_CLASSES.index(name)
            lid = labels.NAME_TO_LABEL[name].id
            fp = false_positives(m, [lid], [lid])
            cls_iiou[name] = _ratio(self.inst[0, j], fp, self.inst[1, j])
        cat_iiou: dict[str, float] = {}
        for cat in labels.CATEGORY_NAMES:
            if cat not in _INST_CATEGORIES or not has_inst:
                cat_iiou[cat] = math.nan
                continue
            j = k + _INST_CATEGORIES.index(cat)
            ids = INSTANCE_CATEGORY_IDS[cat]
            in_cat = [lab.id for lab in labels.CATEGORY_TO_LABELS[cat] if lab.id >= 0]
            fp = false_positives(m, ids, in_cat)
            cat_iiou[cat] = _ratio(self.inst[0, j], fp, self.inst[1, j])
        seed = seed_scores(m)
        return {
            "class_iou": cls_iou,
            "class_iiou": cls_iiou,
            "category_iou": cat_iou,
            "category_iiou": cat_iiou,
            "mIoU": _nanmean(cls_iou.values()),
            "iIoU": _nanmean(cls_iiou.values()),
            "mIoU_categories": _nanmean(cat_iou.values()),
            "iIoU_categories": _nanmean(cat_iiou.values()),
            "pixel_acc": pixel_accuracy(m),
            "mIoU_34": seed["mIoU_34"],
            "pixel_acc_34": seed["pixel_acc_34"],
            "iou_34": dict(zip(labels.LABELID_NAMES, seed["iou_34"].tolist())),
            "n_images": self.n_images,
        }

    def results(self) -> dict[str, Any]:
        """The stable JSON dict (fractions 0..1, NaN -> None); key order is part of the contract."""
        s = self.scores()
        out: dict[str, Any] = {k: _json_number(s[k]) for k in ("mIoU", "iIoU", "mIoU_categories", "iIoU_categories", "pixel_acc", "mIoU_34", "pixel_acc_34")}
        out["per_class"] = {name: {"iou": _json_number(s["class_iou"][name]), "iiou": _json_number(s["class_iiou"][name])} for name in EVAL_NAMES}
        out["n_images"] = int(s["n_images"])
        return out


# ---- CamVid ------------------------------------------------------------------------------------
CAMVID_VOID = labels.CAMVID_VOID  # 11: void ground truth, and the "no CamVid class" prediction
#: any uint8 value -> itself for the 11 CamVid classes, else CAMVID_VOID (255, the ignore index, too)
_TO_CAMVID_INDEX = np.minimum(np.arange(256), CAMVID_VOID).astype(np.uint8)


class CamVidEvaluator:
    """mIoU over the 11 CamVid classes, pixel accuracy and per-class IoU, one image at a time.

    One 12x12 confusion matrix (rows ground truth, columns prediction; index 11 is void) through the same
    ``pair_counts`` and ``iou_from_confusion`` as Cityscapes: void GT pixels count nowhere, a prediction of
    no CamVid class (11, or 255) on a valid pixel is wrong. ``add(pred, gt)`` takes HxW CamVid ids (0..10,
    11 or 255 void) at the same size; ``results()`` is the stable JSON dict.
    """

    def __init__(self):
        self.mat = np.zeros((CAMVID_VOID + 1, CAMVID_VOID + 1), dtype=np.int64)
        self.n_images = 0

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        pred, gt = _as_numpy(pred), _as_numpy(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} != ground truth shape {gt.shape}")
        self.mat += pair_counts(_TO_CAMVID_INDEX[gt.astype(np.uint8)], _TO_CAMVID_INDEX[pred.astype(np.uint8)], CAMVID_VOID + 1)
        self.n_images += 1

    def merge(self, other: CamVidEvaluator) -> None:
        self.mat += other.mat
        self.n_images += other.n_images

    def all_reduce(self) -> None:
        """Sum over all processes (no-op unless torch.distributed is initialised)."""
        flat = all_reduce_sum(np.concatenate([self.mat.reshape(-1), [self.n_images]]))
        self.mat = np.rint(flat[:-1]).astype(np.int64).reshape(self.mat.shape)
        self.n_images = int(flat[-1])

    def scores(self) -> dict[str, Any]:
        """``class_iou`` (name -> IoU, NaN for a class with empty union), ``mIoU``, ``pixel_acc``, ``n_images``."""
        s = iou_from_confusion(self.mat, labels.NUM_CAMVID)
        return {"class_iou": dict(zip(labels.CAMVID_NAMES, s["iou"].tolist())), "mIoU": s["mIoU"], "pixel_acc": s["pixel_acc"], "n_images": self.n_images}

    def results(self) -> dict[str, Any]:
        """The stable JSON dict: "mIoU", "pixel_acc", "per_class" (name -> {"iou"}), "n_images"; NaN -> None."""
        s = self.scores()
        per_class = {name: {"iou": _json_number(v)} for name, v in s["class_iou"].items()}
        return {"mIoU": _json_number(s["mIoU"]), "pixel_acc": _json_number(s["pixel_acc"]), "per_class": per_class, "n_images": int(s["n_images"])}
