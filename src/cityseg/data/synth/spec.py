"""What SynthCity generates: frame size, split sizes, cities, file kinds, the label ids it draws."""

from __future__ import annotations

from cityseg import labels

DEFAULT_SIZE = (1024, 2048)
#: default frame counts of ``cityseg synth`` (about Cityscapes' 6:1 train:val ratio)
DEFAULT_COUNTS = {"train": 300, "val": 50, "test": 25}
SPLITS = ("train", "val", "test")
#: synthetic city names; every split has its own cities, like real Cityscapes
CITIES = {"train": ("ashford", "brookvale", "carrow", "dunmere", "eastwick", "fallbrook"), "val": ("glenholt", "harwick"), "test": ("ivybridge", "juniper")}
MARKER = "synthcity.json"
#: generator version, recorded in the marker: frames of another version differ for the same seed
VERSION = 4
FRAME_ID = 19  # Cityscapes annotates frame 19 of every 30-frame snippet

# label ids by name, from the table (never hard-coded numbers)
L = {lab.name: lab.id for lab in labels.LABELS if lab.id >= 0}
HAS_INSTANCES = {lab.id for lab in labels.LABELS if lab.id >= 0 and lab.hasInstances}
FILE_KINDS = ("labelIds", "instanceIds", "color", "labelTrainIds", "polygons")
#: surface materials beyond the labels' own: the texture follows the material a pixel was painted with (glass
#: in a facade, paint on the road), not its label, so the texture does not give the class away
M = {"glass": 40, "paint": 41, "brick": 42, "plaster": 43, "bark": 44, "metal": 45}
