"""A preprocessed, memory-mapped uint8 cache of one split, so training never decodes PNGs.

A real 2048x1024 PNG takes ~45 ms to decode; the cache decodes each split once (resized to the training
size) into two ``.npy`` files read with ``np.load(mmap_mode="r")``:

    CACHE/{annotation}-{split}-{H}x{W}-{interpolation}/
        manifest.json              # the commit record, written last
        images-<id>.npy            # N x H x W x 3 uint8 RGB
        labels-<id>.npy            # N x H x W uint8 labelIds (CamVid ids for a CamVid root)
        .lock                      # fcntl.flock: one builder at a time

``manifest.json`` lists every source file (path relative to the root, size, mtime_ns), the size and
interpolation, the array names and shapes, and ``"complete": true``. It is written atomically after both
arrays are fsynced under fresh unique names, so a killed build leaves at most unreferenced temp files (and
the previous cache, if any, intact); readers holding an old memmap keep their inode. A cache is rebuilt when
a source file was changed, added or removed, or when its manifest or arrays do not match. Two concurrent
``prepare`` calls serialise on the lock; the second finds the first one's cache and returns it.

``CACHE`` is ``ROOT/.cityseg_cache`` when the dataset root is writable, else
``$XDG_CACHE_HOME/cityseg/<hash of ROOT>`` (``~/.cache``), or the ``cache_dir`` the caller passes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cityseg import io
from cityseg.data import layout, readers
from cityseg.data.transforms import check_interpolation, check_size
from cityseg.errors import CitysegError
from cityseg.runtime import process_context

CACHE_VERSION = 1
CACHE_DIRNAME = ".cityseg_cache"
MANIFEST = "manifest.json"
#: decode in worker processes from this many files on (below it, process start-up costs more than it saves)
PARALLEL_MIN_FILES = 64
CHUNK = 16


@dataclass(frozen=True)
class CacheEntry:
    """A complete, up-to-date cache of one split."""

    folder: Path
    images_path: Path
    labels_path: Path
    stems: tuple[str, ...]
    shape: tuple[int, int]  # H, W
    manifest: dict

    def __len__(self) -> int:
        return len(self.stems)

    def open(self) -> tuple[np.ndarray, np.ndarray]:
        """Memory-map the arrays read-only: (N x H x W x 3 images, N x H x W labelIds)."""
        try:
            return np.load(self.images_path, mmap_mode="r"), np.load(self.labels_path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise CitysegError(f"{self.folder}: cache arrays unreadable ({e.__class__.__name__}); run `cityseg prepare` again") from None


# ---- where the cache lives ---------------------------------------------------------------------
def cache_key(split: str, size: Sequence[int] | None, interpolation: str, annotation: str = "gtFine") -> str:
    size = check_size(size)
    res = "full" if size is None else f"{size[0]}x{size[1]}"
    return f"{annotation}-{split}-{res}-{check_interpolation(interpolation)}"


def user_cache_root(root: Path) -> Path:
    """Per-user fallback for read-only dataset roots: ``$XDG_CACHE_HOME/cityseg/<hash of the root>``."""
    digest = hashlib.sha1(str(Path(root).resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return io.user_cache_dir() / digest


def candidate_roots(root: Path, cache_dir: str | os.PathLike | None = None) -> list[Path]:
    """Cache roots to look in, in order: ``cache_dir`` alone if given, else inside the root, then the user cache."""
    if cache_dir is not None:
        return [Path(cache_dir)]
    return [Path(root) / CACHE_DIRNAME, user_cache_root(root)]


def writable(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (creating it if needed); probes for real (root ignores modes)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.unlink(tmp)
        return True
    except OSError:
        return False


# ---- fingerprint of the sources ----------------------------------------------------------------
def _stat(root: Path, path: Path) -> list:
    try:
        st = path.stat()
    except OSError as e:
        raise CitysegError(f"{path}: cannot stat ({e.strerror})") from None
    return [path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path), st.st_size, st.st_mtime_ns]


def fingerprint(root: Path, samples: Sequence[layout.Sample]) -> list[list]:
    """[stem, image (rel path, bytes, mtime_ns), label (rel path, bytes, mtime_ns)] per sample."""
    root = Path(root)
    out = []
    for s in samples:
        if s.label is None:
            raise CitysegError(f"{s.image}: image has no labelIds annotation; the cache needs labelled splits")
        out.append([s.stem, *_stat(root, s.image), *_stat(root, s.label)])
    return out


# ---- reading ------------------------------------------------------------------------------------
def _read_manifest(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _npy_shape(path: Path) -> tuple | None:
    """Shape of a C-order uint8 ``.npy`` file whose size matches its header exactly, else None."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            offset = f.tell()
        if dtype != np.uint8 or fortran or path.stat().st_size != offset + int(np.prod(shape)):
            return None  # e.g. a truncated copy
        return tuple(shape)
    except (OSError, ValueError):
        return None


