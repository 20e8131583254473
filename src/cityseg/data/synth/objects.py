"""What stands beside the street: trees and bushes, poles with lights and signs, clutter on the sidewalk.

``StreetObjects`` is mixed into ``Scene``; its methods draw through the scene's camera, canvas, palette
and RNG. Sizes are metres; the camera turns them into pixels.
"""

from __future__ import annotations

import numpy as np

from cityseg.data.synth.drawing import circle, segment
from cityseg.data.synth.spec import L, M


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
        bark = pal.beige() * rng.uniform(0.3, 0.55)
        trunk = cam.billboard(x, z, [[-tw / 2, 0], [tw / 2, 0], [tw / 2 * 0.7, th + r * 0.5], [-tw / 2 * 0.7, th + r * 0.5]])
        crown = cam.billboard(x, z, circle(0, th + r, r, r * rng.uniform(0.8, 1.2), 28, rng.normal(0, 0.12, 28)))
        cv.fill([trunk], L["vegetation"], bark, material=M["bark"])
        cv.fill([crown], L["vegetation"], col)
        self.branches(x, z, th, tw, r, bark)
        self.foliage(x, z, th + r, r, col)

    def branches(self, x, z, th, tw, r, bark):
        """Limbs from the top of the trunk into the crown, forking once, seen between the leaves (image only:
        the crown's outline is the label, so every limb ends well inside it)."""
        rng, cam = self.rng, self.cam
        if cam.scale(z) * r < 12:
            return
        px = cam.scale(z)  # limbs are drawn as image-space segments, their widths in pixels
        centre = np.array([0.0, th + r])

        def inside(pt):  # pulled back to within 0.55 r of the crown's centre (its outline is noisy)
            d = pt - centre
            return centre + d * min(1.0, 0.55 * r / (np.hypot(*d) + 1e-9))

        limbs = []
        for _ in range(int(rng.integers(3, 7))):
            a = rng.uniform(-1.1, 1.1)  # angle from vertical
            p = np.array([0.0, th + rng.uniform(0.5, 0.7) * r])
            q = inside(p + rng.uniform(0.4, 0.7) * r * np.array([np.sin(a), np.cos(a)]))
            w0 = tw * rng.uniform(0.35, 0.6) * px
            ends = [inside(q + rng.uniform(0.2, 0.4) * r * np.array([np.sin(a + da), np.cos(a + da)])) for da in rng.uniform(0.3, 0.8, 2) * np.array([-1, 1])]
            img = cam.billboard(x, z, np.array([p, q, *ends]))
            limbs.append(segment(img[0], img[1], w0, w0 * 0.6))
            limbs.extend(segment(img[1], e, w0 * 0.6, w0 * 0.25) for e in img[2:])  # the fork
        self.cv.paint(limbs, np.asarray(bark) * 0.8, material=M["bark"])

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
        u = rng.uniform(-0.8, 0.8, (n, 1)) * r
        v = cy + rng.uniform(-0.7, 0.7, (n, 1)) * r
        rr = rng.uniform(0.08, 0.25, (n, 1)) * r
        t = np.linspace(0, 2 * np.pi, 8, endpoint=False)
        uv = np.stack([u + rr * np.cos(t), v + rr * np.sin(t)], -1)
        polys = list(cam.billboard(x, z, uv.reshape(-1, 2)).reshape(n, 8, 2))
        third = n // 3  # shadowed clumps, the crown's own colour over the limbs, sunlit clumps
        self.cv.paint(polys[:third], np.asarray(col) * 0.65, material=L["vegetation"])
        self.cv.paint(polys[third : 2 * third], col, material=L["vegetation"])
        self.cv.paint(polys[2 * third :], np.asarray(col) * 1.3 + 10, material=L["vegetation"])

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
