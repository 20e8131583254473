"""The drawing surface (labels, instances and image from the same polygons) and the colour distributions."""

from __future__ import annotations

import cv2
import numpy as np

from cityseg import labels
from cityseg.data.synth.spec import HAS_INSTANCES


# ---- drawing surface -------------------------------------------------------------------------
def _clip_polygon(pts: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Sutherland-Hodgman clip of an (N, 2) polygon to the rectangle [x0, x1] x [y0, y1]."""
    for axis, bound, keep_greater in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        if len(pts) == 0:
            break
        v = pts[:, axis] - bound
        inside = v >= 0 if keep_greater else v <= 0
        if inside.all():
            continue
        out = []
        n = len(pts)
        for i in range(n):
            p, q = pts[i], pts[(i + 1) % n]
            vp, vq = v[i], v[(i + 1) % n]
            if inside[i]:
                out.append(p)
            if inside[i] != inside[(i + 1) % n]:
                t = vp / (vp - vq)
                out.append(p + t * (q - p))
        pts = np.array(out, dtype=np.float64).reshape(-1, 2)
    return pts


class Canvas:
    """Image, labelIds, instanceIds and the polygon list, all drawn from the same polygons."""

    def __init__(self, height: int, width: int):
        self.h, self.w = height, width
        self.image = np.zeros((height, width, 3), np.uint8)
        self.label = np.zeros((height, width), np.uint8)
        self.instance = np.zeros((height, width), np.uint16)
        self.objects: list[dict] = []
        self._next_k: dict[int, int] = {}

    def new_instance(self, label_id: int) -> int:
        """Instance id ``labelId*1000+k`` for classes with instances, else the labelId."""
        if label_id not in HAS_INSTANCES:
            return label_id
        k = self._next_k.get(label_id, 0)
        self._next_k[label_id] = k + 1
        return label_id * 1000 + k

    def _prepare(self, polys) -> list[np.ndarray]:
        out = []
        for p in polys:
            p = np.asarray(p, np.float64).reshape(-1, 2)
            if len(p) < 3 or not np.isfinite(p).all():
                continue
            lo, hi = p.min(0), p.max(0)
            if hi[0] < 0 or hi[1] < 0 or lo[0] > self.w - 1 or lo[1] > self.h - 1:
                continue
            if lo[0] < 0 or lo[1] < 0 or hi[0] > self.w - 1 or hi[1] > self.h - 1:
                p = _clip_polygon(p, 0, 0, self.w - 1, self.h - 1)
            if len(p) >= 3:
                out.append(np.round(p).astype(np.int32))
        return out

    def fill(self, polys, label_id: int, color, instance: int | None = None) -> None:
        """Fill ``polys`` in image (``color``) and labels; record them in the polygon list."""
        pts = self._prepare(polys)
        if not pts:
            return
        inst, col = int(label_id if instance is None else instance), _col(color)
        for p in pts:  # one call per polygon: fillPoly fills a polygon list even-odd (overlaps would be holes)
            cv2.fillPoly(self.label, [p], int(label_id))
            cv2.fillPoly(self.instance, [p], inst)
            cv2.fillPoly(self.image, [p], col)
        name = labels.ID_TO_LABEL[label_id].name
        self.objects.extend({"label": name, "polygon": p.tolist()} for p in pts)

    def paint(self, polys, color) -> None:
        """Image-only detail (windows, lane markings, shadows): the labels stay as they are."""
        col = _col(color)
        for p in self._prepare(polys):
            cv2.fillPoly(self.image, [p], col)


def _col(c) -> tuple[int, int, int]:
    c = np.clip(np.asarray(c, np.float64), 0, 255)
    return (int(c[0]), int(c[1]), int(c[2]))


def circle(cx: float, cy: float, rx: float, ry: float | None = None, n: int = 16, jitter=None) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = 1.0 if jitter is None else 1.0 + jitter
    return np.stack([cx + rx * r * np.cos(t), cy + (rx if ry is None else ry) * r * np.sin(t)], 1)


def segment(p, q, width: float) -> np.ndarray:
    """A thick line segment as a quad (image coordinates)."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    d = q - p
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9) * max(width, 1.0) / 2
    return np.array([p + n, q + n, q - n, p - n])


