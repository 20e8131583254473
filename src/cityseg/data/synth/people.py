"""People: pedestrians walking or standing, alone and in groups, and the riders of two-wheelers.

A figure is a set of joints in metres (local axes of ``pose``): limbs are tapered segments between
joints, the torso a convex solid, the head an ellipse. Parts are drawn back to front, so a side view
hides the far arm and leg behind the body; the view (front, back, side) follows from the heading.
"""

from __future__ import annotations

import numpy as np

from cityseg.data.synth.drawing import circle, segment
from cityseg.data.synth.pose import Pose, box
from cityseg.data.synth.spec import L


def knee(hip, foot, thigh, shin, forward) -> np.ndarray:
    """Two-bone solve in the (y, f) plane: where the knee (or elbow) sits, bent towards ``forward``."""
    hip, foot = np.asarray(hip, float), np.asarray(foot, float)
    d = foot - hip
    dist = float(np.clip(np.linalg.norm(d), 1e-6, thigh + shin - 1e-6))
    u = d / (np.linalg.norm(d) + 1e-9)
    a = (thigh**2 - shin**2 + dist**2) / (2 * dist)
    h = np.sqrt(max(thigh**2 - a**2, 0.0))
    n = np.array([0.0, u[2], -u[1]]) * forward  # perpendicular in the (y, f) plane
    return hip + u * a + n * h


class Outfit:
    """Colours of one person: shirt, trousers, shoes, skin, hair; sleeves and shorts."""

    def __init__(self, pal, rng, helmet: bool = False):
        self.shirt, self.trousers, self.skin = pal.cloth(), pal.cloth(), pal.skin()
        if np.abs(self.shirt - self.trousers).sum() < 60:  # a shirt stands out from the trousers
            self.trousers = self.trousers * 0.55
        self.shoes = pal.grey(10, 70, 4) if rng.random() < 0.8 else pal.grey(170, 230, 3)
        self.hair = pal.pick((4, lambda: pal.grey(10, 60, 6)), (2, lambda: np.array([110, 80, 50]) * rng.uniform(0.5, 1.3)), (1, lambda: pal.grey(150, 200)))
        self.sleeves = self.shirt if rng.random() < 0.7 else self.skin
        self.shins = self.trousers if rng.random() < 0.85 else self.skin
        self.coat = rng.random() < 0.25
        self.helmet = pal.pick((2, lambda: pal.grey(10, 60)), (1, pal.vivid), (1, lambda: pal.grey(180, 240))) if helmet else None


