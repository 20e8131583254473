"""File I/O shared by every module: atomic writes, validated PNG reading, and the readers' error wrapper.

Every reader checks the header before decoding (size limit, channels, bit depth) and raises a
one-line ``CitysegError`` naming the file; every writer goes through a temporary file in the same
folder and ``os.replace``, so a crash never leaves a half-written file behind.

``reading(path, what)`` is the one place a reader's decoding step turns into that error: any exception a
parser raises on garbage (pickle, zip, protobuf, TOML, JSON, PIL, OpenCV; their types are open-ended)
becomes one line naming the file, so no reader keeps a list of the exception types it expects.
``read_json_dict`` is the one reader of the optional JSON caches, which read as absent when damaged.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from cityseg.errors import CitysegError

cv2.setNumThreads(1)

#: largest image accepted (pixels): an 8192x8192 square, so 8K frames (7680x4320) and every camera
#: of the driving datasets fit, with Cityscapes frames (2048x1024 = 2.1 M) far below
MAX_PIXELS = 8192 * 8192
# Pillow's own bomb limit is set to ours on purpose: a header over it warns (up to twice the limit) or
# raises in ``Image.open``; ``probe_image`` turns both into the one-line refusal, and only there, so the
# warning still reaches any other code that opens large images with Pillow.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/cityseg`` (default ``~/.cache/cityseg``): per-user files that may be deleted at any time."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cityseg"


# ---- reading: one error contract for every reader ---------------------------------------------
def first_line(exc: BaseException) -> str:
    """The first non-blank line of ``str(exc)`` ('' when it has none)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), "")


