"""The label table and everything derived from it, against cityscapesscripts (the oracle)."""

import numpy as np
import pytest

from cityseg import labels as L
from conftest import require_oracle

cs = require_oracle("cityscapesscripts.helpers.labels")


def test_every_row_matches_cityscapesscripts():
    assert len(L.LABELS) == len(cs.labels) == 35
    for ours, theirs in zip(L.LABELS, cs.labels):
        assert ours.name == theirs.name
        assert ours.id == theirs.id
        assert ours.trainId == theirs.trainId
        assert ours.category == theirs.category
        assert ours.categoryId == theirs.categoryId
        assert ours.hasInstances == theirs.hasInstances
        assert ours.ignoreInEval == theirs.ignoreInEval
        assert tuple(ours.color) == tuple(theirs.color)


def test_labelid_to_trainid_lut():
    for i in range(256):
        lab = cs.id2label.get(i)
        want = 255 if lab is None or lab.trainId in (255, -1) else lab.trainId
        assert L.LABELID_TO_TRAINID[i] == want, i


def test_trainid_to_labelid_round_trip():
    for t in range(19):
        assert L.TRAINID_TO_LABELID[t] == cs.trainId2label[t].id
    ids = np.arange(34, dtype=np.uint8)
    back = L.to_label_ids(L.to_train_ids(ids))
    evaluated = [lab.id for lab in cs.labels if lab.id >= 0 and not lab.ignoreInEval]
    assert all(back[i] == i for i in evaluated)
    assert L.TRAINID_TO_LABELID[255] == 0


def test_palettes_and_names():
    for i in range(34):
        assert tuple(L.LABELID_PALETTE[i]) == tuple(cs.id2label[i].color)
        assert L.LABELID_NAMES[i] == cs.id2label[i].name
    for t in range(19):
        assert tuple(L.TRAINID_PALETTE[t]) == tuple(cs.trainId2label[t].color)
        assert L.TRAINID_NAMES[t] == cs.trainId2label[t].name
    assert (L.LABELID_PALETTE[34:] == 0).all() and (L.TRAINID_PALETTE[255] == 0).all()
    assert L.INSTANCE_CLASS_NAMES == ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
    assert L.CATEGORY_NAMES == ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
    assert L.INSTANCE_CATEGORY_NAMES == ("human", "vehicle")
    assert set(L.CATEGORY_TO_LABELS) == set(cs.category2labels)


def test_colorize_and_label_modes():
    ids = np.array([[7, 26], [40, 0]], dtype=np.uint8)
    rgb = L.colorize(ids)
    assert rgb.shape == (2, 2, 3) and tuple(rgb[0, 0]) == (128, 64, 128) and tuple(rgb[1, 0]) == (0, 0, 0)
    assert L.num_classes("labelIds") == 34 and L.num_classes("trainIds") == 19
    with pytest.raises(L.CitysegError if hasattr(L, "CitysegError") else Exception, match="unknown label mode"):
        L.check_label_mode("colors")
