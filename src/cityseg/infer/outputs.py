"""Prediction files for the Cityscapes test server and for people: labelIds, colour maps, overlays.

``--out DIR`` receives only single-channel labelId PNGs at the input's full size, named
``<city>_<seq>_<frame>_labelIds.png`` from the input's stem, so DIR can be zipped for the test server or
used as ``$CITYSCAPES_RESULTS`` (the official script finds each prediction by the stem and refuses a
second match, so nothing else may live there). Colour maps and overlays go to a separate folder,
``--vis-dir`` (default ``DIR_vis`` beside DIR), like mmsegmentation's ``--out`` / ``--show-dir``.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cityseg import labels
from cityseg.data.layout import IMAGE_SUFFIX, parse_stem, walk_files
from cityseg.errors import CitysegError
from cityseg.io import check_complete, probe_image, read_image, write_png

FORMATS = ("labelIds", "color", "overlay")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def default_out() -> Path | None:
    """``$CITYSCAPES_RESULTS`` when set (the official scripts' prediction root)."""
    env = os.environ.get("CITYSCAPES_RESULTS")
    return Path(env) if env else None


def _folder_images(folder: Path) -> list[Path]:
    cityscapes = walk_files(folder, IMAGE_SUFFIX)
    if cityscapes:  # a Cityscapes tree: the camera images only, never the annotation PNGs beside them
        return cityscapes
    return sorted(p for ext in IMAGE_EXTENSIONS for p in walk_files(folder, ext) + walk_files(folder, ext.upper()))


def collect_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files, folders (recursive) and glob patterns -> sorted unique image paths."""
    found: list[Path] = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            images = _folder_images(path)
            if not images:
                raise CitysegError(f"{path}: folder holds no *{IMAGE_SUFFIX} or .png/.jpg images")
            found.extend(images)
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            files = [m for m in matches if m.is_file() and m.suffix.lower() in IMAGE_EXTENSIONS]
            for m in matches:
                if m.is_dir():
                    files.extend(_folder_images(m))
            if not files:
                raise CitysegError(f"{text}: pattern matches no images")
            found.extend(files)
        elif path.is_symlink():
            raise CitysegError(f"{path}: broken or looping symlink")
        else:
            raise CitysegError(f"{path}: no such file or folder")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return [Path(p) for p in unique]


def output_stem(path: Path) -> str:
    """``<city>_<seq>_<frame>`` for Cityscapes names, else the file name without extension."""
    return parse_stem(path.name) or path.stem


def output_paths(images: Sequence[Path], out: Path, formats: Sequence[str], vis_dir: Path | None) -> list[dict[str, Path]]:
    """Where each image's outputs go; two inputs with the same stem are an error (the server needs one each)."""
    vis = vis_dir if vis_dir is not None else out.with_name(out.name + "_vis")
    seen: dict[str, Path] = {}
    plan = []
    for img in images:
        stem = output_stem(img)
        if stem in seen:
            raise CitysegError(f"{img}: same output name {stem!r} as {seen[stem]}; predict them into separate folders")
        seen[stem] = img
        where = {}
        if "labelIds" in formats:
            where["labelIds"] = out / f"{stem}_labelIds.png"
        if "color" in formats:
            where["color"] = vis / f"{stem}_color.png"
        if "overlay" in formats:
            where["overlay"] = vis / f"{stem}_overlay.png"
        plan.append(where)
    return plan


def check_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise CitysegError(f"unknown output format {','.join(bad) or '(none)'}: choose from {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(formats))


def overlay(image: np.ndarray, label_ids: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Alpha-blend the official colours of ``label_ids`` over ``image`` (both HxW[x3] uint8)."""
    color = labels.colorize(label_ids, "labelIds").astype(np.float32)
    return np.clip(image.astype(np.float32) * (1 - alpha) + color * alpha + 0.5, 0, 255).astype(np.uint8)


def predict_files(
    predictor: Any,
    inputs: Iterable[str | os.PathLike],
    out: str | os.PathLike,
    formats: str | Sequence[str] = ("labelIds",),
    vis_dir: str | os.PathLike | None = None,
    alpha: float = 0.5,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> list[dict[str, Path]]:
    """Predict every input image and write the requested files (each atomically); returns the paths written.

    All inputs are found and their headers checked (8-bit RGB) before anything is written.
    """
    formats = check_formats(formats)
    images = collect_inputs(inputs)
    for img in images:  # header check up front: a bad file fails the run before any output exists
        _, _, mode = probe_image(img)
        if mode != "RGB":
            read_image(img)  # raises the one-line error naming the channel problem
        check_complete(img)  # a truncated PNG fails now, not after earlier outputs were written
    out = Path(out)
    plan = output_paths(images, out, formats, Path(vis_dir) if vis_dir is not None else None)
    written = []
    items = list(zip(images, plan))
    for img, where in progress(items) if progress else items:
        image = read_image(img)
        pred = predictor.predict(image)
        for kind, path in where.items():
            if kind == "labelIds":
                write_png(path, pred)
            elif kind == "color":
                write_png(path, labels.colorize(pred, "labelIds"))
            else:
                write_png(path, overlay(image, pred, alpha))
        written.append(where)
    return written
