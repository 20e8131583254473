"""SynthCity objects one by one: jointed persons, two-wheelers and their riders, vehicle body styles,
curved streets. Each object is drawn alone on an empty canvas of a straight street, then checked for its
class, its instance ids and its size through the camera."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cityseg.data import synth
from cityseg.data.synth.camera import Camera
from cityseg.data.synth.drawing import Canvas
from cityseg.data.synth.scene import Scene
from cityseg.data.synth.spec import L
from cityseg.data.synth.vehicles import CAR_STYLES

H, W = 512, 1024


def _scene(seed: int = 0) -> Scene:
    """A straight street's scene with an empty canvas."""
    scene = Scene(np.random.default_rng(seed), H, W)
    scene.curve = scene.cam.bend = 0.0
    scene.cv = Canvas(H, W)
    return scene


def _mask(scene, name):
    return scene.cv.label == L[name]


def _extent(mask):
    ys, xs = np.nonzero(mask)
    return ys.max() - ys.min() + 1, xs.max() - xs.min() + 1


@pytest.mark.parametrize("heading", [0.0, np.pi, np.pi / 2])
def test_person_is_one_instance_of_a_real_height(heading):
    """Front, back and side views: one person instance, 1.0-1.9 m tall at its depth, taller than wide."""
    for seed, z in ((0, 8.0), (1, 15.0), (2, 25.0)):
        scene = _scene(seed)
        scene.person(0.5, z, heading)
        mask = _mask(scene, "person")
        assert set(np.unique(scene.cv.instance[mask])) == {L["person"] * 1000}
        tall, wide = _extent(mask)
        metres = tall / scene.cam.scale(z)
        assert 0.9 < metres < 2.0, metres
        assert wide < tall * 0.75
        assert set(np.unique(scene.cv.label)) == {0, L["person"]}


def test_walkers_seen_from_the_side_have_two_legs_apart():
    """A walking person seen from the side: the feet are apart (a gap between the legs near the ground)."""
    gaps = 0
    for seed in range(6):
        scene = _scene(seed)
        scene.person(0.0, 8.0, np.pi / 2, moving=True)
        mask = _mask(scene, "person")
        ys = np.nonzero(mask.any(1))[0]
        row = mask[ys.max() - int((ys.max() - ys.min()) * 0.1)]  # a tenth of the height above the feet
        runs = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
        gaps += int((runs == 1).sum() >= 2)
    assert gaps >= 4


@pytest.mark.parametrize("motor", [True, False])
@pytest.mark.parametrize("heading", [0.0, np.pi / 2])
def test_rider_sits_on_the_two_wheeler(motor, heading):
    """The rider is its own class and instance, touching the vehicle, which keeps its class below."""
    scene = _scene(3)
    scene.two_wheeler(0.0, 10.0, heading, motor=motor, rider=True)
    vehicle, rider = _mask(scene, "motorcycle" if motor else "bicycle"), _mask(scene, "rider")
    assert vehicle.sum() > 50 and rider.sum() > 50
    assert set(np.unique(scene.cv.instance[rider])) == {L["rider"] * 1000}
    assert np.unique(scene.cv.instance[vehicle]).tolist() == [L["motorcycle" if motor else "bicycle"] * 1000]
    near = cv2.dilate(rider.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert (near & vehicle).any()
    assert np.nonzero(vehicle)[0].max() > np.nonzero(rider)[0].max()  # the wheels reach lower than the feet


def test_frames_have_riders_on_motorcycles():
    """Fixed-seed frames: rider pixels adjacent to motorcycle pixels in some of them, with rider instance ids."""
    hits = 0
    for i in range(40):
        _, lab, inst, _ = synth.render_frame(0, "train", i, (256, 512))
        rider = lab == L["rider"]
        if rider.any():
            assert (inst[rider] // 1000 == L["rider"]).all()
        near = cv2.dilate(rider.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        hits += bool((near & (lab == L["motorcycle"])).any())
    assert hits >= 2


@pytest.mark.parametrize("style", list(CAR_STYLES))
def test_car_styles_from_behind_and_from_the_side(style):
    """Every body style: one car instance; seen from the side it is longer than high, from behind not."""
    ratios = {}
    for heading in (0.0, np.pi / 2):
        scene = _scene(4)
        dims = (*[float(np.mean(r)) for r in CAR_STYLES[style][1:4]], style)
        scene.car(0.0, 12.0, heading, dims)
        mask = _mask(scene, "car")
        assert np.unique(scene.cv.instance[mask]).tolist() == [L["car"] * 1000]
        tall, wide = _extent(mask)
        assert 0.8 < tall / scene.cam.scale(12.0) / dims[2] < 1.3  # the roof height, seen at its depth
        ratios[heading] = wide / tall
    assert ratios[np.pi / 2] > 2.0 and ratios[0.0] < 1.8, ratios


@pytest.mark.parametrize("kind", ["truck", "bus", "train"])
def test_big_vehicles_carry_their_class(kind):
    scene = _scene(5)
    dims = scene.vehicle_dims(kind)
    scene.vehicle(kind, 2.0, 20.0, 0.0, dims)
    mask = _mask(scene, kind)
    assert mask.sum() > 500
    assert np.unique(scene.cv.instance[mask]).tolist() == [L[kind] * 1000]
    assert set(np.unique(scene.cv.label)) == {0, L[kind]}


def test_curved_street_bends_straight_lines():
    """A line along the street projects to a straight image line, and to a curve once the street bends."""
    cam = Camera(np.random.default_rng(0), H, W)
    line = np.stack([np.full(8, 3.0), np.zeros(8), np.linspace(5, 60, 8)], 1)

    def bow(pts):  # the largest distance of the points from the chord through the end points
        a, b = pts[0], pts[-1]
        d = b - a
        return np.abs(d[0] * (pts[:, 1] - a[1]) - d[1] * (pts[:, 0] - a[0])).max() / np.hypot(*d)

    assert bow(cam.project(line)) < 1e-6
    cam.bend = 1 / 150
    assert bow(cam.project(line)) > 5
    assert len(cam.ground_quad(-3, 3, 1, 100)) > 4  # long edges are subdivided to curve


def test_curved_frames_render_deterministically():
    """Some frames of a fixed seed are curved streets; they render the same twice, with the street's classes."""
    curved = [i for i in range(20) if Scene(np.random.default_rng([0, 0, i]), 64, 128).curve]
    assert curved
    a, b = (synth.render_frame(0, "train", curved[0], (128, 256)) for _ in range(2))
    for x, y in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(x, y)
    assert {L["road"], L["sidewalk"], L["building"]} <= set(np.unique(a[1]).tolist())
