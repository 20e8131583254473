"""File I/O shared by every module: atomic writes and validated PNG reading.

Every reader checks the header before decoding (size limit, channels, bit depth) and raises a
one-line ``CitysegError`` naming the file; every writer goes through a temporary file in the same
folder and ``os.replace``, so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from cityseg.errors import CitysegError

cv2.setNumThreads(1)

#: largest image accepted (pixels); Cityscapes frames are 2048x1024 = 2.1 M
MAX_PIXELS = 8192 * 8192


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/cityseg`` (default ``~/.cache/cityseg``): per-user files that may be deleted at any time."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cityseg"


# ---- atomic writes ---------------------------------------------------------------------------
def prepare_target(path: str | os.PathLike, what: str = "a file") -> Path:
    """``path`` as a Path whose folder exists; a one-line error if it is a folder or its folder cannot be made."""
    path = Path(path)
    if path.is_dir():
        raise CitysegError(f"{path}: is a folder; cannot write {what} there")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise CitysegError(f"{path}: cannot create its folder (a file is in the way)") from None
    return path


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux reports it (``/proc/self/status``);
    elsewhere set and restored at once under a lock, so no file of this module is created in between."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split(":", 1)[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is fsynced and renamed onto ``path``.

    The file gets the mode a plain ``open()`` would give it (0666 less the umask), not the temporary
    file's private 0600. On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = prepare_target(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write HxW (uint8/uint16) or HxWx3 RGB uint8 ``array`` as PNG, atomically."""
    array = np.asarray(array)
    if array.ndim == 3:
        array = cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise CitysegError(f"{path}: could not encode PNG")
    atomic_write_bytes(path, buf.tobytes())


# ---- validated reading -----------------------------------------------------------------------
# PIL modes -> (channels, bits)
_MODES = {"1": (1, 1), "L": (1, 8), "P": (1, 8), "I;16": (1, 16), "I;16B": (1, 16), "I": (1, 32), "LA": (2, 8), "RGB": (3, 8), "RGBA": (4, 8), "F": (1, 32)}


def probe_image(path: str | os.PathLike) -> tuple[int, int, str]:
    """Read only the header of an image: (height, width, PIL mode). Rejects huge or unreadable files."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise CitysegError(f"{path}: empty file (0 bytes)")
        with Image.open(path) as im:
            width, height = im.size
            mode = im.mode
            if im.format == "PNG" and mode in ("RGB", "RGBA"):
                # PIL reports 16-bit-per-channel colour PNGs as 8-bit modes; the IHDR bit depth tells
                im.fp.seek(24)
                if im.fp.read(1) == b"\x10":
                    mode += ";16"
    except CitysegError:
        raise
    except FileNotFoundError:
        raise CitysegError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise CitysegError(f"{path}: is a directory, not an image") from None
    except Image.DecompressionBombError:
        raise CitysegError(f"{path}: header claims more than {Image.MAX_IMAGE_PIXELS * 2:,} pixels; refusing to decode") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CitysegError(f"{path}: not a readable image ({e.__class__.__name__})") from None
    except Exception as e:  # PIL's parsers raise many types on garbage (struct.error, EOFError, ...)
        raise CitysegError(f"{path}: not a readable image (malformed header: {e.__class__.__name__})") from None
    if width * height > MAX_PIXELS:
        raise CitysegError(f"{path}: header claims {width}x{height} pixels, more than the {MAX_PIXELS:,}-pixel limit; refusing to decode")
    if width <= 0 or height <= 0:
        raise CitysegError(f"{path}: invalid size {width}x{height}")
    return height, width, mode


def _decode(path: Path, flags: int, shape: tuple[int, int] | None = None) -> np.ndarray:
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise CitysegError(f"{path}: cannot read ({e.strerror})") from None
    try:
        arr = cv2.imdecode(data, flags)
    except cv2.error:
        arr = None
    if arr is None:
        raise CitysegError(f"{path}: corrupt or truncated image (decoding failed)")
    if shape is not None and tuple(arr.shape[:2]) != tuple(shape):
        raise CitysegError(f"{path}: decoded size {arr.shape[1]}x{arr.shape[0]} differs from its header {shape[1]}x{shape[0]}")
    return arr


def _check_complete(path: Path) -> None:
    """A PNG must end with its IEND chunk; OpenCV silently decodes truncated files."""
    if path.suffix.lower() != ".png":
        return
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 12))
        tail = f.read()
    if b"IEND" not in tail:
        raise CitysegError(f"{path}: truncated PNG (no IEND chunk at the end)")


#: public name of the cheap completeness check (reads 12 bytes, decodes nothing)
check_complete = _check_complete


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an 8-bit RGB image as HxWx3 uint8 (RGB order). Rejects grayscale, 16-bit and RGBA files."""
    path = Path(path)
    h, w, mode = probe_image(path)
    if mode != "RGB":
        what = {
            "L": "grayscale",
            "I;16": "16-bit",
            "I;16B": "16-bit",
            "I": "32-bit",
            "RGBA": "RGBA (4-channel)",
            "LA": "grayscale+alpha",
            "P": "palette",
            "1": "1-bit",
            "RGB;16": "16-bit RGB",
            "RGBA;16": "16-bit RGBA",
        }.get(mode, f"mode {mode}")
        raise CitysegError(f"{path}: expected an 8-bit RGB image, got {what}")
    _check_complete(path)
    bgr = _decode(path, cv2.IMREAD_COLOR, (h, w))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_label(path: str | os.PathLike, max_value: int | None = None) -> np.ndarray:
    """Read a single-channel 8-bit label PNG as HxW uint8; values above ``max_value`` are an error."""
    path = Path(path)
    h, w, mode = probe_image(path)
    if mode not in ("L", "P"):
        raise CitysegError(f"{path}: expected a single-channel 8-bit label image, got PIL mode {mode}")
    _check_complete(path)
    if mode == "P":  # palette PNGs: keep the indices, not the colours
        try:
            with Image.open(path) as im:
                arr = np.asarray(im)
        except Exception as e:  # truncated / corrupt data: PIL raises OSError, SyntaxError, zlib.error, ...
            raise CitysegError(f"{path}: corrupt or truncated image ({e.__class__.__name__})") from None
    else:
        arr = _decode(path, cv2.IMREAD_UNCHANGED, (h, w))
    if arr.ndim != 2:
        raise CitysegError(f"{path}: expected a single-channel label image, got shape {arr.shape}")
    if max_value is not None:
        top = int(arr.max()) if arr.size else 0
        if top > max_value:
            raise CitysegError(f"{path}: label value {top} outside the label table (0..{max_value})")
    return arr


def read_instance(path: str | os.PathLike) -> np.ndarray:
    """Read a 16-bit instanceIds PNG (labelId*1000+k, or labelId) as HxW int32."""
    path = Path(path)
    h, w, mode = probe_image(path)
    if mode not in ("I;16", "I;16B", "I", "L"):
        raise CitysegError(f"{path}: expected a 16-bit single-channel instanceIds image, got PIL mode {mode}")
    _check_complete(path)
    arr = _decode(path, cv2.IMREAD_UNCHANGED, (h, w))
    if arr.ndim != 2:
        raise CitysegError(f"{path}: expected a single-channel instanceIds image, got shape {arr.shape}")
    return arr.astype(np.int32)
