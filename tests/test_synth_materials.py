"""SynthCity materials: windows, shop fronts, limbs and road paint change the material map (which texture
reads) but never the labels, and texture follows the material, not the label."""

from __future__ import annotations

import numpy as np

from cityseg.data.synth import texture
from cityseg.data.synth.drawing import Canvas
from cityseg.data.synth.scene import Scene
from cityseg.data.synth.spec import L, M

H, W = 512, 1024


def _scene(seed: int) -> Scene:
    scene = Scene(np.random.default_rng(seed), H, W)
    scene.curve = scene.cam.bend = 0.0
    scene.cv = Canvas(H, W)
    return scene


def test_facade_details_are_materials_of_the_building():
    found = set()
    for seed in range(12):
        scene = _scene(seed)
        scene.building(1, scene.outer(1) + 0.5, 6.0, 30.0, 15.0)
        building = scene.cv.label == L["building"]
        material = scene.cv.material
        assert building.any() and set(np.unique(scene.cv.label)) <= {L["unlabeled"], L["building"]}
        kinds = set(np.unique(material[building]).tolist())
        assert kinds <= {L["building"], M["glass"], M["paint"], M["brick"], M["plaster"], M["metal"]}
        outside = (material[~building] != 0).sum()  # nothing painted beside the facade but rounding at its edges
        assert M["glass"] in kinds and outside <= 0.001 * building.sum()
        found |= kinds
    assert {M["brick"], M["plaster"], L["building"], M["metal"]} <= found


def test_tree_limbs_are_bark_inside_the_crowns_label():
    scene = _scene(3)
    scene.tree(2.0, 12.0)
    veg = scene.cv.label == L["vegetation"]
    bark = scene.cv.material == M["bark"]
    assert veg.sum() > 1000 and bark.sum() > 100 and not (bark & ~veg).any()
    ys, _ = np.nonzero(bark)
    crown_top = np.nonzero(veg)[0].min()
    assert ys.min() < crown_top + 0.5 * (np.nonzero(veg)[0].max() - crown_top)  # limbs reach up into the crown


def test_texture_follows_the_material_not_the_label():
    label = np.full((128, 256), L["building"], np.uint8)
    image = np.full((128, 256, 3), 120, np.uint8)
    shade = np.full((128, 256), 255, np.uint8)
    spread = []
    for material in (M["glass"], M["brick"]):
        out = texture.finish(image.copy(), np.full_like(label, material), shade, np.random.default_rng(0))
        detail = out.astype(np.float32) - np.roll(out, 1, axis=1)  # neighbour differences: fine texture only
        spread.append(detail[8:-8, 8:-8].std())
    assert spread[1] > 2 * spread[0]