def check_regular_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path if it is a regular file; else a one-line ``CitysegError`` before anything opens it.

    A folder, a FIFO (whose open blocks until a writer comes), a socket or a device is refused here.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        hint = " (a broken symlink)" if path.is_symlink() else ""
        raise CitysegError(f"{path}: {what} not found{hint}") from None
    except OSError as e:  # a symlink loop, a name too long, no permission on a folder above
        hint = " (a symlink loop)" if e.errno == errno.ELOOP else ""
        raise CitysegError(f"{path}: cannot read {what}: {e.strerror or e.__class__.__name__}{hint}") from None
    except ValueError as e:  # a NUL byte in the name
        raise CitysegError(f"{path!r}: cannot read {what}: {first_line(e)}") from None
    if stat.S_ISDIR(mode):
        raise CitysegError(f"{path}: {what} is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise CitysegError(f"{path}: {what} is not a regular file (a FIFO, socket or device)")
    return path


@contextlib.contextmanager
def reading(path: str | os.PathLike, what: str) -> Iterator[Path]:
    """Check that ``path`` is a regular file, then run the block that decodes it.

    Any exception the block raises becomes ``CitysegError("PATH: cannot read WHAT: Type: first line")``:
    parsers raise open-ended types on garbage, so no reader lists the ones it expects. A ``CitysegError``
    (the reader's own check) passes through unchanged; so do ``KeyboardInterrupt`` and ``MemoryError``,
    which say nothing about the file. Every reader of a user's file decodes inside this block.
    """
    path = check_regular_file(path, what)
    try:
        yield path
    except (CitysegError, MemoryError):
        raise
    except Exception as e:
        detail = first_line(e)
        raise CitysegError(f"{path}: cannot read {what}: {e.__class__.__name__}{': ' + detail if detail else ''}") from None


@contextlib.contextmanager
def held_warnings() -> Iterator[None]:
    """Hold back the warnings a parser gives in the block: shown after it when it succeeds, dropped when it
    raises (the one-line error says what went wrong; a warning would be a second stderr line).

    ``warnings.catch_warnings`` is process-wide, so this is for readers that run on one thread (a
    checkpoint, not the frames the evaluator reads in threads).
    """
    with warnings.catch_warnings(record=True) as held:
        yield
    for w in held:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def read_json_dict(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when the file is absent, not a regular file, unreadable, not
    UTF-8 JSON or not an object: the reader of caches, which are rebuilt rather than trusted when damaged."""
    try:
        with reading(path, "JSON") as checked:
            data = json.loads(checked.read_text(encoding="utf-8"))
    except CitysegError:
        return None
    return data if isinstance(data, dict) else None


# ---- one writer per folder ------------------------------------------------------------------------
#: the lock file ``folder_lock`` holds in a folder
LOCK_NAME = ".lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder/.lock`` for the block, creating the folder if needed.

    Another process holding it is a one-line ``CitysegError`` at once (no waiting). The lock is a POSIX
    record lock (``fcntl.lockf``), not ``flock``: it belongs to this process alone, so DataLoader workers
    forked while it is held do not keep it after the block, and the kernel drops it when the process ends,
    however it ends (SIGKILL included), so a lock file left behind never blocks a later run. If the block
    raises, a folder this call created is removed again when it holds nothing but the lock file, so a
    refused command leaves nothing behind.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CitysegError(f"{folder}: output path exists and is not a folder")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fd = _lock(folder / LOCK_NAME, folder, what)
    try:
        yield folder
    except BaseException:
        if created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:
            with contextlib.suppress(OSError):
                (folder / LOCK_NAME).unlink()
                folder.rmdir()
        raise
    finally:
        os.close(fd)  # closing releases the record lock


def _lock(lock: Path, folder: Path, what: str) -> int:
    """An fd holding the lock on ``lock``; retried when the file was replaced between opening and locking."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise CitysegError(f"{folder}: in use by another process ({what}; it holds {lock}); wait for it to end or choose another folder") from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)  # removed by a refused holder after we opened it: lock the file now there


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


_BOMB_CHECK = threading.Lock()  # warnings.catch_warnings is process-wide: one header parse at a time


def _open_header(path: Path) -> Image.Image:
    """``Image.open`` for ``probe_image``, which refuses every header over ``MAX_PIXELS`` itself, naming its
    size: Pillow's bomb warning for such a header is not shown, and its bomb error (over twice the limit)
    becomes the same refusal. Any other warning while parsing the header (a TIFF's tags running past the
    end of the file, say) is raised, so a damaged header is one error line rather than warnings on stderr."""
    with _BOMB_CHECK, warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except Image.DecompressionBombError:
            raise CitysegError(f"{path}: header claims more than {2 * MAX_PIXELS:,} pixels (the limit is {MAX_PIXELS:,}); refusing to decode") from None


def probe_image(path: str | os.PathLike) -> tuple[int, int, str]:
    """Read only the header of an image: (height, width, PIL mode). Rejects huge or unreadable files."""
    with reading(path, "image") as path:
        if path.stat().st_size == 0:
            raise CitysegError(f"{path}: empty file (0 bytes)")
        with _open_header(path) as im:
            width, height = im.size
            mode = im.mode
            if im.format == "PNG" and mode in ("RGB", "RGBA"):
                # PIL reports 16-bit-per-channel colour PNGs as 8-bit modes; the IHDR bit depth tells
                im.fp.seek(24)
                if im.fp.read(1) == b"\x10":
                    mode += ";16"
    if width * height > MAX_PIXELS:
        raise CitysegError(f"{path}: header claims {width}x{height} pixels, more than the {MAX_PIXELS:,}-pixel limit; refusing to decode")
    if width <= 0 or height <= 0:
        raise CitysegError(f"{path}: invalid size {width}x{height}")
    return height, width, mode


def _decode(path: Path, flags: int, shape: tuple[int, int] | None = None) -> np.ndarray:
    with reading(path, "image"):
        arr = cv2.imdecode(np.fromfile(path, dtype=np.uint8), flags)
    if arr is None:
        raise CitysegError(f"{path}: corrupt or truncated image (decoding failed)")
    if shape is not None and tuple(arr.shape[:2]) != tuple(shape):
        raise CitysegError(f"{path}: decoded size {arr.shape[1]}x{arr.shape[0]} differs from its header {shape[1]}x{shape[0]}")
    return arr


def _check_complete(path: Path) -> None:
    """A PNG must end with its IEND chunk; OpenCV silently decodes truncated files."""
    if path.suffix.lower() != ".png":
        return
    with reading(path, "image"), open(path, "rb") as f:
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
        with reading(path, "label image"), Image.open(path) as im:
            arr = np.asarray(im)
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
