"""SynthCity's frames are a fixed function of ``(seed, split, index, size, randomize)`` within a generator
``VERSION``: a digest of small frames pins them, so a refactoring of the drawing code that changes a
single pixel, label or polygon fails here (a deliberate change of the frames bumps ``VERSION`` and this pin)."""

from __future__ import annotations

import hashlib
import json

from cityseg.data.synth import VERSION, render_frame

#: sha256 over 32 frames at 128x256 (seed 7; train and val, indices 0..7, plain and randomised): image,
#: labelIds and instanceIds bytes, then the polygons as sorted JSON
PINNED = {4: "772a50872c8a2742e4adeb928a5fe7ac8e8a6e2cfd953213870cec42b1d961ca"}


def frames_digest() -> str:
    h = hashlib.sha256()
    for split in ("train", "val"):
        for i in range(8):
            for randomize in (False, True):
                image, label, instance, polygons = render_frame(7, split, i, (128, 256), randomize)
                for a in (image, label, instance):
                    h.update(a.tobytes())
                h.update(json.dumps(polygons, sort_keys=True).encode())
    return h.hexdigest()


def test_frames_are_pinned_for_this_generator_version():
    assert VERSION in PINNED, f"generator version {VERSION} has no pinned digest; add it"
    assert frames_digest() == PINNED[VERSION]