# ---- colours ---------------------------------------------------------------------------------
class Palette:
    """Material colour samplers with deliberately overlapping distributions."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def grey(self, lo=60, hi=190, tint=8):
        return self.rng.uniform(lo, hi) + self.rng.normal(0, tint, 3)

    def pick(self, *options):
        """options: (weight, sampler) pairs."""
        w = np.array([o[0] for o in options], float)
        return options[self.rng.choice(len(options), p=w / w.sum())][1]()

    def jitter(self, c, amount=12):
        return np.asarray(c, float) + self.rng.normal(0, amount, 3)

    def beige(self):
        return np.array([190, 170, 140]) * self.rng.uniform(0.55, 1.15) + self.rng.normal(0, 10, 3)

    def brick(self):
        return np.array([150, 85, 65]) * self.rng.uniform(0.6, 1.25) + self.rng.normal(0, 10, 3)

    def green(self, dark=False):
        base = np.array([70, 110, 50]) if not dark else np.array([45, 75, 40])
        return base * self.rng.uniform(0.6, 1.4) + self.rng.normal(0, 12, 3)

    def pastel(self):
        return self.rng.uniform(140, 230, 3)

    def vivid(self):
        c = self.rng.uniform(0, 80, 3)
        c[self.rng.integers(3)] = self.rng.uniform(130, 230)
        return c

    def road(self):
        return self.pick((5, lambda: self.grey(55, 140, 5)), (1, lambda: self.grey(70, 120, 5) + [8, 0, 10]))

    def sidewalk(self):
        return self.pick((4, lambda: self.grey(85, 185, 6)), (2, self.beige), (1, self.brick))

    def building(self):
        return self.pick((4, lambda: self.grey(60, 215, 6)), (3, self.beige), (2, self.brick), (2, self.pastel))

    def wall(self):
        return self.pick((4, lambda: self.grey(70, 200, 6)), (2, self.beige), (1, self.brick), (1, lambda: self.green(True)))

    def fence(self):
        return self.pick(
            (3, lambda: self.green(True)), (3, lambda: self.grey(50, 190, 6)), (2, lambda: self.beige() * 0.7), (1, lambda: self.grey(200, 240, 4))
        )

    def pole(self):
        return self.pick((5, lambda: self.grey(50, 170, 5)), (2, lambda: self.green(True) * 0.8), (1, lambda: self.grey(20, 50, 3)))

    def vegetation(self):
        return self.pick((6, lambda: self.green()), (3, lambda: self.green(True)), (1, lambda: np.array([150, 130, 60]) * self.rng.uniform(0.6, 1.1)))

    def terrain(self):
        return self.pick(
            (4, lambda: self.green()),
            (3, lambda: np.array([140, 130, 80]) * self.rng.uniform(0.6, 1.2)),
            (2, lambda: np.array([120, 95, 70]) * self.rng.uniform(0.6, 1.2)),
        )

    def sky(self):
        return self.pick(
            (5, lambda: self.grey(150, 240, 5) + [0, 3, 10]),
            (3, lambda: np.array([110, 150, 200]) * self.rng.uniform(0.8, 1.2)),
            (1, lambda: np.array([200, 180, 160]) * self.rng.uniform(0.8, 1.15)),
        )

    # fmt: off
    def vehicle(self):
        return self.pick((4, lambda: self.grey(25, 230, 4)), (2, self.vivid), (1, self.beige), (1, lambda: self.green(True)),
                         (1, lambda: np.array([30, 40, 90]) * self.rng.uniform(0.7, 1.6)))

    def cloth(self):
        return self.pick((4, lambda: self.grey(20, 200, 8)), (3, self.vivid), (2, self.beige), (1, lambda: self.green(True)),
                         (2, lambda: np.array([40, 50, 100]) * self.rng.uniform(0.6, 1.5)))
    # fmt: on

    def skin(self):
        return np.array([225, 180, 150]) * self.rng.uniform(0.4, 1.05) + self.rng.normal(0, 6, 3)

    def glass(self, sky):
        return self.pick((3, lambda: self.grey(20, 70, 5) + [0, 5, 12]), (1, lambda: np.asarray(sky) * self.rng.uniform(0.5, 0.9)))
