"""Property tests (hypothesis).

Readers: structurally valid but semantically mutated PNGs (chunks with correct CRCs, so the damage reaches
the decoders rather than stopping at a checksum) never raise anything but a one-line ``CitysegError``
naming the file, and whatever they do return honours the reader's contract. Plain random bytes and
XOR-damaged PNGs are in tests/test_bad_input.py.

Metrics: ``CityscapesEvaluator`` on random label maps and random confusion
matrices equal a plain numpy reference written here from the definition (IoU = TP / (TP + FP + FN),
NaN-skipping mean over the 19 evaluated classes, pixel accuracy over evaluated pixels), with the
evaluated/ignored split taken from cityscapesScripts' own label table; the scores do not depend on the
order of the images; ignore pixels with any prediction change nothing.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cityseg import io
from cityseg.errors import CitysegError
from cityseg.eval.metrics import CityscapesEvaluator, class_iou, pixel_accuracy
from conftest import require_oracle

cs_labels = require_oracle("cityscapesscripts.helpers.labels")

FIXTURE_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

# ---- the outside oracle's label table ---------------------------------------------------------------------------
#: labelIds 0..33 whose ground truth counts (cityscapesScripts: not ignoreInEval), in trainId order
REF_EVAL_IDS = [lab.id for lab in sorted((lab for lab in cs_labels.labels if 0 <= lab.id < 34 and not lab.ignoreInEval), key=lambda lab: lab.trainId)]
REF_EVAL_NAMES = [cs_labels.id2label[i].name for i in REF_EVAL_IDS]
REF_IGNORED_IDS = [lab.id for lab in cs_labels.labels if 0 <= lab.id < 34 and lab.ignoreInEval]
REF_VALID = np.zeros(34, bool)
REF_VALID[REF_EVAL_IDS] = True


def test_oracle_table_shape():
    assert len(REF_EVAL_IDS) == 19 and len(REF_IGNORED_IDS) == 15


# ---- numpy references, from the definitions ----------------------------------------------------------------------
def ref_scores_from_pixels(gt: np.ndarray, pred: np.ndarray) -> dict:
    """Per-class IoU over the 19 evaluated classes, their NaN-skipping mean, pixel accuracy over evaluated pixels."""
    gt, pred = gt.reshape(-1).astype(np.int64), pred.reshape(-1).astype(np.int64)
    valid = REF_VALID[gt]
    iou = {}
    for lid, name in zip(REF_EVAL_IDS, REF_EVAL_NAMES):
        tp = np.sum((gt == lid) & (pred == lid))
        fn = np.sum((gt == lid) & (pred != lid))  # void predictions on this class included
        fp = np.sum(valid & (gt != lid) & (pred == lid))  # only where the GT is evaluated
        denom = tp + fp + fn
        iou[name] = tp / denom if denom else math.nan
    vals = [v for v in iou.values() if not math.isnan(v)]
    n_valid = int(valid.sum())
    return {
        "iou": iou,
        "mIoU": sum(vals) / len(vals) if vals else math.nan,
        "pixel_acc": float(np.sum(valid & (gt == pred)) / n_valid) if n_valid else math.nan,
    }


def ref_scores_from_matrix(m: np.ndarray) -> dict:
    """The same scores from a 34x34 count matrix (rows GT, columns prediction), loop by loop."""
    iou = {}
    for lid, name in zip(REF_EVAL_IDS, REF_EVAL_NAMES):
        tp = int(m[lid, lid])
        fn = sum(int(m[lid, j]) for j in range(34) if j != lid)
        fp = sum(int(m[i, lid]) for i in REF_EVAL_IDS if i != lid)
        denom = tp + fp + fn
        iou[name] = tp / denom if denom else math.nan
    vals = [v for v in iou.values() if not math.isnan(v)]
    total = sum(int(m[i].sum()) for i in REF_EVAL_IDS)
    correct = sum(int(m[i, i]) for i in REF_EVAL_IDS)
    return {"iou": iou, "mIoU": sum(vals) / len(vals) if vals else math.nan, "pixel_acc": correct / total if total else math.nan}


def ref_generic(gt: np.ndarray, pred: np.ndarray, n: int, ignore: int) -> dict:
    """trainId-space scores: IoU per class over pixels whose GT is not ``ignore``, NaN mean, pixel accuracy."""
    keep = gt != ignore
    g, p = gt[keep].astype(np.int64), pred[keep].astype(np.int64)
    iou = np.full(n, np.nan)
    for c in range(n):
        tp = np.sum((g == c) & (p == c))
        union = np.sum((g == c) | (p == c))
        if union:
            iou[c] = tp / union
    return {"iou": iou, "mIoU": float(np.nanmean(iou)) if not np.isnan(iou).all() else math.nan, "pixel_acc": float(np.mean(g == p)) if g.size else math.nan}


def same(a, b, tol=1e-12) -> bool:
    a, b = float(a), float(b)
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


# ---- strategies --------------------------------------------------------------------------------------------------
@st.composite
def label_maps(draw, max_side=12):
    """A (gt, pred) pair of labelId maps. Values come from a small random subset of the 34 ids, so that
    classes are often absent from both (NaN) and collisions are frequent; void ids included."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    ids = draw(st.lists(st.integers(0, 33), min_size=1, max_size=8, unique=True))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    gt = rng.choice(ids, (h, w)).astype(np.uint8)
    pred = np.where(rng.random((h, w)) < draw(st.floats(0, 1)), gt, rng.choice(ids, (h, w))).astype(np.uint8)
    return gt, pred


