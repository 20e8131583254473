"""One frame: the scene drawn, then textured and shaded, with the look of the Cityscapes camera."""

from __future__ import annotations

import numpy as np

from cityseg.data.synth import texture
from cityseg.data.synth.scene import Scene
from cityseg.data.synth.spec import DEFAULT_SIZE, SPLITS


def render_frame(seed: int, split: str, index: int, size: tuple[int, int] = DEFAULT_SIZE, randomize: bool = False):
    """Render one frame: (image RGB uint8, labelIds uint8, instanceIds uint16, polygon dict).

    ``randomize``: domain randomisation (random material colours, texture strengths and exposure)."""
    h, w = size
    rng = np.random.default_rng([int(seed), SPLITS.index(split), int(index)] + ([1] if randomize else []))
    scene = Scene(rng, h, w, randomize)
    cv = scene.draw()
    texture.sky(cv.image, cv.label, scene.cam.yh, scene.sky_color, rng, scene.overcast)
    image = texture.finish(cv.image, cv.material, cv.shade, rng, randomize)
    polygons = {"imgHeight": h, "imgWidth": w, "objects": cv.objects}
    return image, cv.label, cv.instance, polygons
