"""Objects standing on the ground with a heading: local metres to world and image points.

Local axes: ``l`` to the object's right, ``y`` up, ``f`` forward. A heading of 0 points along the street
(+Z, away from the camera), pi towards the camera, +-pi/2 across the street. Solids are convex point sets:
the convex hull of their projected points is their silhouette from any view.
"""

from __future__ import annotations

import cv2
import numpy as np


class Pose:
    """An object's place (x, z), base height ``y0`` and heading on the ground, seen by ``cam``."""

    def __init__(self, cam, x: float, z: float, heading: float = 0.0, y0: float = 0.0):
        self.cam, self.x, self.z, self.y0 = cam, float(x), float(z), float(y0)
        self.c, self.s = float(np.cos(heading)), float(np.sin(heading))

    def world(self, pts) -> np.ndarray:
        """(..., 3) local (l, y, f) -> (..., 3) world (X, Y, Z)."""
        p = np.asarray(pts, np.float64)
        l, y, f = p[..., 0], p[..., 1], p[..., 2]
        return np.stack([self.x + l * self.c + f * self.s, self.y0 + y, self.z - l * self.s + f * self.c], -1)

    def image(self, pts) -> np.ndarray:
        return self.cam.project(self.world(pts))

    def hull(self, pts) -> np.ndarray:
        """The silhouette of a convex solid given by its local points."""
        return cv2.convexHull(self.image(pts).reshape(-1, 2).astype(np.float32)).reshape(-1, 2)

    def depth(self, pts) -> float:
        """Distance from the camera to the centre of local points (for back-to-front ordering)."""
        w = self.world(np.asarray(pts, np.float64).reshape(-1, 3)).mean(0)
        return float(np.hypot(w[0], w[2]))

    def sees(self, normal, point) -> bool:
        """Whether the face through local ``point`` with local outward ``normal`` faces the camera."""
        n = self.world(normal) - self.world([0.0, 0.0, 0.0])
        p = self.world(point)
        to_cam = np.array([0.0, self.cam.height_m, 0.0]) - p
        return float(n @ to_cam) > 0

    def side_quad(self, l, f0, f1, y0, y1) -> np.ndarray:
        """A rectangle on the side plane ``lateral = l``."""
        return self.image([[l, y0, f0], [l, y0, f1], [l, y1, f1], [l, y1, f0]])

    def end_quad(self, f, l0, l1, y0, y1) -> np.ndarray:
        """A rectangle on the end plane ``forward = f``."""
        return self.image([[l0, y0, f], [l1, y0, f], [l1, y1, f], [l0, y1, f]])

    def disc(self, l, f, y, r, n: int = 14) -> np.ndarray:
        """A vertical disc in the side plane ``lateral = l`` (a wheel), centre (f, y)."""
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return self.image(np.stack([np.full_like(t, l), y + r * np.sin(t), f + r * np.cos(t)], 1))

    def wheel(self, l, f, r, width, n: int = 12) -> np.ndarray:
        """A tyre as a cylinder across the lateral axis: the silhouette of two discs."""
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        ring = np.stack([np.zeros_like(t), r + r * np.sin(t), f + r * np.cos(t)], 1)
        pts = np.concatenate([ring + [l - width / 2, 0, 0], ring + [l + width / 2, 0, 0]])
        return self.hull(pts)

    def footprint(self, l0, l1, f0, f1, grow: float = 0.0) -> np.ndarray:
        """World (X, Z) corners of a rectangle on the ground under the object."""
        c = [[l0 - grow, 0, f0 - grow], [l1 + grow, 0, f0 - grow], [l1 + grow, 0, f1 + grow], [l0 - grow, 0, f1 + grow]]
        return self.world(c)[:, [0, 2]]


def box(l0, l1, y0, y1, f0, f1) -> np.ndarray:
    """The eight corners of a local box."""
    return np.array([[l, y, f] for l in (l0, l1) for y in (y0, y1) for f in (f0, f1)], np.float64)
