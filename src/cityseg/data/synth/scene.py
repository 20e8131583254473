"""A street scene in world coordinates, projected through a per-frame pinhole camera."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from cityseg.data.synth.drawing import Canvas, Palette, circle, segment
from cityseg.data.synth.spec import L


# ---- camera ----------------------------------------------------------------------------------
class Camera:
    """Pinhole camera over a flat ground plane; world X right, Y up (height), Z forward (metres)."""

    def __init__(self, rng: np.random.Generator, height: int, width: int):
        self.f = width * rng.uniform(0.95, 1.2)
        self.height_m = rng.uniform(1.15, 1.95)
        # a higher camera looks down a little more: the horizon moves up in the image
        self.yh = height * (0.47 - 0.09 * (self.height_m - 1.15) / 0.8 + rng.uniform(-0.03, 0.03))
        self.xv = width * rng.uniform(0.42, 0.58)

    def project(self, pts) -> np.ndarray:
        """(..., 3) world points (X, Y, Z) -> (..., 2) image points."""
        p = np.asarray(pts, np.float64)
        z = np.maximum(p[..., 2], 0.3)
        return np.stack([self.xv + self.f * p[..., 0] / z, self.yh + self.f * (self.height_m - p[..., 1]) / z], -1)

    def scale(self, z: float) -> float:
        """Pixels per metre at depth ``z``."""
        return self.f / max(z, 0.3)

    def ground_quad(self, x0, x1, z0, z1, y=0.0) -> np.ndarray:
        return self.project([[x0, y, z0], [x1, y, z0], [x1, y, z1], [x0, y, z1]])

    def wall_x(self, x, z0, z1, y0, y1) -> np.ndarray:
        """A vertical quad in the plane X = x (a facade parallel to the road)."""
        return self.project([[x, y0, z0], [x, y0, z1], [x, y1, z1], [x, y1, z0]])

    def wall_z(self, z, x0, x1, y0, y1) -> np.ndarray:
        """A vertical quad in the plane Z = z (facing the camera)."""
        return self.project([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])

    def billboard(self, x, z, pts_uv) -> np.ndarray:
        """Upright figure at ground point (x, z): local (u right, v up) metres -> image points."""
        uv = np.asarray(pts_uv, np.float64)
        s = self.scale(z)
        return np.stack([self.xv + self.f * x / z + s * uv[:, 0], self.yh + self.f * self.height_m / z - s * uv[:, 1]], 1)


# ---- scene -----------------------------------------------------------------------------------
class Scene:
    def __init__(self, rng: np.random.Generator, height: int, width: int):
        self.rng = rng
        self.cv = Canvas(height, width)
        self.cam = Camera(rng, height, width)
        self.pal = Palette(rng)
        self.h, self.w = height, width
        self.z_far = rng.uniform(90, 160)
        lanes = int(rng.choice([2, 2, 3, 4]))
        self.lane_w = rng.uniform(3.0, 3.6)
        half = lanes * self.lane_w / 2
        self.cam_x = rng.uniform(-half + 1.4, half - 1.4)  # camera offset from the road centre
        self.road = (-half - self.cam_x, half - self.cam_x)  # road edges relative to the camera
        self.lanes = lanes
        self.sky_color = self.pal.sky()
        self.sidewalk_w = {s: rng.uniform(1.8, 5.0) for s in (-1, 1)}
        self.kerb = rng.uniform(0.08, 0.16)
        self.parking = {s: rng.random() < 0.25 for s in (-1, 1)}
        self.items: list[tuple[float, Callable[[], None]]] = []  # (depth, draw) of standing objects

    # geometry helpers
    def edge(self, side: int) -> float:
        return self.road[1] if side > 0 else self.road[0]

    def outer(self, side: int) -> float:
        return self.edge(side) + side * self.sidewalk_w[side]

    def add(self, z: float, fn: Callable[[], None]) -> None:
        self.items.append((z, fn))

    # ---- layers
    def draw(self) -> Canvas:
        self.sky()
        self.backdrop()
        self.ground()
        for side in (-1, 1):
            self.side_zones(side)
            self.street_furniture(side)
        self.traffic()
        self.people()
        for _, fn in sorted(self.items, key=lambda it: -it[0]):  # far to near
            fn()
        self.void_regions()
        return self.cv

    def sky(self):
        cv, h, w = self.cv, self.h, self.w
        cv.fill([[[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]], L["sky"], self.sky_color)
        # soft bands and clouds (image only)
        top = self.cam.yh
        for i in range(4):
            y0, y1 = top * i / 4, top * (i + 1) / 4 + 2
            self.cv.paint([[[0, y0], [w, y0], [w, y1], [0, y1]]], np.asarray(self.sky_color) * (1.0 + 0.05 * (i - 2)))
        for _ in range(self.rng.integers(0, 7)):
            cx, cy = self.rng.uniform(0, w), self.rng.uniform(0, top)
            r = self.rng.uniform(0.03, 0.15) * w
            self.cv.paint(
                [circle(cx, cy, r, r * 0.3, 20, self.rng.normal(0, 0.15, 20))], self.pal.jitter(np.asarray(self.sky_color) * self.rng.uniform(0.9, 1.15), 6)
            )

    def backdrop(self):
        """Closes the street at z_far: a row of far buildings or trees across the view."""
        z, cam, rng = self.z_far, self.cam, self.rng
        x = -90.0
        while x < 90:
            wd = rng.uniform(6, 20)
            if rng.random() < 0.7:
                hb = rng.uniform(6, 30)
                self.cv.fill([cam.wall_z(z, x, x + wd, 0, hb)], L["building"], self.pal.building())
            else:
                hb = rng.uniform(4, 12)
                self.cv.fill(
                    [cam.billboard(x + wd / 2, z, circle(0, hb / 2, wd / 2, hb / 2, 20, rng.normal(0, 0.1, 20)))], L["vegetation"], self.pal.vegetation()
                )
            x += wd

    def ground(self):
        cam, rng, pal, cv = self.cam, self.rng, self.pal, self.cv
        zn, zf = 1.0, self.z_far
        r0, r1 = self.road
        # everything beyond the sidewalks: terrain or bare ground (buildings cover most of it)
        for side in (-1, 1):
            o = self.outer(side)
            far = side * 120.0
            lab = L["terrain"] if rng.random() < 0.6 else L["ground"]
            col = pal.terrain() if lab == L["terrain"] else pal.sidewalk() * 0.8
            cv.fill([cam.ground_quad(min(o, far), max(o, far), zn, zf)], lab, col)
        road_col = pal.road()
        cv.fill([cam.ground_quad(r0, r1, zn, zf)], L["road"], road_col)
        # patches and wear on the asphalt (image only)
        for _ in range(rng.integers(2, 10)):
            zc = rng.uniform(4, 50)
            xc = rng.uniform(r0, r1)
            ln, wd = rng.uniform(1, 8), rng.uniform(0.5, 3)
            cv.paint([cam.ground_quad(xc - wd / 2, xc + wd / 2, zc, zc + ln)], pal.jitter(road_col * rng.uniform(0.8, 1.15), 5))
        for side in (-1, 1):
            e, o = self.edge(side), self.outer(side)
            col = pal.sidewalk()
            lo, hi = min(e, o), max(e, o)
            cv.fill([cam.ground_quad(lo, hi, zn, zf, self.kerb)], L["sidewalk"], col)
            cv.fill([cam.wall_x(e, zn, zf, 0, self.kerb)], L["sidewalk"], col * 0.75)  # kerb face
            # paving joints (image only)
            step = rng.uniform(1.5, 4)
            for zz in np.arange(zn + 1, min(zf, 60), step):
                cv.paint([cam.ground_quad(lo, hi, zz, zz + 0.06, self.kerb)], col * 0.82)
            if self.parking[side]:
                pe = e - side * 2.3
                z0 = rng.uniform(3, 20)
                z1 = z0 + rng.uniform(15, 60)
                cv.fill([cam.ground_quad(min(e, pe), max(e, pe), z0, z1)], L["parking"], pal.sidewalk() * 0.9)
        self.markings(road_col)

    def markings(self, road_col):
        cam, rng, cv = self.cam, self.rng, self.cv
        paint = np.clip(road_col * 0.3 + rng.uniform(150, 230), 0, 255)
        r0, r1 = self.road
        lw = rng.uniform(0.1, 0.18)
        for side_x in (r0 + 0.3, r1 - 0.3):  # solid edge lines
            cv.paint([cam.ground_quad(side_x - lw / 2, side_x + lw / 2, 1.0, self.z_far)], paint)
        dash, gap = rng.uniform(2, 4), rng.uniform(5, 10)
        for i in range(1, self.lanes):
            x = r0 + i * self.lane_w
            z = rng.uniform(1, dash + gap)
            while z < self.z_far:
                cv.paint([cam.ground_quad(x - lw / 2, x + lw / 2, z, z + dash)], paint)
                z += dash + gap
        if rng.random() < 0.35:  # crosswalk
            zc = rng.uniform(8, 35)
            ln = rng.uniform(3, 5)
            x = r0 + 0.5
            while x < r1 - 0.5:
                cv.paint([cam.ground_quad(x, x + 0.5, zc, zc + ln)], paint)
                x += 1.0
        if rng.random() < 0.3:  # stop line
            zc = rng.uniform(6, 30)
            cv.paint([cam.ground_quad(r0, r1, zc, zc + 0.4)], paint)

    # ---- buildings, walls, fences, vegetation along one side
    def side_zones(self, side: int):
        rng = self.rng
        z = 1.0
        while z < self.z_far:
            length = rng.uniform(6, 35)
            z1 = min(z + length, self.z_far)
            kind = rng.choice(["building", "vegetation", "wall", "fence"], p=[0.55, 0.17, 0.13, 0.15])
            self.zone(side, kind, z, z1)
            z = z1

    def building(self, side, x_f, z0, z1, height, base_kind="plain"):
        cam, rng, pal, cv = self.cam, self.rng, self.pal, self.cv
        col = pal.building()
        inst = None
        # near end face (visible where the neighbour is set back), then the facade
        depth = rng.uniform(8, 15)
        xs = sorted([x_f, x_f + side * depth])
        end = cam.wall_z(z0, xs[0], xs[1], 0, height)
        face = cam.wall_x(x_f, z0, z1, 0, height)
        cv.fill([face], L["building"], col, inst)
        cv.fill([end], L["building"], col * rng.uniform(0.7, 0.9), inst)
        glass = pal.glass(self.sky_color)
        frame = col * rng.uniform(0.6, 0.9)
        floor_h = rng.uniform(2.8, 3.6)
        col_w = rng.uniform(2.0, 4.0)
        win_w, win_h = col_w * rng.uniform(0.35, 0.7), floor_h * rng.uniform(0.4, 0.65)
        floors = np.arange(floor_h * (1.3 if rng.random() < 0.5 else 0.3), height - floor_h * 0.8, floor_h)
        cols = np.arange(z0 + col_w * 0.3, z1 - win_w, col_w)
        if len(floors) and len(cols):
            fy, cz = np.meshgrid(floors, cols, indexing="ij")
            fy, cz = fy.ravel(), cz.ravel()
            corners = np.stack(
                [
                    np.stack([np.full_like(fy, x_f), fy, cz], 1),
                    np.stack([np.full_like(fy, x_f), fy, cz + win_w], 1),
                    np.stack([np.full_like(fy, x_f), fy + win_h, cz + win_w], 1),
                    np.stack([np.full_like(fy, x_f), fy + win_h, cz], 1),
                ],
                1,
            )
            pad = 0.12
            outer_c = corners + np.array([[0, -pad, -pad], [0, -pad, pad], [0, pad, pad], [0, pad, -pad]])
            cv.paint(list(cam.project(outer_c)), frame)
            polys = cam.project(corners)
            lit = rng.random(len(polys)) < 0.12
            cv.paint([p for p, l in zip(polys, lit) if not l], glass)
            cv.paint([p for p, l in zip(polys, lit) if l], pal.jitter(glass * 1.6 + 30, 8))
        if rng.random() < 0.5:  # ground-floor shop front / doors
            for _ in range(rng.integers(1, 4)):
                dz = rng.uniform(z0, max(z0 + 0.1, z1 - 3))
                cv.paint([cam.wall_x(x_f, dz, dz + rng.uniform(1, 3), 0, rng.uniform(2, 2.6))], pal.glass(self.sky_color))

    def zone(self, side, kind, z0, z1):
        cam, rng, pal, cv = self.cam, self.rng, self.pal, self.cv
        o = self.outer(side)
        if kind == "building":
            setback = rng.uniform(0, 1.0) if rng.random() < 0.7 else rng.uniform(1, 5)
            x_f = o + side * setback
            if setback > 0.3:
                lab = rng.choice([L["sidewalk"], L["terrain"], L["ground"]], p=[0.5, 0.3, 0.2])
                c = pal.sidewalk() if lab != L["terrain"] else pal.terrain()
                cv.fill([cam.ground_quad(min(o, x_f), max(o, x_f), z0, z1)], int(lab), c)
            hb = rng.uniform(7, 28)
            self.add(z1 + 200, lambda: self.building(side, x_f, z0, z1, hb))
            return
        # a building further back, seen over the wall / fence / trees
        back = o + side * rng.uniform(6, 20)
        if rng.random() < 0.7:
            hb = rng.uniform(8, 30)
            self.add(z1 + 300, lambda: self.building(side, back, z0, z1, hb))
        gl = L["terrain"] if kind != "wall" or rng.random() < 0.5 else L["ground"]
        gcol = pal.terrain() if gl == L["terrain"] else pal.sidewalk() * 0.8
        cv.fill([cam.ground_quad(min(o, back), max(o, back), z0, z1)], gl, gcol)
        if kind in ("vegetation", "fence"):
            n = int((z1 - z0) / rng.uniform(3, 8)) + 1
            for _ in range(n):
                zt = rng.uniform(z0, z1)
                xt = o + side * rng.uniform(1, abs(back - o) + 1)
                if rng.random() < 0.6:
                    self.add(zt + 100, lambda xt=xt, zt=zt: self.tree(xt, zt))
                else:
                    self.add(zt + 100, lambda xt=xt, zt=zt: self.bush(xt, zt))
        if kind in ("wall", "fence"):
            hw = rng.uniform(0.8, 3.0) if kind == "wall" else rng.uniform(0.9, 2.2)
            lab = L[kind]
            col = pal.wall() if kind == "wall" else pal.fence()
            x = o + side * 0.1
            for zz in np.arange(z0, z1, 5.0):  # short pieces keep the painter's order right
                ze = min(zz + 5.0, z1)
                self.add(ze + 50, lambda zz=zz, ze=ze: self.wallpiece(kind, lab, col, x, zz, ze, hw))

    def wallpiece(self, kind, lab, col, x, z0, z1, hw):
        cam, cv = self.cam, self.cv
        cv.fill([cam.wall_x(x, z0, z1, 0, hw)], lab, col)
        if kind == "fence":  # posts and rails
            dark = np.asarray(col) * 0.6
            for zz in np.arange(z0, z1, 1.2):
                cv.paint([cam.wall_x(x, zz, zz + 0.1, 0, hw)], dark)
            cv.paint([cam.wall_x(x, z0, z1, hw * 0.45, hw * 0.5)], dark)
            cv.paint([cam.wall_x(x, z0, z1, hw - 0.08, hw)], dark)
        else:  # coping and stains
            cv.paint([cam.wall_x(x, z0, z1, hw - 0.12, hw)], np.asarray(col) * 0.8)

    # ---- vegetation
    def tree(self, x, z):
        cam, rng, pal, cv = self.cam, self.rng, self.pal, self.cv
        th = rng.uniform(1.8, 4)
        tw = rng.uniform(0.15, 0.4)
        r = rng.uniform(1.2, 3.5)
        col = pal.vegetation()
        trunk = cam.billboard(x, z, [[-tw / 2, 0], [tw / 2, 0], [tw / 2, th + r * 0.5], [-tw / 2, th + r * 0.5]])
        crown = cam.billboard(x, z, circle(0, th + r, r, r * rng.uniform(0.8, 1.2), 28, rng.normal(0, 0.12, 28)))
        cv.fill([trunk], L["vegetation"], pal.beige() * 0.5)
        cv.fill([crown], L["vegetation"], col)
        self.foliage(x, z, th + r, r, col)

    def bush(self, x, z):
        rng = self.rng
        r = rng.uniform(0.4, 1.3)
        col = self.pal.vegetation()
        self.cv.fill([self.cam.billboard(x, z, circle(0, r * 0.6, r, r * 0.6, 20, rng.normal(0, 0.12, 20)))], L["vegetation"], col)
        self.foliage(x, z, r * 0.6, r * 0.8, col)

    def foliage(self, x, z, cy, r, col):
        """Noisy leaves: light and dark blobs inside the crown (image only)."""
        rng, cam = self.rng, self.cam
        s = cam.scale(z)
        if s * r < 4:
            return
        n = int(min(60, 4 + s * r / 3))
        u = rng.uniform(-0.8, 0.8, n) * r
        v = cy + rng.uniform(-0.7, 0.7, n) * r
        rr = rng.uniform(0.05, 0.2, n) * r
        polys = [cam.billboard(x, z, circle(uu, vv, q, q, 8)) for uu, vv, q in zip(u, v, rr)]
        half = n // 2
        self.cv.paint(polys[:half], np.asarray(col) * 0.65)
        self.cv.paint(polys[half:], np.asarray(col) * 1.3 + 10)

    # ---- poles, lights, signs, clutter on the sidewalk
    def street_furniture(self, side):
        rng = self.rng
        e = self.edge(side)
        z = rng.uniform(3, 15)
        while z < min(self.z_far, 110):
            x = e + side * rng.uniform(0.4, 0.8)
            what = rng.choice(["lamp", "light", "sign", "tree", "pole"], p=[0.3, 0.2, 0.25, 0.15, 0.1])
            if what == "tree":
                self.add(z, lambda x=x, z=z: self.tree(x, z))
            else:
                self.add(z, lambda x=x, z=z, what=what: self.pole(side, x, z, what))
            z += rng.uniform(8, 30)
        # clutter: static (bins, benches, bollards) and dynamic (containers, strollers)
        for _ in range(rng.integers(0, 4)):
            z = rng.uniform(4, 50)
            x = self.edge(side) + side * rng.uniform(0.5, self.sidewalk_w[side])
            lab = L["static"] if rng.random() < 0.6 else L["dynamic"]
            wd, ht = rng.uniform(0.3, 1.5), rng.uniform(0.5, 1.3)
            col = self.pal.pick((1, self.pal.vivid), (2, lambda: self.pal.grey(30, 160)))
            self.add(
                z,
                lambda x=x, z=z, lab=lab, wd=wd, ht=ht, col=col: self.cv.fill(
                    [self.cam.billboard(x, z, [[-wd / 2, 0], [wd / 2, 0], [wd / 2, ht], [-wd / 2, ht]])], lab, col
                ),
            )

    def pole(self, side, x, z, what):
        cam, rng, pal, cv = self.cam, self.rng, self.pal, self.cv
        ph = {"lamp": rng.uniform(5, 9), "light": rng.uniform(3, 5), "sign": rng.uniform(2.3, 3.5)}.get(what, rng.uniform(3, 8))
        pw = rng.uniform(0.1, 0.25) if what != "sign" else rng.uniform(0.06, 0.12)
        col = pal.pole()
        polys = [cam.billboard(x, z, [[-pw / 2, 0], [pw / 2, 0], [pw / 2, ph], [-pw / 2, ph]])]
        if what == "lamp":  # arm over the road
            arm = -side * rng.uniform(0.8, 2.0)
            polys.append(cam.billboard(x, z, [[0, ph - 0.1], [arm, ph + 0.3], [arm, ph + 0.15], [0, ph - 0.25]]))
        cv.fill(polys, L["pole"], col)
        if what == "light":
            bw, bh = rng.uniform(0.3, 0.4), rng.uniform(0.8, 1.1)
            u0 = -side * pw / 2 - bw / 2 if rng.random() < 0.5 else -bw / 2
            box = cam.billboard(x, z, [[u0, ph - bh], [u0 + bw, ph - bh], [u0 + bw, ph], [u0, ph]])
            housing = pal.pick((3, lambda: pal.grey(15, 60, 3)), (1, lambda: np.array([190, 160, 40]) * rng.uniform(0.7, 1.1)), (1, lambda: pal.green(True)))
            cv.fill([box], L["traffic light"], housing)
            on = rng.integers(3)
            lamps = [(200, 40, 30), (220, 170, 30), (40, 200, 90)]
            for i in range(3):
                c = np.array(lamps[i]) if i == on else np.asarray(housing) * 0.6 + 20
                cy = ph - bh * (0.2 + 0.3 * i)
                cv.paint([cam.billboard(x, z, circle(u0 + bw / 2, cy, bw * 0.3, bw * 0.3, 10))], c)
        elif what == "sign":
            sz = rng.uniform(0.5, 0.9)
            shape = rng.choice(["circle", "triangle", "square", "rect", "diamond"])
            cy = ph - sz / 2
            if shape == "circle":
                uv = circle(0, cy, sz / 2, sz / 2, 18)
            elif shape == "triangle":
                uv = [[-sz / 2, cy + sz * 0.4], [sz / 2, cy + sz * 0.4], [0, cy - sz * 0.5]]
            elif shape == "diamond":
                uv = [[0, cy + sz / 2], [sz / 2, cy], [0, cy - sz / 2], [-sz / 2, cy]]
            elif shape == "rect":
                uv = [[-sz * 0.7, cy - sz * 0.35], [sz * 0.7, cy - sz * 0.35], [sz * 0.7, cy + sz * 0.35], [-sz * 0.7, cy + sz * 0.35]]
            else:
                uv = [[-sz / 2, cy - sz / 2], [sz / 2, cy - sz / 2], [sz / 2, cy + sz / 2], [-sz / 2, cy + sz / 2]]
            uv = np.asarray(uv, float)
            back = rng.random() < 0.3
            rim = (
                pal.grey(90, 170)
                if back
                else pal.pick(
                    (3, lambda: np.array([200, 30, 30])),
                    (2, lambda: np.array([30, 70, 170])),
                    (1, lambda: np.array([230, 190, 20])),
                    (1, lambda: pal.grey(200, 240)),
                )
            )
            cv.fill([cam.billboard(x, z, uv)], L["traffic sign"], pal.jitter(rim, 10))
            if not back:
                centre = uv.mean(0)
                inner = centre + (uv - centre) * 0.7
                cv.paint([cam.billboard(x, z, inner)], pal.jitter(pal.pick((2, lambda: pal.grey(200, 245)), (1, lambda: rim * 0.6)), 8))

    # ---- vehicles
    def traffic(self):
        rng = self.rng
        r0 = self.road[0]
        for lane in range(self.lanes):
            xc = r0 + (lane + 0.5) * self.lane_w
            oncoming = self.lanes >= 2 and lane < self.lanes // 2
            z = rng.uniform(7, 22)
            while z < 90:
                if rng.random() < 0.6:
                    kind = rng.choice(["car", "truck", "bus", "train", "rider"], p=[0.66, 0.12, 0.1, 0.04, 0.08])
                    x = xc + rng.uniform(-0.4, 0.4)
                    if kind == "rider":
                        self.add(z, lambda x=x, z=z: self.cyclist(x, z, on_road=True))
                        z += rng.uniform(4, 12)
                        continue
                    dims = self.vehicle_dims(kind)
                    self.add(z, lambda x=x, z=z, kind=kind, dims=dims, on=oncoming: self.vehicle(kind, x, z, dims, on))
                    z += dims[0] + rng.uniform(2, 25)
                else:
                    z += rng.uniform(5, 25)
        for side in (-1, 1):  # parked cars along the kerb
            if not (self.parking[side] or rng.random() < 0.5):
                continue
            x = self.edge(side) - side * rng.uniform(1.0, 1.3)
            z = rng.uniform(3, 15)
            while z < 70:
                if rng.random() < 0.75:
                    kind = "car" if rng.random() < 0.9 else "truck"
                    dims = self.vehicle_dims(kind)
                    self.add(z, lambda x=x, z=z, kind=kind, dims=dims: self.vehicle(kind, x, z, dims, bool(rng.random() < 0.3)))
                    z += dims[0] + rng.uniform(0.5, 3)
                else:
                    z += rng.uniform(3, 10)

    def vehicle_dims(self, kind):
        rng = self.rng
        return {
            "car": (rng.uniform(3.8, 4.9), rng.uniform(1.7, 1.95), rng.uniform(1.4, 1.75)),
            "truck": (rng.uniform(6, 10), rng.uniform(2.3, 2.55), rng.uniform(2.8, 3.8)),
            "bus": (rng.uniform(11, 13), rng.uniform(2.45, 2.55), rng.uniform(3.0, 3.4)),
            "train": (rng.uniform(20, 30), rng.uniform(2.3, 2.65), rng.uniform(3.3, 3.7)),
        }[kind]

    def _box(self, x0, x1, y0, y1, z0, z1):
        c = np.array([[x, y, z] for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)])
        return self.cam.project(c)

    def _hull(self, pts2d):
        return cv2.convexHull(np.asarray(pts2d, np.float32)).reshape(-1, 2)

    def vehicle(self, kind, x, z, dims, oncoming):
        cam, rng, pal, cv = self.cam, self.rng, self.pal, self.cv
        length, width, height = dims
        lab = L[kind]
        inst = cv.new_instance(lab)
        col = pal.vehicle() if kind != "train" else pal.pick((1, lambda: pal.grey(150, 230)), (1, pal.vivid))
        if kind == "bus":
            col = pal.pick((2, pal.vivid), (1, lambda: pal.grey(150, 235)), (1, lambda: np.array([220, 190, 40])))
        x0, x1, z0, z1 = x - width / 2, x + width / 2, z, z + length
        # shadow on the road (image only)
        cv.paint([cam.ground_quad(x0 - 0.15, x1 + 0.15, z0 - 0.2, z1 + 0.1)], np.asarray(cv.image[0, 0]) * 0 + 25)
        clear = 0.3 if kind == "car" else 0.5
        parts = [self._hull(self._box(x0, x1, clear, height * (0.55 if kind == "car" else 1.0), z0, z1))]
        if kind == "car":
            cab = (z0 + length * rng.uniform(0.2, 0.3), z1 - length * rng.uniform(0.25, 0.35))
            parts.append(self._hull(self._box(x0 + 0.12, x1 - 0.12, height * 0.5, height, *cab)))
        if kind == "truck":  # lower cab at the front, cargo box behind
            parts = [
                self._hull(self._box(x0, x1, clear, height, z0 + 2.2, z1) if oncoming else self._box(x0, x1, clear, height, z0, z1 - 2.2)),
                self._hull(self._box(x0, x1, clear, height * 0.8, z0, z0 + 2.2) if oncoming else self._box(x0, x1, clear, height * 0.8, z1 - 2.2, z1)),
            ]
        # wheels on the visible side and under the near end
        side_x = x0 if x > 0 else x1
        wr = 0.33 if kind == "car" else 0.5
        wz = [z0 + 0.8, z1 - 0.8] if kind != "train" else [z0 + 2, z0 + 4, z1 - 4, z1 - 2]
        t = np.linspace(0, 2 * np.pi, 14, endpoint=False)
        wheels = [cam.project(np.stack([np.full_like(t, side_x), wr + wr * np.sin(t), zc + wr * np.cos(t)], 1)) for zc in wz]
        under = [
            cam.project([[xx - 0.12, 0, z0 + 0.3], [xx + 0.12, 0, z0 + 0.3], [xx + 0.12, clear + 0.05, z0 + 0.3], [xx - 0.12, clear + 0.05, z0 + 0.3]])
            for xx in (x0 + 0.3, x1 - 0.3)
        ]
        tyre = pal.grey(10, 40, 2)
        cv.fill(under + wheels, lab, tyre, inst)
        cv.fill(parts, lab, col, inst)
        # shading: the near end face and the side face are differently lit
        ytop = height * (0.55 if kind == "car" else 1.0)
        end = cam.wall_z(z0, x0, x1, clear, ytop)
        side = cam.wall_x(side_x, z0, z1, clear, ytop)
        cv.paint([side], np.asarray(col) * rng.uniform(0.75, 0.95))
        cv.paint([end], np.asarray(col) * rng.uniform(0.85, 1.1))
        cv.paint(wheels, tyre)
        glass = pal.glass(self.sky_color)
        if kind == "car":
            cz0, cz1 = cab
            cv.paint([cam.wall_z(cz0, x0 + 0.25, x1 - 0.25, height * 0.58, height * 0.93)], glass)
            cv.paint([cam.wall_x(side_x + (0.12 if x > 0 else -0.12), cz0 + 0.15, cz1 - 0.15, height * 0.6, height * 0.92)], glass)
        else:  # window band (bus / tram) or windscreen (truck cab)
            y0, y1 = height * 0.45, height * 0.85
            if kind in ("bus", "train"):
                cv.paint([cam.wall_x(side_x, z0 + 0.5, z1 - 0.5, y0, y1)], glass)
                cv.paint([cam.wall_z(z0, x0 + 0.15, x1 - 0.15, y0, y1)], glass)
            elif oncoming:
                cv.paint([cam.wall_z(z0, x0 + 0.15, x1 - 0.15, height * 0.5, height * 0.75)], glass)
        # lights and plate on the near end
        lc = (230, 225, 200) if oncoming else (200, 30, 30)
        ly = clear + 0.35
        for lx in (x0 + 0.1, x1 - 0.45):
            cv.paint([cam.wall_z(z0, lx, lx + 0.35, ly, ly + 0.18)], lc)
        cv.paint([cam.wall_z(z0, x - 0.26, x + 0.26, clear + 0.1, clear + 0.22)], pal.grey(200, 240, 3))

    # ---- people
    def person_shape(self, walking: float, seated: bool = False):
        """Local (u, v) polygons of a person (metres): legs, torso, arms, head."""
        rng = self.rng
        hgt = rng.uniform(1.55, 1.95)
        leg = hgt * 0.47
        sh = hgt * 0.26  # shoulder width
        hr = hgt * 0.065
        torso_top = hgt - 2 * hr - 0.04
        hip = leg
        if seated:
            legs = [
                np.array([[-0.08, hip], [0.02, hip], [0.12, hip * 0.35], [0.02, hip * 0.35]]),
                np.array([[-0.02, hip], [0.08, hip], [-0.05, hip * 0.25], [-0.15, hip * 0.25]]),
            ]
        else:
            a = walking * 0.22
            legs = [np.array([[-0.13, hip], [0.0, hip], [-0.02 + a, 0], [-0.14 + a, 0]]), np.array([[0.0, hip], [0.13, hip], [0.14 - a, 0], [0.02 - a, 0]])]
        torso = np.array([[-sh / 2 * 0.8, hip - 0.05], [sh / 2 * 0.8, hip - 0.05], [sh / 2, torso_top], [-sh / 2, torso_top]])
        arms = [
            np.array(
                [[-sh / 2, torso_top], [-sh / 2 + 0.09, torso_top], [-sh / 2 - 0.02 + walking * 0.1, hip - 0.05], [-sh / 2 - 0.1 + walking * 0.1, hip - 0.05]]
            ),
            np.array(
                [[sh / 2 - 0.09, torso_top], [sh / 2, torso_top], [sh / 2 + 0.1 - walking * 0.1, hip - 0.05], [sh / 2 + 0.02 - walking * 0.1, hip - 0.05]]
            ),
        ]
        head = circle(0, torso_top + 0.03 + hr, hr * 0.85, hr, 12)
        return legs, torso, arms, head

    def draw_person(self, x, z, lab, walking, lift=0.0, seated=False):
        cam, pal, cv = self.cam, self.pal, self.cv
        inst = cv.new_instance(lab)
        legs, torso, arms, head = self.person_shape(walking, seated)
        up = np.array([0, lift])
        top, bottom, skin = pal.cloth(), pal.cloth(), pal.skin()
        cv.fill([cam.billboard(x, z, p + up) for p in legs], lab, bottom, inst)
        cv.fill([cam.billboard(x, z, torso + up)] + [cam.billboard(x, z, p + up) for p in arms], lab, top, inst)
        cv.fill([cam.billboard(x, z, head + up)], lab, skin, inst)
        hair = head[head[:, 1] > head[:, 1].mean() + 0.01]
        if len(hair) >= 3 and self.rng.random() < 0.8:
            cv.paint([cam.billboard(x, z, hair + up)], pal.grey(10, 90, 10))

    def people(self):
        rng = self.rng
        for side in (-1, 1):  # pedestrians on the sidewalks, sometimes in groups
            for _ in range(rng.integers(0, 7)):
                z = rng.uniform(4, 60)
                for _ in range(1 if rng.random() < 0.7 else rng.integers(2, 4)):
                    x = self.edge(side) + side * rng.uniform(0.3, self.sidewalk_w[side] - 0.2)
                    zz = z + rng.uniform(-1.5, 1.5)
                    self.add(zz, lambda x=x, z=zz: self.draw_person(x, z, L["person"], rng.uniform(-1, 1), lift=self.kerb))
            if rng.random() < 0.3:  # parked bicycles
                z = rng.uniform(4, 40)
                x = self.outer(side) - side * 0.5
                for i in range(rng.integers(1, 4)):
                    self.add(z + i * 0.6, lambda x=x, z=z + i * 0.6: self.cyclist(x, z, on_road=False))
        if rng.random() < 0.3:  # someone crossing the road
            z = rng.uniform(6, 30)
            x = rng.uniform(*self.road)
            self.add(z, lambda: self.draw_person(x, z, L["person"], rng.uniform(-1, 1)))

    def cyclist(self, x, z, on_road: bool):
        """A bicycle (or motorcycle) along the road; with a rider when on the road."""
        cam, rng, pal, cv = self.cam, self.rng, self.pal, self.cv
        motor = on_road and rng.random() < 0.35
        lab = L["motorcycle"] if motor else L["bicycle"]
        inst = cv.new_instance(lab)
        y0 = 0.0 if on_road else self.kerb
        wr = 0.33 if not motor else 0.3
        base = rng.uniform(1.0, 1.15) if not motor else rng.uniform(1.3, 1.5)
        t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        col = pal.vehicle()
        s = cam.scale(z)
        polys = []
        for zc in (z, z + base):
            circ = cam.project(np.stack([np.full_like(t, x), y0 + wr + wr * np.sin(t), zc + wr * np.cos(t)], 1))
            polys.append(circ)
        frame_pts = cam.project(
            [
                [x, y0 + wr, z],
                [x, y0 + wr * 2.3, z + base * 0.35],
                [x, y0 + wr, z + base],
                [x, y0 + wr * 2.6, z + base * 0.9],
                [x, y0 + wr * 2.4, z + base * 0.2],
            ]
        )
        tube = max(1.0, 0.05 * s) if not motor else max(1.0, 0.2 * s)
        for a, b in ((0, 1), (1, 2), (1, 3), (0, 4), (4, 3)):
            polys.append(segment(frame_pts[a], frame_pts[b], tube))
        if motor:
            polys.append(self._hull(self._box(x - 0.25, x + 0.25, y0 + wr, y0 + wr * 3, z + 0.25, z + base - 0.2)))
        cv.fill(polys, lab, np.asarray(col) * 0.5 if not motor else col, inst)
        if not motor:  # see-through wheels: the spokes' background is not painted over in the image
            for circ in polys[:2]:
                c = circ.mean(0)
                cv.paint([c + (circ - c) * 0.8], pal.jitter(np.asarray(col) * 0.3 + 60, 10))
        if on_road:
            self.draw_person(x, z + base * 0.45, L["rider"], 0.0, lift=y0 + wr * 1.6, seated=True)

    # ---- void regions of real frames
    def void_regions(self) -> None:
        cv, rng, h, w = self.cv, self.rng, self.h, self.w
        # ego vehicle: the bonnet at the bottom
        top = h * rng.uniform(0.86, 0.93)
        bulge = h * rng.uniform(0.015, 0.04)
        xs = np.linspace(-0.05 * w, 1.05 * w, 24)
        ys = top + bulge * ((2 * xs / w - 1) ** 2)
        hood = np.concatenate([np.stack([xs, ys], 1), [[1.05 * w, h + 5], [-0.05 * w, h + 5]]])
        col = self.pal.pick((2, lambda: self.pal.grey(10, 60, 3)), (1, lambda: self.pal.grey(150, 230, 3)), (1, self.pal.vivid))
        cv.fill([hood], L["ego vehicle"], col)
        # reflections of the scene on the bonnet (image only)
        for _ in range(3):
            x0 = rng.uniform(0, w)
            cv.paint(
                [[[x0, top + bulge], [x0 + w * 0.2, top + bulge], [x0 + w * 0.1, h], [x0 - w * 0.1, h]]],
                np.asarray(col) * 0.7 + np.asarray(self.sky_color) * 0.3,
            )
        # rectification border: thin bands along the edges, out-of-roi at the corners
        bl, br, bb = (max(1.0, w * rng.uniform(0.001, 0.006)) for _ in range(3))
        dark = self.pal.grey(0, 40, 2)
        cv.fill([[[0, 0], [bl, 0], [bl * 1.6, h], [0, h]]], L["rectification border"], dark)
        cv.fill([[[w - 1, 0], [w - 1 - br, 0], [w - 1 - br * 1.6, h], [w - 1, h]]], L["rectification border"], dark)
        cv.fill([[[0, h - 1 - bb], [w - 1, h - 1 - bb], [w - 1, h - 1], [0, h - 1]]], L["rectification border"], dark)
        c = max(2.0, w * rng.uniform(0.005, 0.02))
        cv.fill([[[0, h - 1], [c, h - 1], [0, h - 1 - c]], [[w - 1, h - 1], [w - 1 - c, h - 1], [w - 1, h - 1 - c]]], L["out of roi"], dark)
