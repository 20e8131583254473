"""Checkpoints: one plain dict, written atomically, read with ``torch.load(weights_only=True)``.

``Checkpoint`` is the schema: every writer (training, the benchmark, tests) builds one and
``save_checkpoint`` writes ``Checkpoint.to_dict()``; readers get the plain dict back from
``load_checkpoint`` (torchvision-references style), so a file is readable without cityseg.
Model-only writers leave the training fields at their defaults.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import pickle
import platform
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cityseg import __version__
from cityseg.errors import CitysegError
from cityseg.io import atomic_path, held_warnings, reading
from cityseg.labels import LABEL_MODES, num_classes

REQUIRED_KEYS = ("model", "model_name", "label_mode", "num_classes")
#: the keys every reader of a model uses, type-checked on loading; training's own state is checked on resume
CHECKED_KEYS = (*REQUIRED_KEYS, "model_options", "class_names", "input_size", "interpolation", "mean", "std", "config")


def versions() -> dict[str, str]:
    return {
        "cityseg": __version__,
        "torch": str(torch.__version__),  # TorchVersion is not a plain str: weights_only would refuse it
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


@dataclass
class Checkpoint:
    """Every key a cityseg checkpoint may hold; the file is ``to_dict()`` of this."""

    model: dict[str, torch.Tensor]  # state_dict
    model_name: str  # registry name (cityseg.models.build_model)
    label_mode: str  # "labelIds" (34 classes), "trainIds" (19 classes + ignore 255) or "camvid" (11 + 255)
    num_classes: int
    model_options: dict[str, Any] = field(default_factory=dict)  # builder keyword arguments
    class_names: list[str] = field(default_factory=list)
    input_size: list[int] | None = None  # [H, W] the model was trained at
    interpolation: str = "area"  # image resize: "area" or "bilinear"
    mean: list[float] | None = None  # normalisation after /255, per channel in channel_order
    std: list[float] | None = None
    channel_order: str = "RGB"  # "BGR": the image's channels are reversed first (OpenCV-trained weights)
    # training state (defaults for a checkpoint that only describes a model)
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    epoch: int = 0  # epochs completed
    step: int = 0  # steps done within ``epoch`` (mid-epoch saves)
    config: dict[str, Any] | None = None  # the resolved training config
    metrics: dict[str, float] = field(default_factory=dict)  # last validation metrics
    best_miou: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per finished epoch
    train_state: dict[str, Any] | None = None  # running loss sums of the current epoch
    world_size: int = 1
    rng: list[dict[str, Any]] | None = None  # RNG states, one per process
    versions: dict[str, str] = field(default_factory=versions)
    # AdaBN (``cityseg adapt``): the images the BatchNorm statistics were re-estimated on, else None;
    # {"folder": str, "images": int, "size": [H, W], "batch": int}
    adapted_to: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "checkpoint") -> Checkpoint:
        """A ``Checkpoint`` from a dict; an unknown key or a missing required one is a ``CitysegError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CitysegError(f"{where}: unknown checkpoint key(s) {', '.join(unknown)}")
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise CitysegError(f"{where}: not a cityseg checkpoint (missing {', '.join(missing)})")
        return cls(**data)


def save_checkpoint(path: str | os.PathLike, ckpt: Checkpoint | Mapping[str, Any]) -> None:
    """Write ``ckpt`` to ``path`` atomically (temp file + fsync + rename); the old file stays until then.

    A dict goes through ``Checkpoint.from_dict``, so only schema keys are ever written.
    """
    if not isinstance(ckpt, Checkpoint):
        ckpt = Checkpoint.from_dict(ckpt, where=str(path))
    ckpt = ckpt.to_dict()
    with atomic_path(path) as tmp:
        writer = _Writer(open(tmp, "wb"))  # noqa: SIM115 (closed below, errors included)
        try:
            torch.save(ckpt, writer)
            writer.f.close()  # the last buffered bytes: a full disk may only show here
        except (RuntimeError, OSError) as e:  # torch's zip writer may hide the OS error (full disk, size limit)
            with contextlib.suppress(OSError):
                writer.f.close()
            e = writer.error or e
            if isinstance(e, OSError):
                raise CitysegError(f"{path}: cannot write checkpoint: {e.strerror or e}") from None
            raise