class People:
    """Drawing methods for persons and two-wheelers (mixed into ``Scene``)."""

    # ---- the figure
    def _figure(self, pose: Pose, j: dict, height: float, outfit: Outfit, lab: int, inst: int, extras=()) -> None:
        """Draw limbs, torso and head from joints ``j`` back to front; ``extras``: (points, colour) solids."""
        cam = self.cam
        px = cam.scale(pose.z) * height  # pixels per body height
        w = {"thigh": 0.085, "shin": 0.06, "upper": 0.055, "fore": 0.045, "foot": 0.045, "neck": 0.05}
        parts = []  # (depth, polygon, colour)

        def limb(a, b, wa, wb, col):
            pa, pb = pose.image([j[a], j[b]])
            parts.append((pose.depth([j[a], j[b]]), segment(pa, pb, w[wa] * px, w[wb] * px), col))

        for s in ("l", "r"):
            limb("hip" + s, "knee" + s, "thigh", "thigh", outfit.trousers)
            limb("knee" + s, "ankle" + s, "shin", "shin", outfit.shins)
            limb("ankle" + s, "toe" + s, "foot", "foot", outfit.shoes)
            limb("shoulder" + s, "elbow" + s, "upper", "upper", outfit.shirt)
            limb("elbow" + s, "hand" + s, "fore", "fore", outfit.sleeves)
            pa = pose.image(j["hand" + s])
            parts.append((pose.depth([j["hand" + s]]) - 0.01, circle(pa[0], pa[1], 0.035 * px, 0.04 * px, 8), outfit.skin))
        sh, hp = (j["shoulderl"] + j["shoulderr"]) / 2, (j["hipl"] + j["hipr"]) / 2
        hw, sw, d = height * 0.1, height * 0.12, height * 0.055
        bottom = hp[1] - (height * 0.3 if outfit.coat else height * 0.03)
        torso = np.concatenate(
            [box(-hw, hw, bottom, bottom, -d, d) + [hp[0], 0, hp[2]], box(-sw, sw, sh[1] + 0.02 * height, sh[1] + 0.02 * height, -d, d) + [sh[0], 0, sh[2]]]
        )
        parts.append((pose.depth(torso), pose.hull(torso), outfit.shirt))
        for pts, col in extras:
            parts.append((pose.depth(pts), pose.hull(pts), col))
        neck = pose.image([j["neck"], j["head"]])
        parts.append((pose.depth([j["neck"]]) + 0.005, segment(neck[0], neck[1], w["neck"] * px), outfit.skin))
        hc = pose.image(j["head"])
        rx, ry = 0.055 * px * (1.15 if outfit.helmet is not None else 1.0), 0.068 * px
        head = circle(hc[0], hc[1], rx, ry, 14)
        parts.append((pose.depth([j["head"]]) - 0.02, head, outfit.helmet if outfit.helmet is not None else outfit.skin))
        parts.sort(key=lambda p: -p[0])
        centre = pose.depth(torso)
        for dep, poly, col in parts:  # the far limbs are in the body's shade
            self.cv.fill([poly], lab, np.asarray(col) * (0.78 if dep > centre + 0.04 else 1.0), inst)
        if outfit.helmet is None:  # hair: the whole back of the head, the crown seen from the front
            facing = pose.sees([0.0, 0.0, 1.0], j["head"])
            hair = head[head[:, 1] < hc[1] + (ry * 0.6 if not facing else -ry * 0.35)]
            if len(hair) >= 3:
                self.cv.paint([hair], outfit.hair)

    def walker(self, height: float, phase: float, stride: float, arms: str = "swing") -> dict:
        """Joints of a person walking (``stride`` > 0) or standing, feet on the ground."""
        hip_y, thigh, shin = 0.53 * height, 0.245 * height, 0.235 * height
        j = {}
        for s, sign, off in (("l", -1, 0.0), ("r", 1, np.pi)):
            a = stride * np.sin(phase + off)
            bend = 0.1 + stride * 1.1 * max(0.0, np.cos(phase + off))
            hip = np.array([sign * 0.05 * height, hip_y, 0.0])
            kn = hip + thigh * np.array([0.0, -np.cos(a), np.sin(a)])
            an = kn + shin * np.array([0.0, -np.cos(a - bend), np.sin(a - bend)])
            j["hip" + s], j["knee" + s], j["ankle" + s] = hip, kn, an
            j["toe" + s] = an + np.array([0.0, -0.035 * height, 0.12 * height])
            sho = np.array([sign * 0.115 * height, 0.815 * height, 0.0])
            if arms == "phone" and s == "r":
                el = sho + np.array([sign * 0.01, -0.16 * height, 0.03 * height])
                hand = el + np.array([-sign * 0.03 * height, 0.04 * height, 0.13 * height])
            else:
                g = -0.8 * a if arms == "swing" else 0.0
                out = 0.025 * height if arms != "pockets" else 0.005 * height
                el = sho + np.array([sign * out, -0.165 * height * np.cos(g), 0.165 * height * np.sin(g)])
                g2 = g + 0.15 + 0.3 * stride
                hand = el + np.array([sign * out * 0.3, -0.15 * height * np.cos(g2), 0.15 * height * np.sin(g2)])
            j["shoulder" + s], j["elbow" + s], j["hand" + s] = sho, el, hand
        ground = min(j["toel"][1], j["toer"][1])
        for k in j:
            j[k] = j[k] - [0.0, ground, 0.0]
        j["neck"] = np.array([0.0, 0.83 * height, 0.0])
        j["head"] = np.array([0.0, 0.93 * height, 0.01 * height])
        return j

    def person(self, x, z, heading, y0=0.0, moving: bool | None = None):
        """A pedestrian (1.5-1.9 m, sometimes a child), walking or standing, with a bag now and then."""
        rng = self.rng
        height = rng.uniform(1.5, 1.9) if rng.random() < 0.9 else rng.uniform(1.0, 1.4)
        moving = rng.random() < 0.65 if moving is None else moving
        stride = rng.uniform(0.25, 0.45) if moving else rng.uniform(0.0, 0.06)
        arms = "swing" if moving else str(rng.choice(["swing", "pockets", "phone"], p=[0.5, 0.3, 0.2]))
        j = self.walker(height, rng.uniform(0, 2 * np.pi), stride, arms)
        outfit = Outfit(self.pal, rng)
        extras = []
        if rng.random() < 0.2:  # a backpack on the back
            extras.append((box(-0.09 * height, 0.09 * height, 0.55 * height, 0.8 * height, -0.14 * height, -0.055 * height), self.pal.cloth()))
        elif rng.random() < 0.15:  # a bag at the hand
            hx, hy, hz = j["handr"]
            extras.append((box(hx - 0.02, hx + 0.08, hy - 0.25, hy, hz - 0.1, hz + 0.1), self.pal.cloth() * 0.7))
        pose = Pose(self.cam, x, z, heading, y0)
        self._shadow_under(pose, 0.25, 0.25)
        self._figure(pose, j, height, outfit, L["person"], self.cv.new_instance(L["person"]), extras)

    def _shadow_under(self, pose: Pose, half_w: float, half_l: float, darkness: float = 0.45):
        self.cv.shadow([self.cam.ground_poly(pose.footprint(-half_w, half_w, -half_l, half_l), pose.y0)], darkness)

    def people(self):
        """Pedestrians on the sidewalks (along them, alone and in groups), standing about, crossing the road."""
        rng = self.rng
        for side in (-1, 1):
            for _ in range(rng.integers(0, 7)):
                z = rng.uniform(5, 60)
                group = 1 if rng.random() < 0.65 else int(rng.integers(2, 5))
                heading = rng.choice([0.0, np.pi]) + rng.normal(0, 0.15)
                moving = bool(rng.random() < 0.7)
                x0 = self.edge(side) + side * rng.uniform(0.4, self.sidewalk_w[side] - 0.4)
                for k in range(group):
                    x = x0 + rng.uniform(-0.6, 0.6) * (k > 0)
                    zz = z + k * rng.uniform(0.4, 1.2) * (1 if rng.random() < 0.5 else -1)
                    h = heading if moving else rng.uniform(0, 2 * np.pi)  # a standing group faces every way
                    self.add(zz, lambda x=x, z=zz, h=h, m=moving: self.person(x, z, h, self.kerb, m))
            if rng.random() < 0.7:  # parked bicycles along the outer edge, in a row or in a rack
                z = rng.uniform(5, 40)
                x = self.outer(side) - side * rng.uniform(0.5, 1.0)
                rack = rng.random() < 0.4
                for i in range(rng.integers(1, 9)):
                    zi = z + i * (0.7 if rack else rng.uniform(0.8, 4))
                    h = side * np.pi / 2 + rng.normal(0, 0.25) if rack or rng.random() < 0.5 else rng.choice([0.0, np.pi]) + rng.normal(0, 0.1)
                    self.add(zi, lambda x=x, z=zi, h=h: self.two_wheeler(x, z, h, motor=False, rider=False, y0=self.kerb))
            if rng.random() < 0.08:  # motorcycles and scooters parked on the sidewalk at the kerb
                z = rng.uniform(10, 40)
                x = self.edge(side) + side * rng.uniform(0.6, 1.2)
                for i in range(rng.integers(1, 4)):
                    h = side * np.pi / 2 + rng.normal(0, 0.3) if rng.random() < 0.6 else rng.choice([0.0, np.pi]) + rng.normal(0, 0.1)
                    self.add(z + i * 1.0, lambda x=x, z=z + i * 1.0, h=h: self.two_wheeler(x, z, h, motor=True, rider=False, y0=self.kerb))
        if rng.random() < 0.3 or self.cross is not None:  # people crossing the road, at the crossing if there is one
            z0 = self.cross[0] - 3 if self.cross is not None else rng.uniform(8, 30)
            for _ in range(rng.integers(1, 5)):
                x, z = rng.uniform(*self.road), z0 + rng.uniform(-1.5, 1.5)
                h = rng.choice([-1, 1]) * np.pi / 2 + rng.normal(0, 0.2)
                self.add(z, lambda x=x, z=z, h=h: self.person(x, z, h, 0.0, True))

    # ---- two-wheelers
    def two_wheeler(self, x, z, heading, motor: bool, rider: bool, y0: float = 0.0):
        """A bicycle or motorcycle (its own class), ridden (rider class on it) or parked."""
        cam, rng, pal, cv = self.cam, self.rng, self.pal, self.cv
        pose = Pose(cam, x, z, heading, y0)
        lab = L["motorcycle"] if motor else L["bicycle"]
        inst = cv.new_instance(lab)
        px = cam.scale(z)
        if motor:
            r, base = rng.uniform(0.28, 0.33), rng.uniform(1.3, 1.5)
            seat, bars, pedal = (0.0, 0.8, -0.2), (0.0, 1.0, 0.38), (0.0, 0.35, -0.1)
        else:
            r, base = rng.uniform(0.32, 0.35), rng.uniform(1.0, 1.12)
            seat, bars, pedal = (0.0, 0.95, -0.22), (0.0, 1.0, 0.38), (0.0, 0.3, -0.05)
        col = pal.vehicle()
        dark = pal.grey(10, 40, 2)
        rear, front = -base / 2, base / 2
        self._shadow_under(pose, 0.2, base / 2 + r)
        tyre_w = 0.12 if motor else 0.04
        wheels = [(f, pose.wheel(0.0, f, r, tyre_w)) for f in (rear, front)]
        # frame tubes and handlebar (local points), drawn as segments of a fixed width in metres
        pts = {
            "rear": (0.0, r, rear),
            "front": (0.0, r, front),
            "crank": pedal,
            "seat": seat,
            "head": (0.0, bars[1] - 0.1, bars[2] - 0.05),
            "barl": (-0.3 - 0.06 * motor, bars[1], bars[2]),
            "barr": (0.3 + 0.06 * motor, bars[1], bars[2]),
        }
        img = {k: pose.image(v) for k, v in pts.items()}
        tube = (0.07 if motor else 0.035) * px
        links = [("rear", "crank"), ("rear", "seat"), ("crank", "seat"), ("crank", "head"), ("seat", "head"), ("front", "head"), ("barl", "barr")]
        frame = [segment(img[a], img[b], tube) for a, b in links]
        if motor:
            self._motorcycle(pose, lab, inst, wheels, frame, col, dark, r)
        else:
            self._bicycle(pose, lab, inst, wheels, frame, col, dark, r, seat, px)
        if rider:
            self._rider(pose, seat, bars, pedal, motor)

    def _motorcycle(self, pose: Pose, lab, inst, wheels, frame, col, dark, r):
        """Solid wheels, frame, engine, tank and tail, the rims, and the light on the visible end."""
        cv, pal = self.cv, self.pal
        cv.fill([w for _, w in wheels], lab, dark, inst)
        cv.fill(frame, lab, pal.grey(40, 120, 3), inst)
        engine = pose.hull(box(-0.17, 0.17, 0.3, 0.62, -0.3, 0.3))
        tank = pose.hull(box(-0.15, 0.15, 0.62, 0.88, -0.6, 0.28))
        tail = pose.hull(box(-0.1, 0.1, 0.6, 0.85, -0.8, -0.5))
        cv.fill([engine], lab, pal.grey(30, 110, 3), inst)
        cv.fill([tank, tail], lab, col, inst)
        for f, _ in wheels:
            cv.paint([pose.disc(0.0, f, r, r * 0.55, 10)], pal.grey(120, 200, 3))
        if pose.sees([0.0, 0.0, -1.0], [0.0, 0.7, -0.8]):
            cv.paint([pose.end_quad(-0.81, -0.06, 0.06, 0.72, 0.8)], (200, 30, 30))
        elif pose.sees([0.0, 0.0, 1.0], [0.0, 0.9, 0.45]):
            cv.paint([pose.end_quad(0.45, -0.07, 0.07, 0.83, 0.95)], (235, 230, 205))

    def _bicycle(self, pose: Pose, lab, inst, wheels, frame, col, dark, r, seat, px):
        """See-through spoked wheels, the frame and the saddle."""
        cv, pal = self.cv, self.pal
        for f, w in wheels:  # see-through wheels: labels fill the disc, the image keeps what is behind
            cv.fill([pose.disc(0.0, f, r, r, 14)], lab, None, inst)
            cv.fill([w], lab, None, inst)
            inner = pose.disc(0.0, f, r, r * 0.86, 14)
            outer = pose.disc(0.0, f, r, r, 14)
            cv.ring(outer, inner, dark)
            c = pose.image([0.0, r, f])
            cv.paint([segment(c, p, max(1.0, 0.01 * px)) for p in inner[::4]], pal.grey(90, 160, 3))
        cv.fill(frame, lab, col, inst)
        cv.fill([pose.hull(box(-0.08, 0.08, seat[1], seat[1] + 0.06, seat[2] - 0.12, seat[2] + 0.12))], lab, dark, inst)

    def _rider(self, pose: Pose, seat, bars, pedal, motor: bool):
        """The rider on a two-wheeler: seated, hands on the bar, feet on the pedals or the pegs."""
        rng = self.rng
        height = rng.uniform(1.6, 1.9)
        thigh, shin, upper, fore = 0.245 * height, 0.25 * height, 0.17 * height, 0.16 * height
        hip = np.array(seat, float) + [0.0, 0.04, -0.05]
        lean = rng.uniform(0.25, 0.6) if not motor else rng.uniform(0.3, 0.7)
        sho_c = hip + 0.3 * height * np.array([0.0, np.cos(lean), np.sin(lean)])
        phase = rng.uniform(0, 2 * np.pi)
        j = {}
        for s, sign, off in (("l", -1, 0.0), ("r", 1, np.pi)):
            crank = 0.0 if motor else 0.17
            foot = np.array(pedal, float) + [sign * 0.12, crank * np.sin(phase + off), crank * np.cos(phase + off)]
            h = hip + [sign * 0.08, 0.0, 0.0]
            k = knee(h, foot, thigh, shin, 1.0)
            sho = sho_c + [sign * 0.19, 0.0, 0.0]
            hand = np.array([sign * (0.28 + 0.06 * motor), bars[1] + 0.03, bars[2]])
            el = knee(sho, hand, upper, fore, -1.0) + [sign * 0.05, 0.0, 0.0]
            j.update({"hip" + s: h, "knee" + s: k, "ankle" + s: foot, "toe" + s: foot + [0.0, -0.02, 0.1]})
            j.update({"shoulder" + s: sho, "elbow" + s: el, "hand" + s: hand})
        j["neck"] = sho_c + 0.03 * height * np.array([0.0, np.cos(lean), np.sin(lean)])
        j["head"] = j["neck"] + 0.1 * height * np.array([0.0, np.cos(lean * 0.4), np.sin(lean * 0.4)])
        outfit = Outfit(self.pal, rng, helmet=motor or rng.random() < 0.3)
        self._figure(pose, j, height, outfit, L["rider"], self.cv.new_instance(L["rider"]))
