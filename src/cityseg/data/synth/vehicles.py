"""Vehicles: cars of several body styles, trucks, buses and trams, and where they drive and park.

A vehicle is a few convex solids (lower body, cabin, wheels) placed with a ``Pose``; its silhouette is
the union of their hulls, so it is right from behind, in front and from the side. Only the faces the
camera sees get their details: windows, lights, plate, wheel rims, the darker lower body and the
lighter lids. Every vehicle stands on a dark contact shadow and casts its sun shadow.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cityseg.data.synth.drawing import segment
from cityseg.data.synth.pose import Pose, box
from cityseg.data.synth.spec import L

#: car body styles: probability, length, width, height, belt line (m); cabin rear and front (share of the
#: length from each end) and how far the roof is set in from them (rear and back window, windscreen)
CAR_STYLES = {
    "sedan": (0.38, (4.3, 4.9), (1.75, 1.9), (1.4, 1.5), (0.8, 0.9), (0.22, 0.3), (0.11, 0.15)),
    "hatch": (0.32, (3.7, 4.3), (1.68, 1.8), (1.42, 1.55), (0.82, 0.92), (0.05, 0.32), (0.06, 0.15)),
    "suv": (0.18, (4.4, 4.9), (1.82, 1.95), (1.62, 1.8), (0.95, 1.05), (0.04, 0.27), (0.04, 0.12)),
    "van": (0.12, (4.8, 5.4), (1.9, 2.0), (1.9, 2.25), (1.0, 1.1), (0.02, 0.1), (0.02, 0.1)),
}


@dataclass(frozen=True)
class CarShape:
    """A car's proportions in its own frame (m): half length and width, height, belt line, ground
    clearance, the cabin's rear and front at the belt (``fr``, ``ff``) and under the roof (``rr``, ``rf``)."""

    hl: float
    hw: float
    height: float
    belt: float
    clear: float
    fr: float
    ff: float
    rr: float
    rf: float
    ch: float = 0.12  # the chamfer that rounds the body's plan

    @property
    def cab_lo(self) -> float:
        return self.hw - 0.06

    @property
    def cab_hi(self) -> float:
        return self.hw - 0.22

    def body(self) -> np.ndarray:
        """The lower body: rounded plan, the bonnet's front edge lower than the middle."""
        hl, hw, ch, top_end = self.hl, self.hw, self.ch, self.belt - 0.12
        return np.concatenate(
            [
                box(-hw + ch, hw - ch, self.clear, top_end, -hl, hl),
                box(-hw, hw, self.clear + 0.05, top_end, -hl + ch, hl - ch),
                box(-hw, hw, self.belt, self.belt, -hl + 0.6, hl - 0.6),
            ]
        )

    def cabin(self) -> np.ndarray:
        belt = self.belt - 0.02
        return np.concatenate(
            [box(-self.cab_lo, self.cab_lo, belt, belt, self.fr, self.ff), box(-self.cab_hi, self.cab_hi, self.height, self.height, self.rr, self.rf)]
        )