@st.composite
def instance_maps(draw, gt: np.ndarray):
    """instanceIds consistent with ``gt``: instance-class pixels get labelId*1000 + k (k in 0..2)."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    inst = gt.astype(np.int32)
    has = np.isin(gt, [24, 25, 26, 27, 28, 31, 32, 33])
    inst[has] = gt[has].astype(np.int32) * 1000 + rng.integers(0, 3, int(has.sum()))
    return inst


@st.composite
def confusion_matrices(draw):
    """Sparse random 34x34 counts: most cells zero, some rows/columns empty, some huge counts."""
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.sampled_from([0.0, 0.02, 0.1, 0.5, 1.0]))
    scale = draw(st.sampled_from([1, 10, 10**6, 10**12]))
    rng = np.random.default_rng(seed)
    m = rng.integers(0, scale + 1, (34, 34), dtype=np.int64) * (rng.random((34, 34)) < density)
    if draw(st.booleans()):
        m[np.diag_indices(34)] += rng.integers(0, scale + 1, 34)
    return m


# ---- metrics equal the numpy reference ----------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(label_maps(), min_size=1, max_size=4))
def test_evaluator_equals_numpy_reference_on_random_label_maps(pairs):
    ev = CityscapesEvaluator()
    for gt, pred in pairs:
        ev.add(pred, gt)
    s = ev.scores()
    gt_all = np.concatenate([g.reshape(-1) for g, _ in pairs])
    pd_all = np.concatenate([p.reshape(-1) for _, p in pairs])
    ref = ref_scores_from_pixels(gt_all, pd_all)
    assert list(s["class_iou"]) == REF_EVAL_NAMES
    for name in REF_EVAL_NAMES:
        assert same(s["class_iou"][name], ref["iou"][name]), name
    assert same(s["mIoU"], ref["mIoU"]) and same(s["pixel_acc"], ref["pixel_acc"])
    res = ev.results()  # the JSON view: NaN -> None, otherwise the same numbers
    assert (res["mIoU"] is None) == math.isnan(ref["mIoU"])
    if res["mIoU"] is not None:
        assert same(res["mIoU"], ref["mIoU"])
    # the seed's 34-id numbers: every labelId a class, every pixel counted
    seed_ref = ref_generic(gt_all, pd_all, 34, ignore=-1)
    assert same(s["mIoU_34"], seed_ref["mIoU"]) and same(s["pixel_acc_34"], seed_ref["pixel_acc"])
    # the confusion matrix itself: rows GT, columns prediction
    expect = np.zeros((34, 34), np.int64)
    np.add.at(expect, (gt_all.astype(np.int64), pd_all.astype(np.int64)), 1)
    assert np.array_equal(ev.mat, expect)


@settings(max_examples=80, deadline=None)
@given(m=confusion_matrices())
def test_scores_of_random_confusion_matrices_equal_numpy_reference(m):
    ref = ref_scores_from_matrix(m)
    got = class_iou(m)
    for name in REF_EVAL_NAMES:
        assert same(got[name], ref["iou"][name]), name
    vals = [v for v in got.values() if not math.isnan(v)]
    assert same(sum(vals) / len(vals) if vals else math.nan, ref["mIoU"])
    assert same(pixel_accuracy(m), ref["pixel_acc"])
    # the evaluator reports the same from the same matrix
    ev = CityscapesEvaluator()
    ev.mat += m
    ev.n_images = 1
    s = ev.scores()
    assert same(s["mIoU"], ref["mIoU"]) and same(s["pixel_acc"], ref["pixel_acc"])


# ---- invariance to the order of the images ------------------------------------------------------------------------
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), n=st.integers(2, 5))
def test_scores_do_not_depend_on_image_order(data, n):
    pairs = [data.draw(label_maps(max_side=10)) for _ in range(n)]
    insts = [data.draw(instance_maps(g)) for g, _ in pairs]
    order = data.draw(st.permutations(range(n)))

    def run(idx):
        ev = CityscapesEvaluator()
        for i in idx:
            ev.add(pairs[i][1], pairs[i][0], insts[i])
        return ev

    a, b = run(range(n)), run(order)
    assert np.array_equal(a.mat, b.mat)
    ra, rb = a.results(), b.results()
    for key in ("mIoU", "pixel_acc", "mIoU_34", "pixel_acc_34", "mIoU_categories", "iIoU", "iIoU_categories"):
        x, y = ra[key], rb[key]
        assert (x is None) == (y is None) and (x is None or abs(x - y) <= 1e-12), key
    # and splitting the images over two evaluators (two workers / two ranks) then merging is the same too
    half = n // 2
    c, d = run(order[:half]), run(order[half:])
    c.merge(d)
    assert np.array_equal(c.mat, a.mat) and c.n_images == n
    assert np.allclose(c.inst, a.inst, rtol=1e-12, atol=0)


# ---- ignore pixels are absent -------------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(gt_pred=label_maps(max_side=10), data=st.data())
def test_ignore_pixels_with_any_prediction_change_nothing(gt_pred, data):
    """Append a block of GT pixels of ignored labelIds (0..6, 9, 10, 14..16, 18, 29, 30) with arbitrary
    predictions (valid classes, void ids, anything): every official score stays exactly the same."""
    gt, pred = gt_pred
    inst = data.draw(instance_maps(gt))
    h, w = gt.shape
    extra_rows = data.draw(st.integers(1, 6))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    gt_x = np.concatenate([gt, rng.choice(REF_IGNORED_IDS, (extra_rows, w)).astype(np.uint8)])
    pred_x = np.concatenate([pred, rng.integers(0, 34, (extra_rows, w)).astype(np.uint8)])
    inst_x = np.concatenate([inst, gt_x[h:].astype(np.int32)])

    base, more = CityscapesEvaluator(), CityscapesEvaluator()
    base.add(pred, gt, inst)
    more.add(pred_x, gt_x, inst_x)
    a, b = base.scores(), more.scores()
    for key in ("class_iou", "class_iiou", "category_iou", "category_iiou"):
        for name in a[key]:
            assert same(a[key][name], b[key][name]), (key, name)
    for key in ("mIoU", "iIoU", "mIoU_categories", "iIoU_categories", "pixel_acc"):
        assert same(a[key], b[key]), key
    assert same(b["mIoU"], ref_scores_from_pixels(gt_x, pred_x)["mIoU"])


# ---- readers on structurally valid, semantically mutated PNGs -----------------------------------------------------
def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png(width, height, depth, color, payload: bytes, interlace=0, extra_chunks=(), idat_split=1) -> bytes:
    """A PNG with correct CRCs around whatever IHDR fields and (compressed) pixel payload are given."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, interlace)
    data = zlib.compress(payload)
    step = max(1, -(-len(data) // idat_split))
    idats = b"".join(_chunk(b"IDAT", data[i : i + step]) for i in range(0, len(data), step)) or _chunk(b"IDAT", b"")
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + b"".join(extra_chunks) + idats + _chunk(b"IEND", b"")


#: (colour type, allowed bit depths, channels)
_COLOR_TYPES = {0: ((1, 2, 4, 8, 16), 1), 2: ((8, 16), 3), 3: ((1, 2, 4, 8), 1), 4: ((8, 16), 2), 6: ((8, 16), 4)}


@st.composite
def mutated_pngs(draw):
    """PNGs whose chunks are all well-formed (correct CRC) but whose content may lie: random colour type /
    bit depth combinations (legal or not), sizes that disagree with the pixel data, payloads that are short,
    long or random, missing/odd palettes, split IDATs, unknown critical chunks, interlacing."""
    # mostly legal headers (so the damage reaches the decoders), sometimes illegal ones
    color = draw(st.sampled_from([0, 2, 3, 4, 6] * 4 + [1, 5, 7]))
    legal_depths, channels = _COLOR_TYPES.get(color, ((8,), 1))
    depth = draw(st.sampled_from(legal_depths) if draw(st.integers(0, 4)) else st.sampled_from([0, 3, 8, 16, 32]))
    w = draw(st.integers(1, 20) if draw(st.integers(0, 9)) else st.just(0))
    h = draw(st.integers(1, 20) if draw(st.integers(0, 9)) else st.just(0))
    row = 1 + (w * channels * depth + 7) // 8
    exact = h * row
    kind = draw(st.sampled_from(["exact", "short", "long", "random"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = {"exact": exact, "short": max(0, exact - draw(st.integers(1, 50))), "long": exact + draw(st.integers(1, 50)), "random": draw(st.integers(0, 600))}[kind]
    payload = rng.integers(0, 256, n, dtype=np.uint8)
    if kind != "random" and row:
        payload[::row] = rng.integers(0, 5, payload[::row].size)  # filter bytes mostly legal
    extra = []
    if color == 3 or draw(st.booleans()):
        entries = draw(st.integers(0, 300))
        extra.append(_chunk(b"PLTE", rng.integers(0, 256, entries * 3 + draw(st.integers(0, 2)), dtype=np.uint8).tobytes()))
    if draw(st.booleans()):
        extra.append(
            _chunk(
                draw(st.sampled_from([b"tRNS", b"gAMA", b"sBIT", b"xYZw", b"ABCD"])), rng.integers(0, 256, draw(st.integers(0, 12)), dtype=np.uint8).tobytes()
            )
        )
    interlace = draw(st.sampled_from([0, 0, 1, 2]))
    return _png(w, h, depth, color, payload.tobytes(), interlace, extra, draw(st.integers(1, 3)))


def _check_readers(path) -> None:
    """Each reader either raises a one-line CitysegError naming the file or returns what it promises."""
    try:
        h, w, mode = io.probe_image(path)
        assert h > 0 and w > 0 and isinstance(mode, str)
    except CitysegError as e:
        assert "\n" not in str(e) and str(path) in str(e)
        h = w = None
    for name, reader in (("image", io.read_image), ("label", lambda p: io.read_label(p, max_value=33)), ("instance", io.read_instance)):
        try:
            arr = reader(path)
        except CitysegError as e:
            assert "\n" not in str(e) and str(path) in str(e), (name, str(e))
            continue
        assert h is not None, f"{name} reader accepted a file probe_image refuses"
        assert arr.shape[:2] == (h, w), (name, arr.shape, (h, w))
        if name == "image":
            assert arr.dtype == np.uint8 and arr.shape == (h, w, 3)
        elif name == "label":
            assert arr.dtype == np.uint8 and arr.ndim == 2 and int(arr.max()) <= 33
        else:
            assert arr.dtype == np.int32 and arr.ndim == 2


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURE_OK)
@given(data=mutated_pngs())
def test_readers_on_well_formed_but_lying_pngs(tmp_path, data):
    path = tmp_path / "lying.png"
    path.write_bytes(data)
    _check_readers(path)


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURE_OK)
@given(width=st.integers(1, 2**31 - 1), height=st.integers(1, 2**31 - 1), color=st.sampled_from([0, 2, 3, 6]))
def test_huge_headers_are_refused_without_decoding(tmp_path, monkeypatch, width, height, color):
    """Any header over the pixel limit is refused by probe_image before a decoder sees the file."""
    import cv2

    assume(width * height > io.MAX_PIXELS)
    path = tmp_path / "huge.png"
    path.write_bytes(_png(width, height, 8, color, b"\x00" * 64))

    def no_decode(*a, **k):
        raise AssertionError("decoder called on a file whose header is over the limit")

    monkeypatch.setattr(cv2, "imdecode", no_decode)
    for reader in (io.probe_image, io.read_image, io.read_label, io.read_instance):
        with pytest.raises(CitysegError) as exc:
            reader(path)
        assert str(path) in str(exc.value) and "refusing to decode" in str(exc.value)


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE_OK)
@given(h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["rgb", "gray", "gray16", "palette", "rgba", "la"]))
def test_readers_round_trip_valid_files_and_refuse_the_wrong_kind(tmp_path, h, w, seed, kind):
    """Valid files of every kind: the matching reader returns the exact pixels, the others refuse cleanly."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    path = tmp_path / f"valid {kind} ü.png"  # spaces and non-ASCII in the name must not matter
    if kind == "rgb":
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(arr, "RGB").save(path)
        assert np.array_equal(io.read_image(path), arr)
    elif kind == "gray":
        arr = rng.integers(0, 34, (h, w), dtype=np.uint8)
        Image.fromarray(arr, "L").save(path)
        assert np.array_equal(io.read_label(path, max_value=33), arr)
    elif kind == "gray16":
        arr = rng.integers(0, 34000, (h, w), dtype=np.uint16)
        io.write_png(path, arr)
        assert np.array_equal(io.read_instance(path), arr.astype(np.int32))
    elif kind == "palette":
        arr = rng.integers(0, 34, (h, w), dtype=np.uint8)
        im = Image.fromarray(arr, "L").convert("P")
        im.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
        im.putdata(arr.reshape(-1).tolist())
        im.save(path)
        assert np.array_equal(io.read_label(path, max_value=33), arr)  # indices, not colours
    elif kind == "rgba":
        Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA").save(path)
    else:
        Image.fromarray(rng.integers(0, 256, (h, w, 2), dtype=np.uint8), "LA").save(path)
    _check_readers(path)
