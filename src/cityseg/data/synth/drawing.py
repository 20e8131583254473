"""The drawing surface: labels, instances, image and shadows from the same polygons."""

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
    """Image, labelIds, instanceIds and the polygon list, all drawn from the same polygons; beside them the
    material map (``spec.M``, or the labelId for a surface of the label's own material) that texture reads."""

    def __init__(self, height: int, width: int):
        self.h, self.w = height, width
        self.image = np.zeros((height, width, 3), np.uint8)
        self.label = np.zeros((height, width), np.uint8)
        self.instance = np.zeros((height, width), np.uint16)
        self.shade = np.full((height, width), 255, np.uint8)  # 255 lit; cast shadows are darker
        self.material = np.zeros((height, width), np.uint8)
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
            if len(p) < 3 or not np.isfinite(p.sum()):
                continue
            x, y, bw, bh = cv2.boundingRect(p.astype(np.float32))  # one C call instead of min/max reductions
            if x + bw < 1 or y + bh < 1 or x > self.w - 1 or y > self.h - 1:
                continue
            if x < 0 or y < 0 or x + bw > self.w - 1 or y + bh > self.h - 1:
                p = _clip_polygon(p, 0, 0, self.w - 1, self.h - 1)
            if len(p) >= 3:
                out.append(np.round(p).astype(np.int32))
        return out

    def fill(self, polys, label_id: int, color, instance: int | None = None, material: int | None = None) -> None:
        """Fill ``polys`` in image (``color``, of ``material``: default the label's own) and labels; record
        them in the polygon list.

        A filled polygon is in front of every shadow drawn before it, so it clears the shade map. With
        ``color`` None only the labels change: the image behind shows through (the inside of a wheel)."""
        pts = self._prepare(polys)
        if not pts:
            return
        inst = int(label_id if instance is None else instance)
        col = None if color is None else _col(color)
        for p in pts:  # one call per polygon: fillPoly fills a polygon list even-odd (overlaps would be holes)
            cv2.fillPoly(self.label, [p], int(label_id))
            cv2.fillPoly(self.instance, [p], inst)
            if col is not None:
                cv2.fillPoly(self.image, [p], col)
                cv2.fillPoly(self.shade, [p], 255)
                cv2.fillPoly(self.material, [p], int(label_id if material is None else material))
        name = labels.ID_TO_LABEL[label_id].name
        self.objects.extend({"label": name, "polygon": p.tolist()} for p in pts)

    def paint(self, polys, color, material: int | None = None) -> None:
        """Image-only detail (windows, lane markings, shadows): the labels stay as they are; with
        ``material`` the material map changes too (else the surface keeps its texture)."""
        col = _col(color)
        for p in self._prepare(polys):
            cv2.fillPoly(self.image, [p], col)
            if material is not None:
                cv2.fillPoly(self.material, [p], int(material))

    def ring(self, outer, inner, color) -> None:
        """Image-only ring between two nested polygons (a tyre around a see-through wheel)."""
        pts = self._prepare([outer, inner])
        if len(pts) == 2:  # one fillPoly call over both contours fills even-odd: the ring
            cv2.fillPoly(self.image, pts, _col(color))

    def shadow(self, polys, darkness: float) -> None:
        """A cast shadow: the shade map (not the labels) falls to ``1 - darkness`` inside ``polys``."""
        v = int(255 * (1 - darkness))
        for p in self._prepare(polys):
            cv2.fillPoly(self.shade, [p], v)


def _col(c) -> tuple[int, int, int]:
    c = np.clip(np.asarray(c, np.float64), 0, 255)
    return (int(c[0]), int(c[1]), int(c[2]))


def circle(cx: float, cy: float, rx: float, ry: float | None = None, n: int = 16, jitter=None) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = 1.0 if jitter is None else 1.0 + jitter
    return np.stack([cx + rx * r * np.cos(t), cy + (rx if ry is None else ry) * r * np.sin(t)], 1)


def segment(p, q, width: float, width_q: float | None = None) -> np.ndarray:
    """A thick line segment as a quad (image coordinates), tapering to ``width_q`` at ``q``."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    d = q - p
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9) / 2
    wq = width if width_q is None else width_q
    return np.array([p + n * max(width, 1.0), q + n * max(wq, 1.0), q - n * max(wq, 1.0), p - n * max(width, 1.0)])
