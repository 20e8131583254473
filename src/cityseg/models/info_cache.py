"""``model_info`` remembered in the user's cache, so ``cityseg models`` counts each model's FLOPs once.

Counting runs every network once (on the meta device) and takes seconds for the whole registry; the counts
only change with the models' code, torch or the arguments. The cache key holds all of them: a hash of the
``cityseg.models`` sources, the cityseg and torch versions, the model name, the input size and the class
count. The cache is one JSON file; an unreadable, damaged or unwritable one is ignored and the figures are counted.
"""

from __future__ import annotations

import contextlib
import hashlib
from functools import cache
from pathlib import Path
from typing import Any

import torch

from cityseg import __version__
from cityseg.errors import CitysegError
from cityseg.io import atomic_write_json, read_json_dict, user_cache_dir
from cityseg.models.registry import describe, model_info

CACHE_FILE = "model_info.json"


@cache
def code_fingerprint() -> str:
    """A hash of the model code, cityseg's and torch's versions: any change to them counts again."""
    h = hashlib.blake2b(f"{__version__} {torch.__version__}".encode(), digest_size=12)
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _usable(row: Any, name: str) -> bool:
    """A cached row of the shape ``model_info`` returns; a damaged one is counted again, never printed."""
    if not isinstance(row, dict) or row.get("name") != name or isinstance(row.get("params"), bool):
        return False
    gflops = row.get("gflops")
    numeric = isinstance(row.get("params"), int) and isinstance(gflops, (int, float)) and not isinstance(gflops, bool)
    return numeric and isinstance(row.get("note"), (str, type(None)))


def cached_model_info(names: list[str], size: tuple[int, int], num_classes: int, cache_file: Path | None = None) -> list[dict[str, Any]]:
    """``model_info`` of each name, from the cache where it holds the same key, counted (and stored) otherwise."""
    path = cache_file or user_cache_dir() / CACHE_FILE
    stored = read_json_dict(path) or {}
    if stored.get("fingerprint") != code_fingerprint() or not isinstance(stored.get("models"), dict):
        stored = {"fingerprint": code_fingerprint(), "models": {}}
    known = stored["models"]
    rows, counted = [], False
    for name in names:
        key = f"{name}|{size[0]}x{size[1]}|{num_classes}"
        if not _usable(known.get(key), name):
            known[key] = model_info(name, size, num_classes)
            counted = True
        rows.append({**known[key], "description": describe(name)})  # the description is text, never cached stale
    if counted:
        with contextlib.suppress(OSError, CitysegError):  # a read-only home (or a folder in the file's place) only costs the next call its counting
            atomic_write_json(path, stored)
    return rows
