"""Writing frames atomically in the official layout, and ``generate`` for whole splits."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from cityseg import labels
from cityseg.data import layout
from cityseg.data.synth.render import render_frame
from cityseg.data.synth.spec import CITIES, DEFAULT_COUNTS, DEFAULT_SIZE, FILE_KINDS, FRAME_ID, MARKER, SPLITS, VERSION
from cityseg.errors import CitysegError
from cityseg.io import atomic_write_json, atomic_write_text, write_png


# ---- writing ---------------------------------------------------------------------------------
def frame_stem(split: str, index: int, count: int) -> str:
    """``{city}_{seq:06d}_{frame:06d}``: consecutive blocks of frames per city of the split."""
    cities = CITIES[split]
    n_city = min(len(cities), max(1, count))
    per = -(-count // n_city)
    city = cities[index // per]
    return f"{city}_{index % per:06d}_{FRAME_ID:06d}"


def frame_paths(root: Path, split: str, stem: str) -> list[Path]:
    """The five files of a frame, ground truth first and the image last."""
    return [layout.annotation_path(root, split, stem, k) for k in FILE_KINDS] + [layout.image_path(root, split, stem)]


def write_frame(root: Path, split: str, index: int, count: int, size=DEFAULT_SIZE, seed: int = 0, randomize: bool = False) -> str:
    """Render and write one frame; on any error no file of the frame is left behind."""
    stem = frame_stem(split, index, count)
    image, label, instance, polygons = render_frame(seed, split, index, size, randomize)
    paths = frame_paths(Path(root), split, stem)
    p_lab, p_inst, p_col, p_train, p_poly, p_img = paths
    try:
        write_png(p_lab, label)
        write_png(p_inst, instance)
        write_png(p_col, cv2.LUT(cv2.merge([label, label, label]), _PALETTE_LUT))  # == LABELID_PALETTE[label]
        write_png(p_train, cv2.LUT(label, labels.LABELID_TO_TRAINID))  # == LABELID_TO_TRAINID[label]
        atomic_write_text(p_poly, json.dumps(polygons, separators=(",", ":")) + "\n")
        write_png(p_img, image)
    except BaseException:
        for p in paths:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        raise
    return stem


_PALETTE_LUT = labels.LABELID_PALETTE.reshape(256, 1, 3)


def _write_job(job) -> str:
    return write_frame(*job)


def _check_out(out: Path) -> bool:
    """Validate the output folder; True if it already holds a SynthCity dataset."""
    if out.exists() and not out.is_dir():
        raise CitysegError(f"{out}: exists and is not a folder; choose a new or empty folder for SynthCity")
    if not out.exists():
        return False
    if (out / MARKER).is_file():
        return True
    if any(out.iterdir()):
        raise CitysegError(f"{out}: folder is not empty and holds no SynthCity dataset ({MARKER}); choose a new or empty folder")
    return False


def _remove_stale(out: Path, split: str, keep: set[str]) -> None:
    """Drop frames of an earlier SynthCity run that this run did not write (only in a SynthCity root)."""
    for top in ("leftImg8bit", "gtFine"):
        folder = out / top / split
        if not folder.is_dir():
            continue
        for p in layout.walk_files(folder, ""):
            stem = layout.parse_stem(p.name)
            if stem is not None and stem not in keep:
                p.unlink()
        for d in sorted((d for d in folder.iterdir() if d.is_dir()), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()
        if not any(folder.iterdir()):
            folder.rmdir()


def _check_size(size) -> tuple[int, int]:
    h, w = (int(v) for v in size)
    if h < 16 or w < 32:
        raise CitysegError(f"invalid size {h}x{w}: SynthCity needs at least 16x32 pixels")
    if h * w > 4096 * 8192:
        raise CitysegError(f"invalid size {h}x{w}: larger than 4096x8192")
    return h, w


def _write_split(out: Path, split: str, n: int, size: tuple[int, int], seed: int, randomize: bool, workers: int, progress) -> set[str]:
    """Write the ``n`` frames of one split; returns their stems."""
    jobs = [(out, split, i, n, size, int(seed), bool(randomize)) for i in range(n)]
    stems = set()
    if workers > 1 and n > 1:
        with ProcessPoolExecutor(min(workers, n)) as pool:
            for done, stem in enumerate(pool.map(_write_job, jobs, chunksize=1), 1):
                stems.add(stem)
                if progress:
                    progress(split, done, n)
    else:
        for done, job in enumerate(jobs, 1):
            stems.add(_write_job(job))
            if progress:
                progress(split, done, n)
    return stems


def generate(
    out: str | os.PathLike,
    train: int = DEFAULT_COUNTS["train"],
    val: int = DEFAULT_COUNTS["val"],
    test: int = DEFAULT_COUNTS["test"],
    size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    randomize: bool = False,
    sizes: Mapping[str, tuple[int, int]] | None = None,
) -> dict[str, int]:
    """Write SynthCity to ``out`` in the official layout; returns the frame count per split.

    ``workers``: processes (None or 1: in this process). ``progress(split, done, total)`` is called
    after every frame. ``randomize``: domain randomisation (random material colours, texture strengths
    and exposure instead of real-looking ones). ``sizes`` gives some splits a size of their own (the
    same scenes, drawn at that size); the others are drawn at ``size``. Rerunning into an existing
    SynthCity folder replaces its frames.
    """
    out = Path(out)
    counts = {"train": train, "val": val, "test": test}
    for split, n in counts.items():
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise CitysegError(f"invalid {split} count {n!r}: expected an integer >= 0")
    h, w = _check_size(size)
    split_sizes = {split: _check_size((sizes or {}).get(split, (h, w))) for split in SPLITS}
    ours = _check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    info = {"generator": "SynthCity", "version": VERSION, "seed": int(seed), "size": [h, w], "counts": counts, "randomize": bool(randomize), "complete": False}
    if any(v != (h, w) for v in split_sizes.values()):
        info["sizes"] = {k: list(v) for k, v in split_sizes.items()}
    atomic_write_json(out / MARKER, info)
    workers = 1 if workers is None else max(1, int(workers))
    for split in SPLITS:
        stems = _write_split(out, split, counts[split], split_sizes[split], seed, randomize, workers, progress)
        if ours:
            _remove_stale(out, split, stems)
    for top in ("leftImg8bit", "gtFine"):
        if (out / top).is_dir() and not any((out / top).iterdir()):
            shutil.rmtree(out / top)
    info["complete"] = True
    atomic_write_json(out / MARKER, info)
    return counts
