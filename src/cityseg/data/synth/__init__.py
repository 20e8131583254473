"""SynthCity: procedurally generated street scenes in the exact official Cityscapes layout.

Every frame is a perspective street view built in world coordinates (metres) and projected through
a pinhole camera whose height, focal length, horizon and vanishing point vary per frame. Labels and
image come from the same polygons (drawn with ``cv2.fillPoly`` at full resolution, far to near, so
nearer objects occlude farther ones): sky, road with lane markings and crosswalks, parking strips,
sidewalks with kerbs, buildings with windows on both sides, walls, fences, terrain, vegetation,
poles with traffic lights and signs, cars / trucks / buses / trams, persons, riders on bicycles and
motorcycles, parked bicycles, static / dynamic clutter, and the void regions of real frames (ego
vehicle at the bottom, rectification border, out-of-roi corners).

Colours are drawn from overlapping material distributions (grey cars on grey roads in front of grey
buildings under a grey sky, green fences next to green bushes, random vehicle and clothing colours),
then shaded by a per-scene low-frequency lighting field, cast shadows, a colour tint and pixel noise:
a per-pixel colour lookup cannot recover the labels, shape and context can.

Each frame is generated from its own RNG seeded by ``(seed, split, index)``, so the output does not
depend on the number of workers. Per frame five files are written (``_leftImg8bit.png`` and the
``_gtFine_{labelIds,instanceIds,color,labelTrainIds}.png`` / ``_gtFine_polygons.json``), each
atomically, ground truth first and image last; a frame interrupted half-way is removed again.
"""

from cityseg.data.synth.render import render_frame
from cityseg.data.synth.spec import DEFAULT_COUNTS, DEFAULT_SIZE, MARKER, SPLITS
from cityseg.data.synth.write import frame_stem, generate

__all__ = ["DEFAULT_COUNTS", "DEFAULT_SIZE", "MARKER", "SPLITS", "frame_stem", "generate", "render_frame"]
