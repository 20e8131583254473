"""SynthCity: procedurally generated street scenes in the exact official Cityscapes layout.

Every frame is a street built in world coordinates (metres) and projected through the Cityscapes
camera (its intrinsics, height and pitch, jittered a little per frame): ``camera``. Labels and image
come from the same polygons (``drawing``, ``cv2.fillPoly`` at full resolution, far to near so nearer
objects occlude farther ones): a straight or gently curving road with lanes, markings, crossings and
sometimes a cross street, kerbs, sidewalks, grass verges, buildings with windows, walls, fences, terrain,
trees and hedges (``scene``); poles with lights and signs, clutter (``objects``); cars of four body styles,
trucks, buses, trams (``vehicles``); pedestrians with limbs, riders on bicycles and motorcycles, parked
bicycles and motorcycles (``people``), all placed with a heading (``pose``); the void regions of real
frames (ego-vehicle bonnet, rectification border, out-of-roi corners). Street kind, weather and sun vary
per frame; class pixel shares come out near the published Cityscapes ones.

Materials are drawn from overlapping colour distributions (``palette``), then ``texture`` adds grain
and blotches per material, sky gradient and clouds, cast shadows, lighting, vignetting, blur and
sensor noise, and maps each frame's colour statistics near those of real Cityscapes frames.

Each frame is generated from its own RNG seeded by ``(seed, split, index)``, so the output does not
depend on the number of workers. Per frame five files are written (``_leftImg8bit.png`` and the
``_gtFine_{labelIds,instanceIds,color,labelTrainIds}.png`` / ``_gtFine_polygons.json``), each
atomically, ground truth first and image last; a frame interrupted half-way is removed again.
"""

from cityseg.data.synth.render import render_frame
from cityseg.data.synth.spec import DEFAULT_COUNTS, DEFAULT_SIZE, MARKER, SPLITS, VERSION
from cityseg.data.synth.write import frame_stem, generate

__all__ = ["DEFAULT_COUNTS", "DEFAULT_SIZE", "MARKER", "SPLITS", "VERSION", "frame_stem", "generate", "render_frame"]