def _entry(folder: Path, manifest: dict | None, expect: dict, files: list[list]) -> CacheEntry | None:
    """The cache in ``folder`` if its manifest is complete and matches ``expect`` and ``files``, else None."""
    if not manifest or manifest.get("complete") is not True or manifest.get("version") != CACHE_VERSION:
        return None
    if any(manifest.get(k) != v for k, v in expect.items()) or manifest.get("files") != files:
        return None
    try:
        n = len(files)
        h, w = (int(v) for v in manifest["shape"])
        images, labels = folder / manifest["images"], folder / manifest["labels"]
    except (KeyError, TypeError, ValueError):
        return None
    if _npy_shape(images) != (n, h, w, 3) or _npy_shape(labels) != (n, h, w):
        return None
    return CacheEntry(folder, images, labels, tuple(f[0] for f in files), (h, w), manifest)


def _expect(split, size, interpolation, annotation) -> dict:
    size = check_size(size)
    return {"split": split, "annotation": annotation, "size": None if size is None else list(size), "interpolation": interpolation}


def load(
    root: str | os.PathLike | None = None,
    split: str = "train",
    size: Sequence[int] | None = (128, 256),
    interpolation: str = "area",
    annotation: str = "gtFine",
    cache_dir: str | os.PathLike | None = None,
    samples: Sequence[layout.Sample] | None = None,
) -> CacheEntry | None:
    """A complete and up-to-date cache for this split and preprocessing, or None."""
    root = layout.resolve_root(root)
    samples = layout.find_samples(root, split, annotation) if samples is None else samples
    files = fingerprint(root, samples)
    key = cache_key(split, size, interpolation, annotation)
    expect = _expect(split, size, interpolation, annotation)
    for base in candidate_roots(root, cache_dir):
        folder = base / key
        entry = _entry(folder, _read_manifest(folder), expect, files)
        if entry is not None:
            return entry
    return None


# ---- building -----------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    try:
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise CitysegError(f"{folder}: cannot create the cache lock file ({e.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _fill(images_tmp: str, labels_tmp: str, start: int, pairs: list[tuple[str, str, int]], size, interpolation) -> int:
    """Decode ``pairs`` (image, annotation, largest valid annotation value) into rows ``start...`` of the
    temporary arrays (runs in a worker process)."""
    images = np.load(images_tmp, mmap_mode="r+")
    labels = np.load(labels_tmp, mmap_mode="r+")
    for k, (image_path, label_path, max_label) in enumerate(pairs):
        image, label = readers.read_pair(Path(image_path), Path(label_path), size, interpolation, max_label)
        if image.shape[:2] != images.shape[1:3]:
            raise CitysegError(
                f"{image_path}: size {image.shape[1]}x{image.shape[0]} differs from the split's "
                f"{images.shape[2]}x{images.shape[1]}; a full-resolution cache needs equal sizes (pass a size)"
            )
        images[start + k] = image
        labels[start + k] = label
    images.flush()
    labels.flush()
    del images, labels
    return len(pairs)


def _run_fill(images_tmp: Path, labels_tmp: Path, pairs, size, interpolation, workers: int, progress: bool, desc: str):
    chunks = [(i, pairs[i : i + CHUNK]) for i in range(0, len(pairs), CHUNK)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pairs), desc=desc, unit="img", leave=False)
    try:
        if workers <= 1 or len(pairs) < PARALLEL_MIN_FILES:
            for start, chunk in chunks:
                n = _fill(str(images_tmp), str(labels_tmp), start, chunk, size, interpolation)
                if bar:
                    bar.update(n)
            return
        with ProcessPoolExecutor(max_workers=workers, mp_context=process_context()) as pool:
            futures = [pool.submit(_fill, str(images_tmp), str(labels_tmp), start, chunk, size, interpolation) for start, chunk in chunks]
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in done:
                    if f.exception() is not None:
                        for p in pending:
                            p.cancel()
                        raise f.exception()
                    if bar:
                        bar.update(f.result())
    finally:
        if bar:
            bar.close()


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _cleanup(folder: Path, keep: set[str]) -> None:
    """Remove arrays and temp files no manifest refers to (leftovers of killed or superseded builds)."""
    for p in folder.iterdir():
        if p.name in keep or p.name in (MANIFEST, ".lock"):
            continue
        if p.name.startswith(("images-", "labels-", ".images-", ".labels-", f".{MANIFEST}.")):
            with contextlib.suppress(OSError):
                p.unlink()


