"""A gallery of SynthCity frames beside their colour labels: ``python -m cityseg.data.synth.gallery OUT.png``.

Eight frames (seed 0, train split) rendered at the official size, downscaled, image and colour labels side by
side, two frames per row; the PNG is palette-quantised to stay small.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
from PIL import Image

from cityseg import labels
from cityseg.data.synth.render import render_frame


def gallery(frames: int = 8, tile: tuple[int, int] = (176, 352), seed: int = 0) -> np.ndarray:
    """An RGB mosaic: per frame the image and its colour labels, two frames per row."""
    th, tw = tile
    cells = []
    for i in range(frames):
        image, label, _, _ = render_frame(seed, "train", i)
        colour = labels.LABELID_PALETTE[label]
        cells.append(
            np.concatenate([cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA), cv2.resize(colour, (tw, th), interpolation=cv2.INTER_NEAREST)], 1)
        )
    gap = np.full((th, 6, 3), 255, np.uint8)
    rows = [np.concatenate([cells[i], gap, cells[i + 1]], 1) if i + 1 < len(cells) else cells[i] for i in range(0, len(cells), 2)]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, 0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cityseg.data.synth.gallery", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output PNG")
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args(argv)
    Image.fromarray(gallery(args.frames)).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(args.out, optimize=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
