"""The Cityscapes camera: real intrinsics and mounting, jittered a little per frame.

Intrinsics and extrinsics of the Cityscapes camera files (``camera/*.json``: fx 2262.52, fy 2265.30,
principal point (1096.98, 513.14) at 2048x1024, mounted ~1.22 m above the road, pitched down ~0.038 rad),
scaled to the frame size. Perspective, horizon and object sizes follow from them.

A curved street is the straight street bent sideways: ``bend`` (1/m) shifts every world point by
``bend * Z**2 / 2`` across before projection, so road edges, kerbs, facades and the objects along them
follow the same gentle arc. Polygons with long edges along Z are subdivided so that their edges curve.
"""

from __future__ import annotations

import numpy as np

#: at 2048x1024
FX, FY, CX, CY = 2262.52, 2265.30, 1096.98, 513.14
HEIGHT_M, PITCH = 1.22, 0.038


class Camera:
    """Pinhole camera over a flat ground plane; world X right, Y up, Z forward (metres), camera at (0, h, 0)."""

    def __init__(self, rng: np.random.Generator, height: int, width: int):
        s = width / 2048.0
        zoom = rng.uniform(0.98, 1.02)
        self.fx, self.fy = FX * s * zoom, FY * s * zoom
        self.cx = CX * s + rng.normal(0, 6) * s
        self.cy = CY * height / 1024.0 + rng.normal(0, 6) * s
        self.height_m = float(np.clip(rng.normal(HEIGHT_M, 0.05), 1.1, 1.4))
        pitch = float(np.clip(rng.normal(PITCH, 0.012), 0.0, 0.08))
        yaw = float(rng.normal(0, 0.02))  # the car is not exactly aligned with the street
        cp, sp, cy_, sy = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
        # rows: the camera's right, down and forward axes in world coordinates
        self.R = np.array([[cy_, 0.0, -sy], [-sp * sy, -cp, -sp * cy_], [cp * sy, -sp, cp * cy_]])
        self.f = self.fx
        self.bend = 0.0  # set by the scene for a curved street
        vp = self.project([[0.0, self.height_m, 1e6]])[0]
        self.xv, self.yh = float(vp[0]), float(vp[1])  # vanishing point of the street, horizon row

    def project(self, pts) -> np.ndarray:
        """(..., 3) world points (X, Y, Z) -> (..., 2) image points."""
        p = np.asarray(pts, np.float64)
        if self.bend:
            p = p.copy()
            p[..., 0] += self.bend * np.maximum(p[..., 2], 0.0) ** 2 / 2
        q = p - np.array([0.0, self.height_m, 0.0])
        c = q @ self.R.T
        z = np.maximum(c[..., 2], 0.3)
        return np.stack([self.cx + self.fx * c[..., 0] / z, self.cy + self.fy * c[..., 1] / z], -1)

    def scale(self, z: float) -> float:
        """Pixels per metre at depth ``z``."""
        return self.fy / max(z, 0.3)

    def polygon(self, pts) -> np.ndarray:
        """A world polygon (N, 3) -> image polygon; on a curved street its long edges curve."""
        p = np.asarray(pts, np.float64)
        if self.bend:
            steps = np.minimum(np.abs(np.roll(p[:, 2], -1) - p[:, 2]) // 2.0, 40).astype(int) + 1
            t = np.concatenate([np.arange(k) / k for k in steps])
            i = np.repeat(np.arange(len(p)), steps)
            p = p[i] + t[:, None] * (np.roll(p, -1, 0)[i] - p[i])
        return self.project(p)

    def ground_quad(self, x0, x1, z0, z1, y=0.0) -> np.ndarray:
        return self.polygon([[x0, y, z0], [x1, y, z0], [x1, y, z1], [x0, y, z1]])

    def ground_poly(self, xz, y=0.0) -> np.ndarray:
        """A polygon on the ground (or at height ``y``) from its (X, Z) corners."""
        xz = np.asarray(xz, np.float64)
        return self.polygon(np.stack([xz[:, 0], np.full(len(xz), y), xz[:, 1]], 1))

    def wall_x(self, x, z0, z1, y0, y1) -> np.ndarray:
        """A vertical quad in the plane X = x (a facade parallel to the road)."""
        return self.polygon([[x, y0, z0], [x, y0, z1], [x, y1, z1], [x, y1, z0]])

    def wall_z(self, z, x0, x1, y0, y1) -> np.ndarray:
        """A vertical quad in the plane Z = z (facing the camera)."""
        return self.project([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])

    def billboard(self, x, z, pts_uv) -> np.ndarray:
        """Upright figure at ground point (x, z): local (u right, v up) metres -> image points."""
        uv = np.asarray(pts_uv, np.float64).reshape(-1, 2)
        return self.project(np.stack([x + uv[:, 0], uv[:, 1], np.full(len(uv), float(z))], 1))
