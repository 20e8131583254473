"""Checkpoints: one plain dict, written atomically, read with ``torch.load(weights_only=True)``.

``Checkpoint`` is the schema: every writer (training, the benchmark, tests) builds one and
``save_checkpoint`` writes ``Checkpoint.to_dict()``; readers get the plain dict back from
``load_checkpoint`` (torchvision-references style), so a file is readable without cityseg.
Model-only writers leave the training fields at their defaults.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import platform
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cityseg import __version__
from cityseg.errors import CitysegError
from cityseg.io import atomic_path
from cityseg.labels import LABEL_MODES, num_classes

REQUIRED_KEYS = ("model", "model_name", "label_mode", "num_classes")


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
    mean: list[float] | None = None  # normalisation after /255
    std: list[float] | None = None
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


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a cityseg checkpoint safely (``weights_only=True``); any problem is a one-line ``CitysegError``."""
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            raise CitysegError(f"{path}: broken or looping symlink, not a checkpoint file")
        raise CitysegError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise CitysegError(f"{path}: is a folder, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CitysegError(f"{path}: empty checkpoint file (0 bytes)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
        first = lines[0] if lines else "unpickling failed"
        raise CitysegError(f"{path}: refused to load: not a plain weights checkpoint ({first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CitysegError(f"{path}: corrupt or truncated checkpoint ({e.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        missing = [k for k in REQUIRED_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
        raise CitysegError(f"{path}: not a cityseg checkpoint (missing {', '.join(missing)})")
    mode, n = ckpt["label_mode"], ckpt["num_classes"]
    if mode not in LABEL_MODES:
        raise CitysegError(f"{path}: checkpoint has unknown label mode {mode!r} (expected {', '.join(LABEL_MODES)})")
    expected = num_classes(mode)
    if not isinstance(n, int) or n != expected:
        raise CitysegError(f"{path}: checkpoint claims label mode {mode} ({expected} classes) but num_classes is {n!r}")
    return ckpt