class _Writer:
    """File wrapper for ``torch.save`` that remembers the OSError a write raised."""

    def __init__(self, f):
        self.f, self.error, self.name = f, None, f.name

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def load_torch_file(path: str | os.PathLike, what: str, map_location: str | torch.device = "cpu") -> Any:
    """What ``torch.load(weights_only=True)`` reads from ``path``; every problem is one ``CitysegError`` line.

    The one reader of torch files (checkpoints, encoder weights, imported official weights): decoded inside
    ``io.reading``, so any exception names the file; a pickle that would import code (``os.system``, say) is
    refused by name, without torch's advice to load it unsafely; torch's warnings about a file that then
    fails to load are dropped (the error line says what went wrong).
    """
    with reading(path, what) as path:
        if path.stat().st_size == 0:
            raise CitysegError(f"{path}: empty {what} file (0 bytes)")
        try:
            with held_warnings():  # torch warns of an unusual pickle protocol before failing on garbage
                return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            if "Weights only load failed" not in str(e):
                raise  # garbage that is not a pickle: the generic one-line error
            # torch's first line advises loading unsafely: say instead what the weights-only unpickler met
            met = [ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "Unsupported" in ln] or ["an unsupported pickle"]
            if "GLOBAL" in met[0]:  # an import: code would run
                raise CitysegError(f"{path}: refused to load: not a plain weights file ({met[0]})") from None
            raise CitysegError(f"{path}: cannot read {what}: UnpicklingError: {met[0]}") from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a cityseg checkpoint safely (``weights_only=True``); any problem is a one-line ``CitysegError``.

    The file is read by ``load_torch_file``, and the keys that describe the model are checked against
    the types of ``Checkpoint``'s fields, so no model reader after this one meets a value of the wrong kind.
    """
    ckpt = load_torch_file(path, "checkpoint", map_location)
    check_schema(path, ckpt)
    return ckpt


def check_schema(path: str | os.PathLike, ckpt: Any) -> None:
    """``ckpt`` holds the required keys, and each of ``CHECKED_KEYS`` it holds has its field's type."""
    if not isinstance(ckpt, dict):
        raise CitysegError(f"{path}: not a cityseg checkpoint (holds a {type(ckpt).__name__}, not a dict)")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CitysegError(f"{path}: not a cityseg checkpoint (missing {', '.join(missing)})")
    hints = _field_types()
    for key in CHECKED_KEYS:
        value = ckpt.get(key)
        if key in ckpt and not _conforms(value, hints[key]):
            raise CitysegError(f"{path}: not a cityseg checkpoint ({key} holds {_describe(value)}, expected {hints[key]})")
    mode, n = ckpt["label_mode"], ckpt["num_classes"]
    if mode not in LABEL_MODES:
        raise CitysegError(f"{path}: checkpoint has unknown label mode {mode!r} (expected {', '.join(LABEL_MODES)})")
    expected = num_classes(mode)
    if n != expected:
        raise CitysegError(f"{path}: checkpoint claims label mode {mode} ({expected} classes) but num_classes is {n!r}")


@functools.cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Checkpoint)


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def _conforms(value: Any, hint: Any) -> bool:
    """``value`` matches the type hint ``hint`` (unions, lists, tuples read as lists, dicts; ``Any`` matches all)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (types.UnionType, typing.Union):
        return any(_conforms(value, h) for h in args)
    if hint is type(None):
        return value is None
    if hint in (int, float):  # a float field takes an int; neither takes a bool
        return isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, (list, tuple)) and all(_conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_conforms(k, args[0]) and _conforms(v, args[1]) for k, v in value.items())
    return isinstance(value, hint)