def _choose_folder(root: Path, key: str, cache_dir) -> Path:
    if cache_dir is not None:
        folder = Path(cache_dir) / key
        if not writable(folder):
            raise CitysegError(f"{cache_dir}: cache directory is not writable")
        return folder
    for base in candidate_roots(root):
        if writable(base / key):
            return base / key
    raise CitysegError(f"{root / CACHE_DIRNAME}: no writable cache directory (dataset root and {user_cache_root(root)} are read-only); pass --cache-dir DIR")


def prepare(
    root: str | os.PathLike | None = None,
    split: str = "train",
    size: Sequence[int] | None = (128, 256),
    interpolation: str = "area",
    annotation: str = "gtFine",
    cache_dir: str | os.PathLike | None = None,
    workers: int = 2,
    force: bool = False,
    progress: bool = False,
) -> CacheEntry:
    """Build (or reuse, when up to date and ``force`` is False) the cache of one split; returns it.

    Every pair is read with the validated readers (RGB 8-bit image, labelIds 0..33, equal sizes), so a
    bad file fails the build with a one-line ``CitysegError`` and nothing is committed.
    """
    root = layout.resolve_root(root)
    size = check_size(size)
    check_interpolation(interpolation)
    samples = layout.require_samples(root, split, annotation)
    files = fingerprint(root, samples)
    key = cache_key(split, size, interpolation, annotation)
    expect = _expect(split, size, interpolation, annotation)
    if not force:
        entry = load(root, split, size, interpolation, annotation, cache_dir, samples=samples)
        if entry is not None:
            return entry
    folder = _choose_folder(root, key, cache_dir)
    with _locked(folder):
        old = _read_manifest(folder)
        if not force:  # another process may have built it while we waited for the lock
            entry = _entry(folder, old, expect, files)
            if entry is not None:
                return entry
        if size is None:
            h, w, _ = io.probe_image(samples[0].image)
        else:
            h, w = size
        n = len(samples)
        token = secrets.token_hex(4)
        names = {"images": f"images-{token}.npy", "labels": f"labels-{token}.npy"}
        tmp = {k: folder / f".{v}.tmp" for k, v in names.items()}
        try:
            np.lib.format.open_memmap(tmp["images"], mode="w+", dtype=np.uint8, shape=(n, h, w, 3)).flush()
            np.lib.format.open_memmap(tmp["labels"], mode="w+", dtype=np.uint8, shape=(n, h, w)).flush()
            pairs = [(str(s.image), str(s.label), readers.MAX_LABEL[s.dataset]) for s in samples]
            _run_fill(tmp["images"], tmp["labels"], pairs, size, interpolation, workers, progress, f"{split} cache")
            for k in names:
                _fsync(tmp[k])
                os.replace(tmp[k], folder / names[k])
        except BaseException as e:
            for p in tmp.values():
                with contextlib.suppress(OSError):
                    p.unlink()
            for v in names.values():
                with contextlib.suppress(OSError):
                    (folder / v).unlink()
            if isinstance(e, OSError):  # full disk, file size limit, I/O error: one line naming the cache
                raise CitysegError(f"{folder}: cannot write the cache ({e.strerror or e}); any previous cache is left as it was") from None
            raise
        manifest = {
            "version": CACHE_VERSION,
            **expect,
            "root": str(Path(root).resolve()),
            "count": n,
            "shape": [h, w],
            "images": names["images"],
            "labels": names["labels"],
            "files": files,
            "complete": True,
        }
        try:
            io.atomic_write_json(folder / MANIFEST, manifest)
        except OSError as e:
            for v in names.values():
                with contextlib.suppress(OSError):
                    (folder / v).unlink()
            raise CitysegError(f"{folder}: cannot write the cache manifest ({e.strerror or e}); any previous cache is left as it was") from None
        _cleanup(folder, set(names.values()))
        entry = _entry(folder, manifest, expect, files)
    if entry is None:  # pragma: no cover - would mean a bug above
        raise CitysegError(f"{folder}: cache failed verification right after it was written")
    return entry
