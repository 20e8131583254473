"""One frame: the scene drawn, then shaded (lighting field, shadows, tint, noise)."""

from __future__ import annotations

import cv2
import numpy as np

from cityseg.data.synth.scene import Scene
from cityseg.data.synth.spec import DEFAULT_SIZE, SPLITS


# ---- one frame -------------------------------------------------------------------------------
def _noise_tile(height: int, width: int) -> np.ndarray:
    """A fixed pixel-noise tile (int8), sliced at a random offset per frame; cached per size."""
    key = (height, width)
    tile = _NOISE.get(key)
    if tile is None:
        rng = np.random.default_rng(12345)
        tile = np.clip(rng.normal(0, 32, (height + 64, width + 64, 3)), -127, 127).astype(np.int8)
        _NOISE.clear()
        _NOISE[key] = tile
    return tile


_NOISE: dict[tuple[int, int], np.ndarray] = {}


def render_frame(seed: int, split: str, index: int, size: tuple[int, int] = DEFAULT_SIZE):
    """Render one frame: (image RGB uint8, labelIds uint8, instanceIds uint16, polygon dict)."""
    h, w = size
    rng = np.random.default_rng([int(seed), SPLITS.index(split), int(index)])
    scene = Scene(rng, h, w)
    cv = scene.draw()
    image = _shade(cv.image, scene, rng)
    polygons = {"imgHeight": h, "imgWidth": w, "objects": cv.objects}
    return image, cv.label, cv.instance, polygons


def _shade(image: np.ndarray, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Lighting field, cast shadows, tint, slight blur and pixel noise."""
    h, w = image.shape[:2]
    img = image.astype(np.float32)
    if rng.random() < 0.5:  # a shadow band from one side across the street
        side = rng.choice([-1, 1])
        mask = np.zeros((h, w), np.uint8)
        z0 = rng.uniform(3, 30)
        z1 = z0 + rng.uniform(5, 60)
        quad = scene.cam.ground_quad(scene.outer(side) + side * 5, side * rng.uniform(-2, 6), z0, z1)
        pts = scene.cv._prepare([quad])
        if pts:
            cv2.fillPoly(mask, pts, 1)
            img[mask.astype(bool)] *= rng.uniform(0.45, 0.75)
    field = rng.uniform(0.7, 1.3, (4, 8)).astype(np.float32)
    field = cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC)
    gain = rng.uniform(0.6, 1.25) * (1 + rng.normal(0, 0.06, 3))
    img *= field[..., None]
    img *= gain.astype(np.float32)
    if min(h, w) >= 64:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    tile = _noise_tile(h, w)
    oy, ox = rng.integers(0, 64, 2)
    sigma = rng.uniform(4, 12)
    img += tile[oy : oy + h, ox : ox + w].astype(np.float32) * np.float32(sigma / 32)
    return np.clip(img, 0, 255).astype(np.uint8)
