"""What stands in the street: trees, poles with lights and signs, vehicles, people and cyclists.

``StreetObjects`` is mixed into ``Scene``; its methods draw through the scene's camera, canvas, palette
and RNG. Sizes are metres; the camera turns them into pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from cityseg.data.synth.drawing import circle, segment
from cityseg.data.synth.spec import L


class StreetObjects:
    """Drawing methods for standing objects (mixed into ``Scene``)."""

    # ---- vegetation
    def ground_shadow(self, x, z, r, height):
        """The shadow of a crown of radius ``r`` at ``height`` on the ground, offset away from the sun."""
        if not self.shadow_dark:
            return
        dx, dz = -self.sun_side * height * self.shadow_len[0], height * self.shadow_len[1]
        blob = circle(x + dx, z + dz, r * 1.1, r, 14, self.rng.normal(0, 0.15, 14))
        self.cv.shadow([self.cam.ground_poly(blob)], self.shadow_dark * 0.9)

    def tree(self, x, z, pit: bool = False):
        """A tree with a trunk and a noisy crown; ``pit``: a street tree in a pit of soil in the sidewalk."""
        cam, rng, pal, cv = self.cam, self.rng, self.pal, self.cv
        th = rng.uniform(2.2, 4.5)
        tw = rng.uniform(0.2, 0.45)
        r = rng.uniform(1.8, 4.5)
        col = pal.vegetation()
        if pit:
            q = rng.uniform(0.6, 0.9)
            cv.fill([cam.ground_quad(x - q, x + q, z - q, z + q, self.kerb + 0.01)], L["terrain"], pal.terrain() * 0.7)
        self.ground_shadow(x, z, r, th + r)
        trunk = cam.billboard(x, z, [[-tw / 2, 0], [tw / 2, 0], [tw / 2 * 0.7, th + r * 0.5], [-tw / 2 * 0.7, th + r * 0.5]])
        crown = cam.billboard(x, z, circle(0, th + r, r, r * rng.uniform(0.8, 1.2), 28, rng.normal(0, 0.12, 28)))
        cv.fill([trunk], L["vegetation"], pal.beige() * rng.uniform(0.3, 0.55))
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
        n = int(min(40, 4 + s * r / 4))
        u = rng.uniform(-0.8, 0.8, (n, 1)) * r
        v = cy + rng.uniform(-0.7, 0.7, (n, 1)) * r
        rr = rng.uniform(0.08, 0.25, (n, 1)) * r
        t = np.linspace(0, 2 * np.pi, 8, endpoint=False)
        uv = np.stack([u + rr * np.cos(t), v + rr * np.sin(t)], -1)
        polys = list(cam.billboard(x, z, uv.reshape(-1, 2)).reshape(n, 8, 2))
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
            what = rng.choice(["lamp", "light", "sign", "pole"], p=[0.22, 0.16, 0.45, 0.17])
            if self.cross is not None and abs(z - self.cross[0]) < 6:
                what = "light"
            if not self.in_cross(z, 0.5):
                self.add(z, lambda x=x, z=z, what=what: self.pole(side, x, z, what))
            z += rng.uniform(6, 22)
        if self.cross is not None:  # traffic lights at the corner of the cross street
            x = e + side * rng.uniform(0.4, 0.8)
            self.add(self.cross[0] - 1, lambda: self.pole(side, x, self.cross[0] - 1, "light"))
        if rng.random() < self.tree_p:  # a row of street trees in pits along the kerb
            z = rng.uniform(2, 10)
            step = rng.uniform(6, 12)
            x = e + side * rng.uniform(0.8, 1.3)
            while z < min(self.z_far, 120):
                if not self.in_cross(z, 2):
                    self.add(z, lambda z=z: self.tree(x, z, pit=True))
                z += step * rng.uniform(0.8, 1.2)
        # clutter: static (bins, benches, bollards) and dynamic (containers, strollers)
        for _ in range(rng.integers(0, 5)):
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
        ph = {"lamp": rng.uniform(6, 10), "light": rng.uniform(3, 5), "sign": rng.uniform(2.3, 3.5)}.get(what, rng.uniform(1, 8))
        pw = rng.uniform(0.12, 0.25) if what != "sign" else rng.uniform(0.06, 0.12)
        if what == "pole" and ph < 2:  # bollards and short posts
            pw = rng.uniform(0.1, 0.2)
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
            if rng.random() < 0.35:  # seen from behind or the side: no lamps
                cv.paint(
                    [cam.billboard(x, z, [[u0 + bw * 0.15, ph - bh * 0.9], [u0 + bw * 0.85, ph - bh * 0.9], [u0 + bw * 0.85, ph - bh * 0.1]])], housing * 0.8
                )
                return
            on = rng.integers(3)
            lamps = [(200, 40, 30), (220, 170, 30), (40, 200, 90)]
            for i in range(3):
                c = np.array(lamps[i]) if i == on else np.asarray(housing) * 0.6 + 20
                cy = ph - bh * (0.2 + 0.3 * i)
                cv.paint([cam.billboard(x, z, circle(u0 + bw / 2, cy, bw * 0.3, bw * 0.3, 10))], c)
        elif what == "sign":
            sz = rng.uniform(0.6, 1.0)
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
        tram = rng.random() < 0.03
        for lane in range(self.lanes):
            xc = self.lanes_x0 + (lane + 0.5) * self.lane_w
            oncoming = self.lanes >= 2 and lane < self.lanes // 2
            if tram and lane == self.lanes // 2 - 1:  # rails in the lane, and sometimes the tram on them
                for dx in (-0.72, 0.72):
                    self.cv.paint([self.cam.ground_quad(xc + dx - 0.04, xc + dx + 0.04, 1.0, self.z_far)], self.pal.grey(120, 170, 3))
                if rng.random() < 0.7:
                    z = rng.uniform(10, 40)
                    dims = self.vehicle_dims("train")
                    self.add(z, lambda z=z, xc=xc, dims=dims: self.vehicle("train", xc, z, dims, True))
                continue
            z = rng.uniform(7, 22)
            while z < 90:
                if rng.random() < 0.2 and not self.in_cross(z, 3):
                    kind = rng.choice(["car", "truck", "bus", "rider"], p=[0.84, 0.025, 0.025, 0.11])
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
        if rng.random() < 0.5:  # cyclists along the kerb on the right
            for _ in range(rng.integers(1, 4)):
                z = rng.uniform(8, 40)
                x = self.edge(1) - rng.uniform(0.6, 1.0) - 2.2 * self.parking_lane[1]
                self.add(z, lambda x=x, z=z: self.cyclist(x, z, on_road=True, motor=False))
        for side in (-1, 1):  # parked cars along the kerb, in a parking lane or half on the road
            if not (self.parking_lane[side] or rng.random() < 0.3):
                continue
            x = self.edge(side) - side * rng.uniform(1.0, 1.2)
            z = rng.uniform(3, 12)
            while z < 80:
                if self.in_cross(z, 6):
                    z += 4
                    continue
                if rng.random() < 0.42:
                    kind = rng.choice(["car", "truck", "motorcycle"], p=[0.92, 0.02, 0.06])
                    if kind == "motorcycle":
                        self.add(z, lambda x=x, z=z: self.cyclist(x + side * 0.4, z, on_road=False, motor=True))
                        z += rng.uniform(1.5, 3)
                        continue
                    dims = self.vehicle_dims(kind)
                    self.add(z, lambda x=x, z=z, kind=kind, dims=dims: self.vehicle(kind, x, z, dims, bool(rng.random() < 0.4)))
                    z += dims[0] + rng.uniform(0.5, 2.5)
                else:
                    z += rng.uniform(3, 10)

    def vehicle_dims(self, kind):
        rng = self.rng
        return {
            "car": (rng.uniform(3.8, 4.9), rng.uniform(1.7, 1.95), rng.uniform(1.4, 1.55)),
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
        # the dark patch under the vehicle (ambient occlusion), then its cast shadow
        cv.shadow([cam.ground_quad(x0 - 0.1, x1 + 0.1, z0 - 0.15, z1 + 0.1)], 0.6)
        if self.shadow_dark:
            dx, dz = -self.sun_side * height * self.shadow_len[0] * 0.7, height * self.shadow_len[1] * 0.7
            cv.shadow(
                [
                    self._hull(
                        cam.ground_poly(
                            [(x0, z0), (x1, z0), (x1, z1), (x0, z1), (x0 + dx, z0 + dz), (x1 + dx, z0 + dz), (x1 + dx, z1 + dz), (x0 + dx, z1 + dz)]
                        )
                    )
                ],
                self.shadow_dark,
            )
        clear = 0.18 if kind == "car" else 0.35
        body = 0.55
        if kind == "car":  # sedan, hatchback, SUV or van: the cab's length and the body's height differ
            style = rng.choice(["sedan", "hatch", "suv", "van"], p=[0.4, 0.3, 0.18, 0.12])
            height *= {"sedan": 1.0, "hatch": 1.02, "suv": 1.18, "van": 1.35}[style]
            body = {"sedan": 0.55, "hatch": 0.55, "suv": 0.6, "van": 0.75}[style]
            back = {"sedan": rng.uniform(0.22, 0.3), "hatch": rng.uniform(0.04, 0.1), "suv": rng.uniform(0.04, 0.1), "van": 0.02}[style]
            front = {"sedan": 0.3, "hatch": 0.32, "suv": 0.3, "van": 0.15}[style]
            cab = (z0 + length * (back if not oncoming else front), z1 - length * (front if not oncoming else back))
        parts = [self._hull(self._box(x0, x1, clear, height * (body if kind == "car" else 1.0), z0, z1))]
        if kind == "car":
            parts.append(self._hull(self._box(x0 + 0.1, x1 - 0.1, height * body * 0.9, height, *cab)))
        if kind == "truck":  # lower cab at the front, cargo box behind
            parts = [
                self._hull(self._box(x0, x1, clear, height, z0 + 2.2, z1) if oncoming else self._box(x0, x1, clear, height, z0, z1 - 2.2)),
                self._hull(self._box(x0, x1, clear, height * 0.8, z0, z0 + 2.2) if oncoming else self._box(x0, x1, clear, height * 0.8, z1 - 2.2, z1)),
            ]
        # wheels on the visible side and under the near end
        side_x = x0 if x > 0 else x1
        wr = 0.31 if kind == "car" else 0.5
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
        ytop = height * (body if kind == "car" else 1.0)
        end = cam.wall_z(z0, x0, x1, clear, ytop)
        side = cam.wall_x(side_x, z0, z1, clear, ytop)
        cv.paint([side], np.asarray(col) * rng.uniform(0.75, 0.95))
        cv.paint([end], np.asarray(col) * rng.uniform(0.85, 1.1))
        cv.paint(wheels, tyre)
        glass = pal.glass(self.sky_color)
        if kind == "car":
            cz0, cz1 = cab
            cv.paint([cam.wall_z(cz0, x0 + 0.25, x1 - 0.25, height * (body + 0.04), height * 0.93)], glass)
            cv.paint([cam.wall_x(side_x + (0.1 if x > 0 else -0.1), cz0 + 0.15, cz1 - 0.15, height * (body + 0.05), height * 0.92)], glass)
        else:  # window band (bus / tram) or windscreen (truck cab)
            y0, y1 = height * 0.45, height * 0.85
            if kind in ("bus", "train"):  # a window band with pillars, the windscreen, the doors
                cv.paint([cam.wall_x(side_x, z0 + 0.5, z1 - 0.5, y0, y1)], glass)
                pillars = np.arange(z0 + 0.5, z1 - 0.5, rng.uniform(1.2, 1.8))
                cv.paint([cam.wall_x(side_x, zz, zz + 0.12, y0, y1) for zz in pillars], col)
                cv.paint([cam.wall_z(z0, x0 + 0.15, x1 - 0.15, y0 * 0.8, y1)], glass)
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
                z = rng.uniform(5, 60)
                for _ in range(1 if rng.random() < 0.7 else rng.integers(2, 4)):
                    x = self.edge(side) + side * rng.uniform(0.3, self.sidewalk_w[side] - 0.2)
                    zz = z + rng.uniform(-1.5, 1.5)
                    self.add(zz, lambda x=x, z=zz: self.draw_person(x, z, L["person"], rng.uniform(-1, 1), lift=self.kerb))
            if rng.random() < 0.6:  # parked bicycles
                z = rng.uniform(5, 40)
                x = self.outer(side) - side * 0.5
                for i in range(rng.integers(1, 6)):
                    self.add(z + i * 0.6, lambda x=x, z=z + i * 0.6: self.cyclist(x, z, on_road=False))
        if rng.random() < 0.3 or self.cross is not None:  # people crossing the road, at the crossing if there is one
            z0 = self.cross[0] - 3 if self.cross is not None else rng.uniform(8, 30)
            for _ in range(rng.integers(1, 5)):
                x, z = rng.uniform(*self.road), z0 + rng.uniform(-1.5, 1.5)
                self.add(z, lambda x=x, z=z: self.draw_person(x, z, L["person"], rng.uniform(-1, 1)))

    def cyclist(self, x, z, on_road: bool, motor: bool | None = None):
        """A bicycle or motorcycle along the road: ridden on the road, parked (kerb height) elsewhere."""
        cam, rng, pal, cv = self.cam, self.rng, self.pal, self.cv
        if motor is None:
            motor = on_road and rng.random() < 0.35
        lab = L["motorcycle"] if motor else L["bicycle"]
        inst = cv.new_instance(lab)
        y0 = 0.0 if on_road or motor else self.kerb
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
