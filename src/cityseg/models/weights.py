"""Loading a local encoder / backbone weights file into a model.

Every model with an ``encoder_weights=PATH`` option loads through ``load_weights``; each model
supplies only its key layouts (a function from the file's keys to its own) and which of its
children the file must cover. Nothing is downloaded. Every problem is one ``CitysegError`` line
that names the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import torch
from torch import nn

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
    if not os.path.isfile(path):
        raise CitysegError(f"{path}: {what} file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CitysegError(f"{path}: cannot read a torch state_dict ({type(e).__name__}: {e})") from None
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
