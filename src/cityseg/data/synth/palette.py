"""Material colours: near the colours of real Cityscapes frames, with deliberately overlapping distributions.

Grey cars stand on grey roads in front of grey buildings, green fences next to green bushes: a per-pixel
colour lookup cannot recover the labels, shape and context can. The overall brightness and white balance
are set later (``texture.finish``); here only the colours of materials relative to each other matter.
With ``randomize`` a share of the draws is replaced by uniformly random colours (domain randomisation).
"""

from __future__ import annotations

import numpy as np


class Palette:
    """Material colour samplers; every sampler returns an RGB float array."""

    def __init__(self, rng: np.random.Generator, randomize: bool = False):
        self.rng = rng
        self.randomize = randomize

    def grey(self, lo=60, hi=190, tint=6):
        return self.rng.uniform(lo, hi) + self.rng.normal(0, tint, 3)

    def pick(self, *options):
        """options: (weight, sampler) pairs."""
        w = np.array([o[0] for o in options], float)
        c = options[self.rng.choice(len(options), p=w / w.sum())][1]()
        if self.randomize and self.rng.random() < 0.4:
            return self.rng.uniform(0, 255, 3)
        return c

    def jitter(self, c, amount=10):
        return np.asarray(c, float) + self.rng.normal(0, amount, 3)

    def beige(self):
        return np.array([175, 160, 135]) * self.rng.uniform(0.6, 1.15) + self.rng.normal(0, 8, 3)

    def brick(self):
        return np.array([140, 90, 72]) * self.rng.uniform(0.6, 1.15) + self.rng.normal(0, 8, 3)

    def green(self, dark=False):
        base = np.array([75, 100, 45]) if not dark else np.array([45, 65, 35])
        return base * self.rng.uniform(0.6, 1.3) + self.rng.normal(0, 8, 3)

    def pastel(self):
        return self.rng.uniform(130, 200, 3)

    def vivid(self):
        c = self.rng.uniform(10, 60, 3)
        c[self.rng.integers(3)] = self.rng.uniform(110, 200)
        return c

    def road(self):
        return self.pick((5, lambda: self.grey(75, 125, 3) + [0, 2, 0]), (1, lambda: self.grey(80, 115, 3) + [6, 0, 8]))

    def sidewalk(self):
        return self.pick((4, lambda: self.grey(100, 165, 5)), (2, lambda: self.beige() * 0.85), (1, lambda: self.brick() * 0.9))

    def building(self):
        return self.pick(
            (4, lambda: self.grey(70, 190, 5)), (4, self.beige), (2, self.brick), (1, self.pastel), (1, lambda: self.grey(140, 200, 3) + [0, 4, -4])
        )

    def wall(self):
        return self.pick((4, lambda: self.grey(70, 180, 5)), (2, self.beige), (1, self.brick), (1, lambda: self.green(True)))

    def fence(self):
        return self.pick(
            (3, lambda: self.green(True)), (3, lambda: self.grey(50, 160, 5)), (2, lambda: self.beige() * 0.7), (1, lambda: self.grey(170, 220, 4))
        )

    def pole(self):
        return self.pick((5, lambda: self.grey(60, 150, 4)), (2, lambda: self.green(True) * 0.8), (1, lambda: self.grey(20, 50, 3)))

    def vegetation(self):
        return self.pick((6, lambda: self.green()), (3, lambda: self.green(True)), (1, lambda: np.array([120, 115, 55]) * self.rng.uniform(0.6, 1.0)))

    def terrain(self):
        return self.pick(
            (5, lambda: self.green() * 1.1),
            (3, lambda: np.array([125, 120, 75]) * self.rng.uniform(0.6, 1.1)),
            (1, lambda: np.array([110, 95, 70]) * self.rng.uniform(0.6, 1.1)),
        )

    def sky(self, overcast: bool):
        if overcast:
            return self.pick((1, lambda: self.grey(195, 245, 3) + [0, 3, 6]))
        return self.pick((3, lambda: np.array([140, 175, 215]) * self.rng.uniform(0.85, 1.1)), (1, lambda: self.grey(190, 240, 3) + [0, 4, 10]))

    # fmt: off
    def vehicle(self):
        return self.pick((5, lambda: self.grey(20, 200, 3)), (1, self.vivid), (1, self.beige), (1, lambda: self.green(True)),
                         (1, lambda: np.array([30, 40, 80]) * self.rng.uniform(0.7, 1.5)))

    def cloth(self):
        return self.pick((5, lambda: self.grey(15, 170, 6)), (2, self.vivid), (2, self.beige), (1, lambda: self.green(True)),
                         (2, lambda: np.array([35, 45, 85]) * self.rng.uniform(0.6, 1.5)))
    # fmt: on

    def skin(self):
        return np.array([215, 170, 140]) * self.rng.uniform(0.45, 1.0) + self.rng.normal(0, 5, 3)

    def glass(self, sky):
        return self.pick((3, lambda: self.grey(20, 60, 4) + [0, 4, 8]), (1, lambda: np.asarray(sky) * self.rng.uniform(0.4, 0.75)))