class Vehicles:
    """Drawing methods for vehicles and the traffic of a street (mixed into ``Scene``)."""

    # ---- where vehicles are
    def traffic(self):
        """Vehicles and riders in the lanes, cyclists along the kerb, cross traffic, parked cars."""
        rng = self.rng
        tram = rng.random() < 0.05
        for lane in range(self.lanes):
            self._lane_traffic(lane, tram)
        if rng.random() < 0.25:
            self._kerb_cyclists()
        if self.cross is not None and rng.random() < 0.6:
            self._cross_traffic()
        for side in (-1, 1):  # parked cars along the kerb, in a parking lane or half on the road
            if self.parking_lane[side] or rng.random() < 0.3:
                self._parked(side)

    def _lane_traffic(self, lane: int, tram: bool):
        """One lane's vehicles and riders, far apart; the tram lane gets rails and sometimes the tram."""
        rng = self.rng
        xc = self.lanes_x0 + (lane + 0.5) * self.lane_w
        oncoming = self.lanes >= 2 and lane < self.lanes // 2
        heading = np.pi if oncoming else 0.0
        if tram and lane == self.lanes // 2 - 1:
            for dx in (-0.72, 0.72):
                self.cv.paint([self.cam.ground_quad(xc + dx - 0.04, xc + dx + 0.04, 1.0, self.z_far)], self.pal.grey(120, 170, 3))
            if rng.random() < 0.7:
                z = rng.uniform(10, 40)
                dims = self.vehicle_dims("train")
                self.add(z, lambda z=z, xc=xc, dims=dims, h=heading: self.vehicle("train", xc, z, h, dims))
            return
        z = rng.uniform(9, 25)
        while z < 90:
            if rng.random() < 0.14 and not self.in_cross(z, 3):
                kind = rng.choice(["car", "truck", "bus", "bicycle", "motorcycle"], p=[0.845, 0.03, 0.06, 0.03, 0.035])
                x = xc + rng.uniform(-0.4, 0.4)
                if kind in ("bicycle", "motorcycle"):
                    h = heading + rng.normal(0, 0.05)
                    self.add(z, lambda x=x, z=z, h=h, m=kind == "motorcycle": self.two_wheeler(x, z, h, motor=m, rider=True))
                    z += rng.uniform(4, 12)
                    continue
                dims = self.vehicle_dims(kind)
                self.add(z, lambda x=x, z=z, kind=kind, dims=dims, h=heading: self.vehicle(kind, x, z, h, dims))
                z += dims[0] + rng.uniform(2, 25)
            else:
                z += rng.uniform(5, 25)

    def _kerb_cyclists(self):
        """One or two cyclists along the kerb on the right; each one's wobble is drawn when it is drawn."""
        rng = self.rng
        for _ in range(rng.integers(1, 3)):
            z = rng.uniform(8, 40)
            x = self.edge(1) - rng.uniform(0.6, 1.0) - 2.2 * self.parking_lane[1]
            self.add(z, lambda x=x, z=z: self.two_wheeler(x, z, rng.normal(0, 0.05), motor=False, rider=True))

    def _cross_traffic(self):
        """One or two cars or riders on the cross street, seen from the side."""
        rng = self.rng
        for _ in range(rng.integers(1, 3)):
            zc = self.cross[0] + rng.uniform(0.25, 0.75) * (self.cross[1] - self.cross[0])
            x = rng.uniform(-25, 25)
            h = rng.choice([-1, 1]) * np.pi / 2
            if rng.random() < 0.2:
                self.add(zc, lambda x=x, z=zc, h=h, m=bool(rng.random() < 0.5): self.two_wheeler(x, z, h, motor=m, rider=True))
            else:
                dims = self.vehicle_dims("car")
                self.add(zc, lambda x=x, z=zc, h=h, dims=dims: self.vehicle("car", x, z, h, dims))

    def _parked(self, side: int):
        """Parked cars, the odd truck and motorcycles along the kerb on ``side``."""
        rng = self.rng
        x = self.edge(side) - side * rng.uniform(1.0, 1.2)
        z = rng.uniform(3, 12)
        while z < 80:
            if self.in_cross(z, 6):
                z += 4
                continue
            if rng.random() < 0.26:
                kind = rng.choice(["car", "truck", "motorcycle"], p=[0.88, 0.02, 0.10])
                if kind == "motorcycle":  # parked across the lane or along it
                    h = side * np.pi / 2 + rng.normal(0, 0.3) if rng.random() < 0.5 else rng.choice([0.0, np.pi]) + rng.normal(0, 0.1)
                    # 0.4 m towards the right of the road on both sides: the frames of this generator version
                    # are drawn so (a change is a new VERSION)
                    self.add(z, lambda x=x, z=z, h=h: self.two_wheeler(x + 0.4, z, h, motor=True, rider=False))
                    z += rng.uniform(1.5, 3)
                    continue
                dims = self.vehicle_dims(kind)
                h = (0.0 if rng.random() < 0.6 else np.pi) + rng.normal(0, 0.03)
                self.add(z + dims[0] / 2, lambda x=x, z=z + dims[0] / 2, kind=kind, dims=dims, h=h: self.vehicle(kind, x, z, h, dims))
                z += dims[0] + rng.uniform(0.5, 2.5)
            else:
                z += rng.uniform(3, 10)

    def vehicle_dims(self, kind):
        """(length, width, height, style) of a vehicle of ``kind``."""
        rng = self.rng
        if kind == "car":
            names = list(CAR_STYLES)
            style = str(rng.choice(names, p=[CAR_STYLES[n][0] for n in names]))
            _, ln, wd, ht, *_ = CAR_STYLES[style]
            return rng.uniform(*ln), rng.uniform(*wd), rng.uniform(*ht), style
        if kind == "truck":
            style = str(rng.choice(["box", "pickup"], p=[0.7, 0.3]))
            if style == "pickup":
                return rng.uniform(5.0, 5.6), rng.uniform(1.85, 2.0), rng.uniform(1.75, 1.9), style
            return rng.uniform(6, 10), rng.uniform(2.3, 2.55), rng.uniform(2.8, 3.8), style
        if kind == "bus":
            return rng.uniform(11, 13), rng.uniform(2.45, 2.55), rng.uniform(3.0, 3.4), "bus"
        return rng.uniform(20, 30), rng.uniform(2.3, 2.65), rng.uniform(3.3, 3.7), "tram"

    # ---- drawing
    def _vehicle_shadows(self, pose: Pose, length, width, height):
        """The dark patch under the vehicle (ambient occlusion), then its cast shadow."""
        cam, cv = self.cam, self.cv
        cv.shadow([cam.ground_poly(pose.footprint(-width / 2, width / 2, -length / 2, length / 2, 0.15), pose.y0)], 0.45)
        cv.shadow([cam.ground_poly(pose.footprint(-width / 2, width / 2, -length / 2, length / 2, -0.1), pose.y0)], 0.72)
        if self.shadow_dark:
            dx, dz = -self.sun_side * height * self.shadow_len[0] * 0.7, height * self.shadow_len[1] * 0.7
            foot = pose.footprint(-width / 2, width / 2, -length / 2, length / 2)
            cast = np.concatenate([foot, foot + [dx, dz]])
            cv.shadow([self._hull(cam.ground_poly(cast))], self.shadow_dark)

    def _hull(self, pts2d):
        return cv2.convexHull(np.asarray(pts2d, np.float32)).reshape(-1, 2)

    def _wheels(self, pose: Pose, lab, inst, axles, half, r, width):
        """Tyres (label) on both sides; returns the visible side's hubs for the rims."""
        tyre = self.pal.grey(10, 35, 2)
        self.cv.fill([pose.wheel(s * (half - width / 2), f, r, width) for s in (-1, 1) for f in axles], lab, tyre, inst)
        return tyre

    def _rims(self, pose: Pose, side_l, axles, r, tyre):
        if side_l is None:
            return
        pal = self.pal
        for f in axles:
            self.cv.paint([pose.disc(side_l, f, r, r * 1.0, 14)], tyre)
            self.cv.paint([pose.disc(side_l, f, r, r * 0.58, 12)], pal.grey(110, 200, 3))
            self.cv.paint([pose.disc(side_l, f, r, r * 0.2, 8)], pal.grey(50, 100, 3))

    def _visible(self, pose: Pose, half_w, half_l, y):
        """The visible side (its lateral coordinate or None) and end (its forward coordinate or None)."""
        side = next((s * half_w for s in (-1, 1) if pose.sees([s, 0.0, 0.0], [s * half_w, y, 0.0])), None)
        end = next((e * half_l for e in (-1, 1) if pose.sees([0.0, 0.0, e], [0.0, y, e * half_l])), None)
        return side, end

    def vehicle(self, kind, x, z, heading, dims):
        if kind == "car" or dims[3] == "pickup":
            self.car(x, z, heading, dims)
        else:
            self.big_vehicle(kind, x, z, heading, dims)

    def car(self, x, z, heading, dims):
        """A car of one of the body styles (or a pickup, labelled truck)."""
        rng, pal, cv = self.rng, self.pal, self.cv
        length, width, height, style = dims
        pickup = style == "pickup"
        lab = L["truck"] if pickup else L["car"]
        inst = cv.new_instance(lab)
        pose = Pose(self.cam, x, z, heading)
        col = pal.vehicle()
        g = self._car_shape(style, length, width, height)
        r = rng.uniform(0.3, 0.36) if not pickup else 0.4
        self._vehicle_shadows(pose, length, width, height)
        axles = (-g.hl + 0.85, g.hl - 0.85)
        tyre = self._wheels(pose, lab, inst, axles, g.hw - 0.03, r, 0.22)
        cv.fill([pose.hull(g.body()), pose.hull(g.cabin())], lab, col, inst)
        side_l, end_f = self._visible(pose, g.hw, g.hl, g.belt / 2)
        glass = pal.glass(self.sky_color)
        lower = np.asarray(col) * rng.uniform(0.6, 0.75)
        # lids seen from above are lighter than the sides, the lower body darker
        y = g.belt - 0.01
        lids = [
            pose.image([[-g.hw + 0.05, y, a], [g.hw - 0.05, y, a], [g.hw - 0.05, y, b], [-g.hw + 0.05, y, b]])
            for a, b in ((g.ff, g.hl - g.ch), (-g.hl + g.ch, g.fr))
        ]
        cv.paint(lids, np.asarray(col) * 1.15 + 12)
        if side_l is not None:
            self._car_side(pose, g, side_l, col, lower, glass, style, axles, r)
        if end_f is not None:
            self._car_end(pose, g, end_f, lower, glass, pickup)
        self._rims(pose, side_l, axles, r, tyre)

    def _car_shape(self, style, length, width, height) -> CarShape:
        """The car's proportions: its style's belt line and cabin, varied a little, and the clearance."""
        rng = self.rng
        if style == "pickup":
            belt, (cab_r, cab_f), (in_r, in_f) = 1.05, (0.42, 0.3), (0.02, 0.12)
        else:
            _, _, _, _, belt_r, cab_r_r, in_r_r = CAR_STYLES[style]
            belt = rng.uniform(*belt_r)
            cab_r, cab_f = rng.uniform(cab_r_r[0] * 0.9, cab_r_r[0] * 1.1), cab_r_r[1] * rng.uniform(0.9, 1.1)
            in_r, in_f = in_r_r[0] * rng.uniform(0.8, 1.2), in_r_r[1] * rng.uniform(0.85, 1.15)
        hl, hw = length / 2, width / 2
        fr, ff = -hl + cab_r * length, hl - cab_f * length
        return CarShape(hl, hw, height, belt, rng.uniform(0.14, 0.2), fr, ff, fr + in_r * length, ff - in_f * length)

    def _car_side(self, pose: Pose, g: CarShape, side_l, col, lower, glass, style, axles, r):
        """The visible side: the darker lower body, the crease, the side windows, the wheel arches."""
        cv, hl, ch, clear, belt, height = self.cv, g.hl, g.ch, g.clear, g.belt, g.height
        s = np.sign(side_l)
        cv.paint([pose.side_quad(side_l, -hl + ch, hl - ch, clear + 0.05, clear + 0.3 * (belt - clear))], lower)
        cv.paint([pose.side_quad(side_l, -hl + ch, hl - ch, belt - 0.2, belt - 0.17)], np.asarray(col) * 0.8)  # crease
        # side windows on the cabin's sloping side: base points at the belt, top points under the roof
        t0, t1 = 0.12, 0.88
        lo = lambda f: [s * (g.cab_lo + (g.cab_hi - g.cab_lo) * t0), belt + (height - belt) * t0, f]  # noqa: E731
        hi = lambda f: [s * (g.cab_lo + (g.cab_hi - g.cab_lo) * t1), belt + (height - belt) * t1, f]  # noqa: E731
        a0, b0 = g.fr + (g.rr - g.fr) * t0 + 0.08, g.ff + (g.rf - g.ff) * t0 - 0.08
        a1, b1 = g.fr + (g.rr - g.fr) * t1 + 0.08, g.ff + (g.rf - g.ff) * t1 - 0.08
        if b1 > a1:
            cv.paint([pose.image([lo(a0), lo(b0), hi(b1), hi(a1)])], glass)
            if style in ("sedan", "suv", "hatch"):  # the B pillar
                m = (a0 + b0) / 2 + 0.1
                cv.paint([pose.image([lo(m - 0.05), lo(m + 0.05), hi(m + 0.05), hi(m - 0.05)])], col)
        for f in axles:  # wheel arches
            cv.paint([pose.disc(side_l, f, r, r * 1.15, 14)], np.asarray(col) * 0.25)

    def _car_end(self, pose: Pose, g: CarShape, end_f, lower, glass, pickup: bool):
        """The visible end: back window or windscreen, bumper, lights, the grille in front, the plate."""
        cv, pal, hw, clear, belt = self.cv, self.pal, g.hw, g.clear, g.belt
        e = np.sign(end_f)
        near, top_f = (g.fr, g.rr) if e < 0 else (g.ff, g.rf)
        # the back window or windscreen on the sloping end of the cabin
        q = 0.1
        win = [
            [-g.cab_lo + q, belt + 0.05, near + (top_f - near) * 0.06],
            [g.cab_lo - q, belt + 0.05, near + (top_f - near) * 0.06],
            [g.cab_hi - q * 0.6, g.height - 0.06, near + (top_f - near) * 0.94],
            [-g.cab_hi + q * 0.6, g.height - 0.06, near + (top_f - near) * 0.94],
        ]
        if not pickup or e > 0:
            cv.paint([pose.image(win)], glass)
        cv.paint([pose.end_quad(end_f, -hw + g.ch, hw - g.ch, clear, clear + 0.22)], lower * 0.8)  # bumper
        ly0, ly1 = belt - 0.3, belt - 0.14
        lc = (200, 30, 30) if e < 0 else pal.grey(200, 240, 4)
        for lx in (-hw + 0.08, hw - 0.4):
            cv.paint([pose.end_quad(end_f, lx, lx + 0.32, ly0, ly1)], lc)
        if e > 0:
            cv.paint([pose.end_quad(end_f, -hw + 0.45, hw - 0.45, ly0 - 0.02, ly1 - 0.02)], pal.grey(15, 45, 2))  # grille
        cv.paint([pose.end_quad(end_f, -0.26, 0.26, clear + 0.25, clear + 0.37)], pal.grey(200, 240, 3))  # plate

    def big_vehicle(self, kind, x, z, heading, dims):
        """A box truck, bus or tram: a tall box on big wheels, window rows on the sides."""
        rng, pal, cv = self.rng, self.pal, self.cv
        length, width, height, style = dims
        lab = L[kind]
        inst = cv.new_instance(lab)
        pose = Pose(self.cam, x, z, heading)
        if kind == "bus":
            col = pal.pick((2, pal.vivid), (1, lambda: pal.grey(150, 235)), (1, lambda: np.array([220, 190, 40])))
        elif kind == "train":
            col = pal.pick((1, lambda: pal.grey(150, 230)), (1, pal.vivid))
        else:
            col = pal.vehicle()
        hl, hw = length / 2, width / 2
        clear, r = 0.4, 0.5
        self._vehicle_shadows(pose, length, width, height)
        axles = (-hl + 2, -hl + 4, hl - 4, hl - 2) if kind == "train" else (-hl + 2.2, hl - 2.6) if kind == "bus" else (-hl + 1.2, -hl + 2.3, hl - 1.3)
        tyre = self._wheels(pose, lab, inst, axles, hw - 0.05, r, 0.3)
        glass = pal.glass(self.sky_color)
        if kind == "truck":  # cab at the front, the cargo box behind it
            cab_len = 2.2
            cargo = box(-hw, hw, clear + 0.3, height, -hl, hl - cab_len - 0.2)
            cab = box(-hw + 0.05, hw - 0.05, clear, height * 0.75, hl - cab_len, hl)
            box_col = pal.pick((2, lambda: pal.grey(170, 240, 3)), (1, lambda: col))
            cv.fill([pose.hull(cab)], lab, col, inst)
            cv.fill([pose.hull(cargo)], lab, box_col, inst)
        else:
            cv.fill([pose.hull(box(-hw, hw, clear, height, -hl, hl))], lab, col, inst)
            if kind == "train":  # the pantograph on the roof
                px = self.cam.scale(z)
                top = pose.image([[0.0, height, -1.0], [0.0, height + 1.2, 0.0], [0.0, height + 1.2, 0.8]])
                cv.fill([segment(top[0], top[1], 0.06 * px), segment(top[1], top[2], 0.06 * px)], lab, pal.grey(30, 80), inst)
        side_l, end_f = self._visible(pose, hw, hl, height / 2)
        if side_l is not None:
            cv.paint([pose.side_quad(side_l, -hl, hl, clear, clear + 0.35)], np.asarray(col) * 0.6)
            if kind in ("bus", "train"):  # the window row with pillars, and doors on the kerb side
                y0, y1 = height * 0.36, height * 0.85
                cv.paint([pose.side_quad(side_l, -hl + 0.5, hl - 0.5, y0, y1)], glass)
                step = rng.uniform(1.2, 1.8)
                cv.paint([pose.side_quad(side_l, f, f + 0.12, y0, y1) for f in np.arange(-hl + 0.5, hl - 0.5, step)], col)
                if side_l > 0:
                    doors = (hl - 1.3, 0.0, -hl + 3.5) if kind == "bus" else tuple(np.arange(-hl + 3, hl - 2, 6.0))
                    cv.paint([pose.side_quad(side_l, f - 0.6, f + 0.6, clear + 0.1, y1) for f in doors], glass * 0.8)
            elif kind == "truck":
                cv.paint([pose.side_quad(side_l, hl - 1.4, hl - 0.4, height * 0.45, height * 0.7)], glass)
            for f in axles:
                cv.paint([pose.disc(side_l, f, r, r * 1.12, 14)], np.asarray(col) * 0.2)
        if end_f is not None:
            e = np.sign(end_f)
            if kind in ("bus", "train") or e > 0:
                top = height * (0.7 if kind == "truck" else 0.88)
                cv.paint([pose.end_quad(end_f, -hw + 0.15, hw - 0.15, height * (0.3 if e > 0 else 0.55), top)], glass)
            if kind == "bus" and e > 0:
                cv.paint([pose.end_quad(end_f, -hw + 0.3, hw - 0.3, height * 0.89, height * 0.97)], (40, 35, 20))  # destination display
            lc = (200, 30, 30) if e < 0 else (235, 230, 200)
            for lx in (-hw + 0.1, hw - 0.4):
                cv.paint([pose.end_quad(end_f, lx, lx + 0.3, clear + 0.25, clear + 0.45)], lc)
            cv.paint([pose.end_quad(end_f, -hw, hw, clear, clear + 0.2)], np.asarray(col) * 0.5)
        self._rims(pose, side_l, axles, r, tyre)
