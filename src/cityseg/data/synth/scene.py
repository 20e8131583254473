"""A street scene in world coordinates (metres), seen through the Cityscapes camera.

The street runs along Z: road lanes, kerbs and sidewalks, then per side a sequence of zones (buildings,
trees, walls, fences, open ground), sometimes broken by a cross street. Street kind (city centre,
residential, industrial), weather and sun are drawn per frame; the proportions are set so that the class
pixel shares come out near the published Cityscapes ones (``cityseg check`` prints both).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cityseg.data.synth.camera import Camera
from cityseg.data.synth.drawing import Canvas, circle
from cityseg.data.synth.objects import StreetObjects
from cityseg.data.synth.palette import Palette
from cityseg.data.synth.people import People
from cityseg.data.synth.spec import L, M
from cityseg.data.synth.vehicles import Vehicles

#: per street kind: (building share of the zones, building heights (m), street-tree probability, lanes)
KINDS = {
    "centre": ((0.78, 0.05, 0.08, 0.09), (14, 28), 0.3, (2, 2, 3, 4)),
    "residential": ((0.66, 0.16, 0.07, 0.11), (10, 20), 0.5, (2, 2, 2, 3)),
    "industrial": ((0.45, 0.2, 0.15, 0.2), (6, 16), 0.35, (2, 2, 3)),
}
KIND_P = (0.45, 0.4, 0.15)


class Scene(StreetObjects, Vehicles, People):
    def __init__(self, rng: np.random.Generator, height: int, width: int, randomize: bool = False):
        self.rng = rng
        self.cv = Canvas(height, width)
        self.cam = Camera(rng, height, width)
        self.pal = Palette(rng, randomize)
        self.h, self.w = height, width
        self.kind = str(rng.choice(list(KINDS), p=KIND_P))
        self.zone_p, self.bld_h, self.tree_p, lane_choice = KINDS[self.kind]
        self.overcast = bool(rng.random() < 0.5)
        # sun: the side it shines from, and how far a 1 m tall object's shadow reaches across and along
        self.sun_side = int(rng.choice([-1, 1]))
        elev = rng.uniform(0.45, 1.0)
        az = rng.uniform(0.3, 1.3)
        self.shadow_len = (np.sin(az) / np.tan(elev), np.cos(az) / np.tan(elev) * rng.choice([-1, 1]))
        self.shadow_dark = 0.0 if self.overcast else rng.uniform(0.35, 0.55)
        self.z_far = rng.uniform(90, 160)
        lanes = int(rng.choice(lane_choice))
        self.lane_w = rng.uniform(3.0, 3.6)
        self.parking_lane = {s: rng.random() < 0.45 for s in (-1, 1)}  # a lane of parked cars at the kerb
        half = lanes * self.lane_w / 2
        extra = {s: 2.2 * self.parking_lane[s] for s in (-1, 1)}
        # the camera drives in a lane right of the centre line (right-hand traffic)
        lane = int(rng.integers(lanes // 2, lanes))
        self.cam_x = -half + (lane + 0.5) * self.lane_w + rng.uniform(-0.4, 0.4)
        self.road = (-half - extra[-1] - self.cam_x, half + extra[1] - self.cam_x)  # road edges relative to the camera
        self.lanes_x0 = -half - self.cam_x  # left edge of the driving lanes
        self.lanes = lanes
        self.sky_color = self.pal.sky(self.overcast)
        self.sidewalk_w = {s: rng.uniform(2.5, 5.5) for s in (-1, 1)}
        self.verge = {s: rng.uniform(0.8, 2.0) if rng.random() < 0.2 else 0.0 for s in (-1, 1)}  # grass strip at the kerb
        self.kerb = rng.uniform(0.08, 0.16)
        self.parking = {s: rng.random() < 0.12 for s in (-1, 1)}  # a marked parking strip (void "parking")
        # a gently curving street (to either side) or a straight one, sometimes with a cross street
        self.curve = float(rng.choice([-1, 1]) * rng.uniform(1 / 320, 1 / 120)) if rng.random() < 0.25 else 0.0
        self.cam.bend = self.curve
        self.cross = None  # (z0, z1) of a cross street
        if not self.curve and rng.random() < 0.3:
            z0 = rng.uniform(12, 45)
            self.cross = (z0, z0 + rng.uniform(8, 16))
        self.items: list[tuple[float, Callable[[], None]]] = []  # (depth, draw) of standing objects

    # geometry helpers
    def edge(self, side: int) -> float:
        return self.road[1] if side > 0 else self.road[0]

    def outer(self, side: int) -> float:
        return self.edge(side) + side * self.sidewalk_w[side]

    def add(self, z: float, fn: Callable[[], None]) -> None:
        self.items.append((z, fn))

    def spans(self, z0: float, z1: float) -> list[tuple[float, float]]:
        """[z0, z1] without the cross street."""
        if self.cross is None or z1 <= self.cross[0] or z0 >= self.cross[1]:
            return [(z0, z1)]
        return [(a, b) for a, b in ((z0, self.cross[0]), (self.cross[1], z1)) if b - a > 0.05]

    def in_cross(self, z: float, margin: float = 0.0) -> bool:
        return self.cross is not None and self.cross[0] - margin < z < self.cross[1] + margin

    # ---- layers
    def draw(self) -> Canvas:
        w, h = self.w, self.h
        self.cv.fill([[[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]], L["sky"], self.sky_color)  # repainted in texture.sky
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

    def backdrop(self):
        """Closes the street at z_far: a row of far buildings or trees across the view."""
        z, cam, rng = self.z_far, self.cam, self.rng
        reach = 120.0 + abs(self.curve) * z * z / 2  # the street's far end has swung sideways on a curve
        x = -reach
        while x < reach:
            wd = rng.uniform(6, 20)
            if rng.random() < 0.6:
                hb = rng.uniform(6, 22)
                self.cv.fill([cam.wall_z(z, x, x + wd, 0, hb)], L["building"], self.pal.building())
            else:
                hb = rng.uniform(6, 16)
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
            far = side * (150.0 if not self.curve else 320.0)
            lab = L["terrain"] if rng.random() < 0.6 else L["ground"]
            col = pal.terrain() if lab == L["terrain"] else pal.sidewalk() * 0.8
            cv.fill([cam.ground_quad(min(o, far), max(o, far), zn, zf)], lab, col)
        road_col = pal.road()
        cv.fill([cam.ground_quad(r0, r1, zn, zf)], L["road"], road_col)
        if self.cross is not None:
            cv.fill([cam.ground_quad(-150, 150, *self.cross)], L["road"], road_col)
        self.asphalt(road_col)
        for side in (-1, 1):
            e, o = self.edge(side), self.outer(side)
            col = pal.sidewalk()
            lo, hi = min(e, o), max(e, o)
            kerb_col = pal.grey(110, 170, 3)
            for a, b in self.spans(zn, zf):
                cv.fill([cam.ground_quad(lo, hi, a, b, self.kerb)], L["sidewalk"], col)
                cv.fill([cam.wall_x(e, a, b, 0, self.kerb)], L["sidewalk"], kerb_col * 0.8)  # kerb face
                ks = e + side * 0.2
                cv.paint([cam.ground_quad(min(e, ks), max(e, ks), a, b, self.kerb)], kerb_col)  # kerb stones
                if self.verge[side]:
                    ve = ks + side * self.verge[side]
                    cv.fill([cam.ground_quad(min(ks, ve), max(ks, ve), a, b, self.kerb)], L["terrain"], pal.terrain())
            # paving joints (image only)
            step = rng.uniform(1.0, 3)
            for zz in np.arange(zn + 1, min(zf, 50), step):
                if not self.in_cross(zz):
                    cv.paint([cam.ground_quad(lo, hi, zz, zz + 0.05, self.kerb)], col * 0.85)
            if self.parking[side]:
                pe = o - side * 2.5
                z0 = rng.uniform(3, 20)
                z1 = z0 + rng.uniform(10, 40)
                for a, b in self.spans(z0, z1):
                    cv.fill([cam.ground_quad(min(o, pe), max(o, pe), a, b, self.kerb)], L["parking"], pal.sidewalk() * 0.9)
        self.markings(road_col)

    def asphalt(self, road_col):
        """Patches, sealed cracks, tar seams and manholes on the road (image only)."""
        cam, rng, pal, cv = self.cam, self.rng, self.pal, self.cv
        r0, r1 = self.road
        for _ in range(rng.integers(2, 10)):  # patches and repairs
            zc, xc = rng.uniform(4, 50), rng.uniform(r0, r1)
            ln, wd = rng.uniform(1, 8), rng.uniform(0.5, 3)
            cv.paint([cam.ground_quad(xc - wd / 2, xc + wd / 2, zc, zc + ln)], pal.jitter(road_col * rng.uniform(0.8, 1.12), 3))
        seal = road_col * rng.uniform(0.45, 0.7)
        cracks = []
        for _ in range(rng.integers(0, 12)):  # sealed cracks: random walks on the ground
            n = int(rng.integers(4, 10))
            z0 = rng.uniform(3, 35)
            xz = np.cumsum(np.column_stack([rng.normal(0, 0.35, n), rng.uniform(0.1, 0.6, n)]), 0) + [rng.uniform(r0, r1), z0]
            img = cam.ground_poly(np.vstack([xz, xz[::-1] + [0.04, 0.0]]))
            cracks.append(img)
        if rng.random() < 0.5:  # a tar seam along the street
            xs = rng.uniform(r0 + 1, r1 - 1)
            cracks.append(cam.ground_quad(xs, xs + 0.05, 1.0, self.z_far))
        cv.paint(cracks, seal)
        for _ in range(rng.integers(0, 3)):  # manholes and gully covers
            xc, zc, rr = rng.uniform(r0 + 0.5, r1 - 0.5), rng.uniform(4, 30), rng.uniform(0.3, 0.45)
            cv.paint([cam.ground_poly(circle(xc, zc, rr * 1.15, rr * 1.15, 20))], road_col * 0.8)
            cv.paint([cam.ground_poly(circle(xc, zc, rr, rr, 20))], pal.grey(40, 90, 3), material=M["metal"])

    def markings(self, road_col):
        cam, rng, cv = self.cam, self.rng, self.cv
        paint = np.clip(road_col * 0.3 + rng.uniform(130, 200), 0, 255)
        x0 = self.lanes_x0
        x1 = x0 + self.lanes * self.lane_w
        lw = rng.uniform(0.1, 0.16)
        for side_x in (x0, x1):  # solid lines between the lanes and the parking lanes
            if rng.random() < 0.7:
                for a, b in self.spans(1.0, self.z_far):
                    cv.paint([cam.ground_quad(side_x - lw / 2, side_x + lw / 2, a, b)], paint, material=M["paint"])
        dash, gap = rng.uniform(2, 4), rng.uniform(5, 10)
        for i in range(1, self.lanes):
            x = x0 + i * self.lane_w
            z = rng.uniform(1, dash + gap)
            while z < self.z_far:
                if not self.in_cross(z, 1):
                    cv.paint([cam.ground_quad(x - lw / 2, x + lw / 2, z, z + dash)], paint, material=M["paint"])
                z += dash + gap
        crossings = [self.cross[0] - 4.5] if self.cross is not None else []
        if rng.random() < 0.25:
            crossings.append(rng.uniform(8, 35))
        for zc in crossings:  # zebra crossings
            ln = rng.uniform(3, 4)
            x = self.road[0] + 0.5
            while x < self.road[1] - 0.5:
                cv.paint([cam.ground_quad(x, x + 0.5, zc, zc + ln)], paint, material=M["paint"])
                x += 1.0
        if self.cross is not None:  # stop line
            cv.paint([cam.ground_quad(x0 + self.lanes * self.lane_w / 2, x1, self.cross[0] - 5.2, self.cross[0] - 4.8)], paint)

    # ---- buildings, walls, fences, vegetation along one side
    def side_zones(self, side: int):
        rng = self.rng
        z = 1.0
        while z < self.z_far:
            length = rng.uniform(8, 35)
            z1 = min(z + length, self.z_far)
            kind = rng.choice(["building", "vegetation", "wall", "fence"], p=self.zone_p)
            for a, b in self.spans(z, z1):
                self.zone(side, kind, a, b)
            z = z1
        if self.cross is not None:  # the buildings along the cross street, seen through the gap
            c0, c1 = self.cross
            o = self.outer(side)
            col = self.pal.building()
            hb = rng.uniform(*self.bld_h)
            self.add(c1 + 400, lambda: self.cv.fill([self.cam.wall_z(c1 + rng.uniform(2, 4), o, o + side * 80, 0, hb)], L["building"], col))

    def building(self, side, x_f, z0, z1, height):
        cam, rng, pal, cv = self.cam, self.rng, self.pal, self.cv
        col = pal.building()
        # the facade's material: plaster, brick (mostly brick-coloured), or smooth render and concrete
        material = int(rng.choice([M["plaster"], M["brick"], L["building"]], p=[0.45, 0.25, 0.3]))
        if material == M["brick"] and rng.random() < 0.7:
            col = pal.brick()
        if self.shadow_dark and side == self.sun_side:  # the facade faces away from the sun
            col = col * (1 - 0.6 * self.shadow_dark)
        # near end face (visible where the neighbour is set back), then the facade
        depth = rng.uniform(8, 15)
        xs = sorted([x_f, x_f + side * depth])
        end = cam.wall_z(z0, xs[0], xs[1], 0, height)
        face = cam.wall_x(x_f, z0, z1, 0, height)
        cv.fill([face], L["building"], col, material=material)
        cv.fill([end], L["building"], col * rng.uniform(0.7, 0.9), material=material)
        if self.shadow_dark and side == self.sun_side:  # the row casts its shadow across the street
            d, dz = height * self.shadow_len[0], height * self.shadow_len[1]
            xe = x_f - side * d
            cv.shadow([cam.ground_poly([(x_f, z0), (x_f, z1), (xe, z1 + dz), (xe, z0 + dz)])], self.shadow_dark)
        if material == M["brick"]:  # mortar courses, in perspective
            course = rng.uniform(0.25, 0.45)
            ys = np.arange(course, height, course)
            lines = [cam.wall_x(x_f, z0, z1, y, y + 0.03) for y in ys] if cam.scale(z0) * course > 3 else []
            cv.paint(lines, col * rng.uniform(0.6, 0.8))
        ground = rng.random() < 0.6  # a shop front on the ground floor
        self.windows(x_f, z0, z1, height, col, ground)
        if ground:
            self.shopfront(x_f, z0, z1, col)
        if rng.random() < 0.5:  # cornice under the roof
            cv.paint([cam.wall_x(x_f, z0, z1, height - 0.5, height)], col * 0.75, material=L["building"])
        if rng.random() < 0.4:  # a drainpipe down the facade
            zp = rng.uniform(z0, max(z0, z1 - 0.2))
            cv.paint([cam.wall_x(x_f, zp, zp + 0.12, 0, height)], pal.grey(50, 140, 3), material=M["metal"])

    def windows(self, x_f, z0, z1, height, col, shop: bool):
        """A grid of windows with frames, sills, glazing bars and reflections of the sky."""
        cam, rng, pal, cv = self.cam, self.rng, self.pal, self.cv
        glass = pal.glass(self.sky_color)
        frame = pal.pick((2, lambda: col * rng.uniform(0.6, 0.9)), (2, lambda: pal.grey(180, 235, 3)), (1, lambda: pal.grey(30, 70, 3)))
        floor_h = rng.uniform(2.8, 3.6)
        col_w = rng.uniform(2.0, 4.0)
        win_w, win_h = col_w * rng.uniform(0.35, 0.7), floor_h * rng.uniform(0.4, 0.65)
        floors = np.arange(floor_h * (1.3 if shop or rng.random() < 0.5 else 0.3), height - floor_h * 0.8, floor_h)
        cols = np.arange(z0 + col_w * 0.3, z1 - win_w - 0.35, col_w)  # frames and sills stay on the facade
        if not (len(floors) and len(cols)):
            return
        fy, cz = (a.ravel() for a in np.meshgrid(floors, cols, indexing="ij"))

        def quads(y0, y1, c0, c1):  # one quad per window, corners relative to the window's own (fy, cz)
            return list(cam.project(np.stack([np.stack([np.full_like(fy, x_f), fy + a, cz + b], 1) for a, b in ((y0, c0), (y0, c1), (y1, c1), (y1, c0))], 1)))

        pad = rng.uniform(0.06, 0.16)
        cv.paint(quads(-pad, win_h + pad, -pad, win_w + pad), frame, material=M["paint"])
        cv.paint(quads(-pad - 0.12, -pad, -pad - 0.1, win_w + pad + 0.1), frame * 1.1 + 10, material=M["paint"])  # sills
        polys = quads(0, win_h, 0, win_w)
        lit = rng.random(len(polys)) < 0.12
        cv.paint([p for p, l in zip(polys, lit) if not l], glass, material=M["glass"])
        cv.paint([p for p, l in zip(polys, lit) if l], pal.jitter(glass * 1.5 + 25, 6), material=M["glass"])
        sky = np.asarray(self.sky_color, float)
        shine = rng.random(len(polys)) < rng.uniform(0.2, 0.7)  # the sky reflected in the upper part of the pane
        refl = quads(win_h * rng.uniform(0.4, 0.7), win_h, 0, win_w * rng.uniform(0.4, 1.0))
        cv.paint([p for p, s in zip(refl, shine) if s], glass * 0.4 + sky * 0.6 * rng.uniform(0.6, 1.0), material=M["glass"])
        bar = rng.uniform(0.04, 0.08)
        if rng.random() < 0.7:  # glazing bars: a cross or a vertical bar
            cv.paint(quads(0, win_h, win_w / 2 - bar, win_w / 2 + bar), frame, material=M["paint"])
            if rng.random() < 0.6:
                cv.paint(quads(win_h * 0.62 - bar, win_h * 0.62 + bar, 0, win_w), frame, material=M["paint"])

    def shopfront(self, x_f, z0, z1, col):
        """Ground-floor shop windows under a fascia with a sign, with doors between them."""
        cam, rng, pal, cv = self.cam, self.rng, self.pal, self.cv
        top = rng.uniform(2.4, 3.2)
        fascia = pal.pick((2, pal.vivid), (1, lambda: pal.grey(20, 60, 3)), (1, lambda: col * 0.6))
        cv.paint([cam.wall_x(x_f, z0, z1, top, top + rng.uniform(0.4, 0.8))], fascia, material=M["paint"])
        z = z0 + rng.uniform(0.3, 1.5)
        while z < z1 - 1.5:
            wd = min(rng.uniform(2, 6), z1 - z - 0.3)
            cv.paint([cam.wall_x(x_f, z - 0.1, z + wd + 0.1, 0.25, top - 0.1)], pal.grey(30, 90, 3), material=M["metal"])
            cv.paint([cam.wall_x(x_f, z, z + wd, 0.35, top - 0.2)], pal.glass(self.sky_color) * rng.uniform(0.8, 1.3), material=M["glass"])
            if rng.random() < 0.5:  # goods or posters behind the glass
                zi = z + rng.uniform(0.2, max(0.3, wd - 1.0))
                cv.paint([cam.wall_x(x_f, zi, zi + rng.uniform(0.4, 1.0), 0.5, rng.uniform(1.0, 2.0))], pal.cloth(), material=M["paint"])
            z += wd + rng.uniform(0.4, 2.5)

    def zone(self, side, kind, z0, z1):
        cam, rng, pal, cv = self.cam, self.rng, self.pal, self.cv
        o = self.outer(side)
        if kind == "building":
            setback = rng.uniform(0, 0.8) if rng.random() < 0.75 else rng.uniform(1, 5)
            x_f = o + side * setback
            if setback > 0.3:
                lab = rng.choice([L["sidewalk"], L["terrain"], L["vegetation"]], p=[0.4, 0.35, 0.25])
                c = pal.sidewalk() if lab == L["sidewalk"] else pal.terrain() if lab == L["terrain"] else pal.vegetation()
                if lab == L["vegetation"]:  # a hedge in the front garden
                    hh = rng.uniform(0.6, 1.6)
                    self.add(z1 + 60, lambda: cv.fill([cam.wall_x(o + side * 0.4, z0, z1, 0, hh)], L["vegetation"], c))
                    lab, c = L["terrain"], pal.terrain()
                cv.fill([cam.ground_quad(min(o, x_f), max(o, x_f), z0, z1)], int(lab), c)
            hb = rng.uniform(*self.bld_h)
            self.add(z1 + 200, lambda: self.building(side, x_f, z0, z1, hb))
            return
        # a building further back, seen over the wall / fence / trees
        back = o + side * rng.uniform(6, 20)
        if rng.random() < 0.7:
            hb = rng.uniform(*self.bld_h)
            self.add(z1 + 300, lambda: self.building(side, back, z0, z1, hb))
        gl = L["terrain"] if kind != "wall" or rng.random() < 0.5 else L["ground"]
        gcol = pal.terrain() if gl == L["terrain"] else pal.sidewalk() * 0.8
        cv.fill([cam.ground_quad(min(o, back), max(o, back), z0, z1)], gl, gcol)
        if kind in ("vegetation", "fence"):
            n = int((z1 - z0) / rng.uniform(2.5, 6)) + 1
            for _ in range(n):
                zt = rng.uniform(z0, z1)
                xt = o + side * rng.uniform(1, abs(back - o) + 1)
                if rng.random() < 0.7:
                    self.add(zt + 100, lambda xt=xt, zt=zt: self.tree(xt, zt))
                else:
                    self.add(zt + 100, lambda xt=xt, zt=zt: self.bush(xt, zt))
        if kind in ("wall", "fence"):
            hw = rng.uniform(0.8, 2.5) if kind == "wall" else rng.uniform(0.9, 2.0)
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
        else:  # coping and courses of stone
            cv.paint([cam.wall_x(x, z0, z1, hw - 0.12, hw)], np.asarray(col) * 0.8)
            for y in np.arange(0.3, hw - 0.15, 0.3):
                cv.paint([cam.wall_x(x, z0, z1, y, y + 0.02)], np.asarray(col) * 0.85)

    # ---- void regions of real frames
    def void_regions(self) -> None:
        cv, rng, h, w = self.cv, self.rng, self.h, self.w
        # ego vehicle: the bonnet at the bottom
        top = h * rng.uniform(0.89, 0.92)
        bulge = h * rng.uniform(0.06, 0.1)
        xs = np.linspace(-0.05 * w, 1.05 * w, 24)
        ys = top + bulge * ((2 * xs / w - 1) ** 2)
        hood = np.concatenate([np.stack([xs, ys], 1), [[1.05 * w, h + 5], [-0.05 * w, h + 5]]])
        col = self.pal.pick((4, lambda: self.pal.grey(10, 60, 3)), (1, lambda: self.pal.grey(120, 200, 3)))  # the recording car is dark
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
