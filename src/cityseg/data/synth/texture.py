"""Per-pixel appearance: material texture, sky, shading and the camera's look, all vectorised.

Noise tiles are made once per frame size from a fixed seed and sliced at a random offset per frame,
so texture costs a few array operations per frame and stays deterministic. Texture follows the material map
(``Canvas.material``), and every material's texture strength is drawn per frame around its typical value:
facades of brick or rough plaster carry as much fine detail as foliage, so texture alone does not tell a
tree from a building or asphalt from paving. The last step maps each
frame's colour statistics towards those of real Cityscapes frames (the camera's exposure and white
balance), jittered per frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from cityseg.data.synth.spec import L, M

#: mean and std of real Cityscapes leftImg8bit frames, per RGB channel (0..1)
REAL_MEAN = np.array([0.287, 0.325, 0.284])
REAL_STD = np.array([0.176, 0.181, 0.178])
PAD = 64  # tiles are larger than the frame by this, for random offsets


def _lut(values: dict[str, float], default: float = 0.0) -> np.ndarray:
    lut = np.full(256, default, np.float32)
    for name, v in values.items():
        lut[L[name] if name in L else M[name]] = v
    return lut


# relative amplitude of fine grain, of blotchy low-frequency variation and of the brick pattern per material
FINE = _lut(
    {"road": 0.1, "sidewalk": 0.08, "parking": 0.08, "ground": 0.12, "terrain": 0.22, "vegetation": 0.22, "building": 0.07, "wall": 0.1}
    | {"brick": 0.12, "plaster": 0.18, "bark": 0.2, "glass": 0.015, "paint": 0.04, "metal": 0.02},
    0.03,
)
BLOTCH = _lut(
    {"road": 0.05, "sidewalk": 0.05, "parking": 0.05, "ground": 0.1, "terrain": 0.2, "vegetation": 0.38, "building": 0.06, "wall": 0.08, "sky": 0.0}
    | {"brick": 0.1, "plaster": 0.14, "bark": 0.1, "glass": 0.03, "paint": 0.06, "ego vehicle": 0.02},
    0.03,
)
PATTERN = _lut({"brick": 0.3})
#: spread (log-normal sigma) of the per-frame, per-material texture strength
STRENGTH_SPREAD = 0.45

_TILES: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}


def tiles(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(fine grain, blotches, sensor noise, bricks) tiles of (height+PAD, width+PAD); cached per size."""
    key = (height, width)
    if key not in _TILES:
        rng = np.random.default_rng(12345)
        h, w = height + PAD, width + PAD
        fine = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (3, 3), 0.7)
        fine /= fine.std() + 1e-6
        blotch = np.zeros((h, w), np.float32)
        for cell, weight in ((4, 0.35), (16, 0.5), (64, 0.8), (256, 0.6)):
            cell = max(1, cell * width // 2048)
            grid = rng.normal(0, 1, (h // cell + 2, w // cell + 2)).astype(np.float32)
            blotch += weight * cv2.resize(grid, (w + 2 * cell, h + 2 * cell), interpolation=cv2.INTER_CUBIC)[cell : cell + h, cell : cell + w]
        blotch /= blotch.std() + 1e-6
        sensor = np.clip(rng.normal(0, 32, (h, w, 3)), -127, 127).astype(np.int8)
        _TILES.clear()
        _TILES[key] = (fine, blotch, sensor, _bricks(h, w, rng))
    return _TILES[key]


def _bricks(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Courses of bricks in staggered bond: -1 on the mortar joints, a random shade per brick elsewhere."""
    course = max(2, round(7 * w / 2048))
    length = 3 * course
    rows = np.arange(h)[:, None] // course
    cols = (np.arange(w)[None, :] + (rows % 2) * (length // 2)) // length
    shade = rng.normal(0, 0.5, (h // course + 1, w // length + 2)).astype(np.float32)
    out = shade[rows, cols]
    out[np.arange(h) % course == 0, :] = -1.0
    joints = ((np.arange(w)[None, :] + (rows % 2) * (length // 2)) % length) == 0
    out[joints] = -1.0
    return out


def sky(image: np.ndarray, label: np.ndarray, horizon: float, base, rng: np.random.Generator, overcast: bool) -> None:
    """Repaint the sky pixels: brighter towards the horizon, with clouds from the blotch tile.

    Computed at a quarter of the resolution and scaled up: sky and clouds are smooth."""
    ys, _ = np.nonzero(label[:, :: max(1, label.shape[1] // 256)] == L["sky"])
    if len(ys) == 0:
        return
    h, w = label.shape
    y1 = int(ys.max()) + 2
    _, blotch, _, _ = tiles(h, w)
    oy, ox = rng.integers(0, PAD, 2)
    sh, sw = max(1, y1 // 4), max(1, w // 4)
    t = np.clip((np.arange(sh, dtype=np.float32) + 0.5) * (y1 / sh) / max(horizon, 1.0), 0, 1)[:, None, None]
    base = np.asarray(base, np.float32)
    top = base * np.array([0.8, 0.88, 1.0], np.float32) * (0.92 if overcast else 0.75)
    grad = top * (1 - t) + np.minimum(base * 1.08 + 8, 255) * t
    clouds = cv2.resize(blotch[oy : oy + y1, ox : ox + w], (sw, sh), interpolation=cv2.INTER_AREA)
    cloud = np.clip((clouds - rng.uniform(-0.2, 1.2)) * rng.uniform(0.3, 0.8), 0, 1)[..., None]
    white = np.float32(rng.uniform(200, 250)) if not overcast else base.mean() * 1.05
    small = np.clip(grad * (1 - cloud) + white * cloud, 0, 255).astype(np.uint8)
    sky_img = cv2.resize(small, (w, y1), interpolation=cv2.INTER_LINEAR)
    mask = (label[:y1] == L["sky"]).astype(np.uint8)
    cv2.copyTo(sky_img, mask, image[:y1])


def finish(image: np.ndarray, material: np.ndarray, shade: np.ndarray, rng: np.random.Generator, randomize: bool = False) -> np.ndarray:
    """Texture, shadows, lighting, vignetting, exposure and white balance, blur and sensor noise -> uint8 RGB.

    The per-pixel factor (texture x shadow x lighting x vignetting) is applied in 8-bit fixed point and the
    per-channel exposure as a lookup table: 8-bit operations keep this step fast."""
    h, w = material.shape
    fine, blotch, sensor, bricks = tiles(h, w)
    oy, ox, oy2, ox2 = rng.integers(0, PAD, 4)
    spread = (0.3, 2.5) if randomize else (np.exp(-2 * STRENGTH_SPREAD), np.exp(2 * STRENGTH_SPREAD))
    f_amp = FINE * np.clip(rng.lognormal(0, STRENGTH_SPREAD, 256), *spread).astype(np.float32)
    b_amp = BLOTCH * np.clip(rng.lognormal(0, STRENGTH_SPREAD, 256), *spread).astype(np.float32)
    mod = cv2.multiply(f_amp[material], fine[oy : oy + h, ox : ox + w])
    mod = cv2.add(mod, cv2.multiply(b_amp[material], blotch[oy2 : oy2 + h, ox2 : ox2 + w]))
    mod = cv2.add(mod, cv2.multiply(PATTERN[material], bricks[oy2 : oy2 + h, ox : ox + w]))
    if min(h, w) >= 64:
        shade = cv2.blur(shade, (3, 3))
    light = cv2.resize(rng.uniform(0.85, 1.15, (3, 6)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    light = cv2.multiply(light, _vignette(h, w, rng.uniform(0.0, 0.35)))
    light = cv2.multiply(light, shade, dtype=cv2.CV_32F, scale=128 / 255)
    mod8 = cv2.convertScaleAbs(cv2.add(cv2.multiply(mod, light), light))  # (1 + texture) * light, 128 = 1
    img = cv2.multiply(image, cv2.merge([mod8, mod8, mod8]), scale=1 / 128)
    # exposure and white balance: per-channel affine towards a per-frame target near the real statistics
    sub = img[::8, ::8].reshape(-1, 3).astype(np.float32)
    m, s = sub.mean(0) / 255, sub.std(0) / 255 + 1e-3
    if randomize:
        target_m = np.clip(rng.normal(REAL_MEAN.mean(), 0.08) + rng.normal(0, 0.05, 3), 0.12, 0.6)
        target_s = np.clip(rng.normal(0.18, 0.05, 3), 0.08, 0.3)
    else:
        target_m = REAL_MEAN + rng.normal(0, 0.035) + rng.normal(0, 0.01, 3)
        target_s = REAL_STD * rng.normal(1.03, 0.08) * rng.normal(1.0, 0.02, 3)
    a = np.clip(target_s / s, 0.4, 2.5)
    b = (target_m - a * m) * 255
    lut = np.clip(np.arange(256)[:, None] * a[None, :] + b[None, :], 0, 255).astype(np.uint8).reshape(256, 1, 3)
    out = cv2.LUT(img, lut)
    if min(h, w) >= 64:
        out = cv2.GaussianBlur(out, (3, 3), rng.uniform(0.5, 1.0))
    noise = cv2.multiply(sensor[oy : oy + h, ox2 : ox2 + w], 1.0, dtype=cv2.CV_16S, scale=rng.uniform(1.5, 5.0) / 32)
    return cv2.add(out, noise, dtype=cv2.CV_8U)


_VIG: dict[tuple[int, int], np.ndarray] = {}


def _vignette(h: int, w: int, strength: float) -> np.ndarray:
    """1 in the centre, 1 - strength in the far corners (radial, squared)."""
    if (h, w) not in _VIG:
        y = (np.arange(h, dtype=np.float32) / h - 0.5)[:, None] * 2
        x = (np.arange(w, dtype=np.float32) / w - 0.5)[None, :] * 2
        _VIG.clear()
        _VIG[(h, w)] = (x * x * 0.5 + y * y * 0.5).astype(np.float32)
    return 1.0 - np.float32(strength) * _VIG[(h, w)]
