"""Training recipes: TOML files shipped in ``cityseg/configs``, dotted ``--set`` overrides, validation.

A recipe is a plain nested dict with the sections of ``DEFAULTS``. A recipe file only needs the keys it
changes; every key it names must exist in ``DEFAULTS`` with a value of the same type, and ``--set
section.key=value`` overrides are type-checked the same way (the value is parsed as a TOML value, bare
words are strings). Any problem is one ``CitysegError`` line naming the file or the key.
"""

from __future__ import annotations

import copy
import math
import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from cityseg.errors import CitysegError
from cityseg.io import reading
from cityseg.labels import LABEL_MODES

#: every recipe key with its default (the defaults are the seed recipe's values where it has one)
DEFAULTS: dict[str, Any] = {
    "model": {
        "name": "",  # set by --model
        "options": {},  # builder keyword arguments (free-form, checked by build_model)
        "sync_bn": False,  # convert BatchNorm to SyncBatchNorm under torchrun
    },
    "data": {
        "label_mode": "labelIds",
        "size": [128, 256],  # H, W the model trains and validates at
        "interpolation": "bilinear",
        "mean": [],  # [] = no normalisation after /255
        "std": [],
        "cache": True,
        "workers": 0,
        "train_split": "train",
        "val_split": "val",
        "sources": [],  # [{root = "...", weight = 0.7}, ...]: train on these roots at these weights; [] = --data only
    },
    "augment": {
        "enabled": False,
        "scale": [0.5, 2.0],  # random scale range, then crop/pad to augment.crop
        "crop": [],  # [H, W] of the training crop; [] = data.size
        "hflip": 0.5,  # probability
        "photometric": True,  # brightness/contrast/saturation/hue jitter
        "classmix": 0.0,  # probability of pasting half the classes of a second training frame (ClassMix)
        # appearance randomisation, each a probability (0 = off; data/transforms.py holds the ranges)
        "colour": 0.0,  # per-channel gains, gamma, channel shuffle
        "style": 0.0,  # per-channel mean/std re-normalised to random targets
        "randconv": 0.0,  # random 1/3/5/7 convolution mixed with the image (RandConv)
        "blur": 0.0,  # Gaussian blur
        "noise": 0.0,  # additive Gaussian noise
        "jpeg": 0.0,  # JPEG compression artefacts
    },
    "optim": {
        "name": "adam",  # adam | adamw | sgd
        "lr": 1e-3,
        "betas": [0.9, 0.999],
        "eps": 1e-7,
        "weight_decay": 0.0,
        "momentum": 0.9,  # sgd only
    },
    "schedule": {
        "name": "constant",  # constant | poly | cosine (per iteration)
        "power": 0.9,
        "warmup_iters": 0,
        "warmup_factor": 1e-3,
        "min_lr": 0.0,
    },
    "loss": [{"name": "ce", "weight": 1.0}],
    "train": {
        "epochs": 40,
        "iters": 0,  # when > 0: the run is this many optimiser steps (the schedule spans them, the last epoch ends early); epochs is ignored
        "batch_size": 16,  # GLOBAL batch: split evenly across torchrun processes
        "eval_batch_size": 4,  # per process; small batches are faster on CPU
        "seed": 0,
        "fast": "auto",  # auto | true | false: channels_last + bf16 autocast (CPU) / AMP fp16 (CUDA)
        "grad_clip": 0.0,  # max global grad norm; 0 = off
        "loss_scale": 1.0,  # the loss's resolution as a fraction of the crop (outputs resized there, labels nearest-downsampled)
        "nan_policy": "stop",  # stop | skip
        "drop_last": False,
        "max_minutes": 0.0,  # stop (resumably) after this much training time; 0 = no limit
        "checkpoint_every": 0,  # also write last.pt every N steps inside an epoch; 0 = epoch ends only
        "checkpoint_minutes": 5.0,  # also write last.pt inside an epoch once this long since the last save; 0 = off
        "val_every": 1,
        "deterministic": False,  # torch.use_deterministic_algorithms
        "tensorboard": False,
        "init_from": "",  # a cityseg checkpoint whose model weights start a fresh run (fine-tuning); "" = random init
        "encoder_lr_mult": 1.0,  # LR multiplier of the parts a model loaded pretrained weights into (model.pretrained_parts)
        "freeze_encoder_bn": False,  # keep the BatchNorm of those parts in eval mode with frozen affine parameters
        "frozen_stages": 0,  # the first N stages of the pretrained encoder (the stem in the first) keep their weights: no gradients, eval mode
    },
}

#: allowed values of the string keys that have a fixed set
CHOICES: dict[str, tuple[Any, ...]] = {
    "data.label_mode": tuple(LABEL_MODES),
    "data.interpolation": ("area", "bilinear"),
    "optim.name": ("adam", "adamw", "sgd"),
    "schedule.name": ("constant", "poly", "cosine"),
    "train.fast": ("auto", True, False),
    "train.nan_policy": ("stop", "skip"),
}

#: the augment keys that are probabilities of an appearance randomisation (``data.transforms.Appearance``)
APPEARANCE_KEYS = ("colour", "style", "randconv", "blur", "noise", "jpeg")

RECIPES_PACKAGE = "cityseg.configs"


def recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(RECIPES_PACKAGE).iterdir() if p.name.endswith(".toml"))


def load_recipe(name_or_path: str | os.PathLike, _chain: tuple[str, ...] = ()) -> tuple[dict[str, Any], str]:
    """A shipped recipe name (``seed``, ``standard``) or a TOML file path -> (validated config, source).

    A top-level ``base = "NAME"`` (a shipped recipe, or a TOML path relative to the file) starts from that
    recipe, and the file's tables replace its keys: a variant states only what differs.
    """
    text = str(name_or_path)
    shipped = resources.files(RECIPES_PACKAGE) / f"{text}.toml"
    if os.sep not in text and not text.endswith(".toml") and shipped.is_file():
        source = f"{text} recipe"
        data = tomllib.loads(shipped.read_text(encoding="utf-8"))  # ours, and parsed by the tests
    else:
        path = Path(text)
        if not path.exists() and not path.is_symlink():
            raise CitysegError(f"{path}: no such config file (shipped recipes: {', '.join(recipe_names())})")
        source = str(path)
        with reading(path, "TOML config"):
            raw = path.read_text(encoding="utf-8")
            if not raw.strip():
                raise CitysegError(f"{path}: empty config file (no settings)")
            data = tomllib.loads(raw)
    base = DEFAULTS
    if "base" in data:
        name = data.pop("base")
        if not isinstance(name, str) or not name:
            raise CitysegError(f"{source}: base must name a recipe, got {name!r}")
        if source in _chain:
            raise CitysegError(f"{source}: recipes name each other as base ({' -> '.join((*_chain, source))})")
        relative = Path(text).parent / name if source == str(Path(text)) else None
        target = relative if relative is not None and relative.is_file() else name
        if target == name and name not in recipe_names() and not Path(name).exists():
            raise CitysegError(f"{source}: base = {name!r} is neither a shipped recipe ({', '.join(recipe_names())}) nor a file next to it")
        base, _ = load_recipe(target, (*_chain, source))
    return merge(base, data, source), source


def merge(base: dict[str, Any], update: dict[str, Any], source: str) -> dict[str, Any]:
    """``base`` with the keys of ``update`` replaced, after checking each against ``DEFAULTS``."""
    out = copy.deepcopy(base)
    for section, value in update.items():
        if section not in DEFAULTS:
            raise CitysegError(f"{source}: unknown section {section!r} (known: {', '.join(DEFAULTS)})")
        if section == "loss":
            out["loss"] = check_losses(value, source)
            continue
        if not isinstance(value, dict):
            raise CitysegError(f"{source}: {section!r} must be a table")
        for key, v in value.items():
            out[section][key] = check_value(f"{section}.{key}", v, source)
    return validate(out, source)


def check_value(key: str, value: Any, source: str) -> Any:
    """Type-check one dotted key against ``DEFAULTS`` and return the (normalised) value."""
    section, _, name = key.partition(".")
    if section not in DEFAULTS or section == "loss" or name not in DEFAULTS[section]:
        raise CitysegError(f"{source}: unknown config key {key!r}")
    default = DEFAULTS[section][name]
    value = _coerce(key, value, default, source)
    if key in CHOICES and value not in CHOICES[key]:
        allowed = ", ".join(str(c).lower() if isinstance(c, bool) else c for c in CHOICES[key])
        raise CitysegError(f"{source}: {key} = {value!r} is not one of {allowed}")
    return value


def _type_name(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}.get(type(v), type(v).__name__)


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    if key == "data.sources":
        return check_sources(value, source)
    if key == "train.fast":  # "auto" or a boolean
        if isinstance(value, bool) or value == "auto":
            return value
        raise CitysegError(f'{source}: {key} must be "auto", true or false, not {value!r}')
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            if not math.isfinite(value):
                raise CitysegError(f"{source}: {key} must be a finite number, not {value}")
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        if ok:
            value = [type(default[0])(v) if default else float(v) for v in value]
            if default and len(value) != len(default):
                raise CitysegError(f"{source}: {key} needs {len(default)} values, got {len(value)}")
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    else:  # pragma: no cover - DEFAULTS only holds the types above
        ok = False
    if not ok:
        raise CitysegError(f"{source}: {key} must be {_type_name(default)}, got {value!r}")
    return copy.deepcopy(value)


def check_sources(value: Any, source: str) -> list[dict[str, Any]]:
    """``data.sources``: a list of ``{root = "PATH", weight = W}`` tables, W a positive finite number."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise CitysegError(f'{source}: data.sources must be a list of tables, e.g. [{{root = "data/cityscapes", weight = 0.7}}], got {value!r}')
    out = []
    for k, spec in enumerate(value):
        where = f"data.sources[{k}]"
        unknown = sorted(set(spec) - {"root", "weight"})
        if unknown:
            raise CitysegError(f"{source}: unknown config key {where}.{unknown[0]!r} (a source has root and weight)")
        root, weight = spec.get("root"), spec.get("weight", 1.0)
        if not isinstance(root, str) or not root:
            raise CitysegError(f"{source}: {where}.root must be a dataset folder, got {root!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise CitysegError(f"{source}: {where}.weight must be a positive number, got {weight!r}")
        out.append({"root": root, "weight": float(weight)})
    return out


def check_losses(value: Any, source: str) -> list[dict[str, Any]]:
    """The recipe's ``loss`` list, each entry checked against its loss's options (``losses.loss_options``)."""
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise CitysegError(f'{source}: loss must be a non-empty list of tables, e.g. [{{name = "ce", weight = 1.0}}]')
    entries = [_check_loss(i, spec, source) for i, spec in enumerate(value)]
    windows = sorted(tuple(e.get("during", (0.0, 1.0))) for e in entries)
    covered = 0.0
    for start, end in windows:
        if start > covered:
            break
        covered = max(covered, end)
    if covered < 1.0:
        raise CitysegError(f"{source}: no loss term counts from {100 * covered:g}% of the run on; the terms' `during` windows must cover [0, 1]")
    return entries


def _check_loss(i: int, spec: dict[str, Any], source: str) -> dict[str, Any]:
    # the losses need torch; importing them here keeps reading a recipe (and ``cityseg train --help``) torch-free
    from cityseg.train.losses import LOSSES, MAIN_OUTPUT, loss_options

    name = spec.get("name")
    if name not in LOSSES:
        raise CitysegError(f"{source}: loss[{i}].name = {name!r} is not one of {', '.join(LOSSES)}")
    options = loss_options(name)
    entry: dict[str, Any] = {"name": name, "weight": 1.0}
    for k, v in spec.items():
        where = f"loss[{i}].{k}"
        if k == "name":
            continue
        if k == "weight":
            entry[k] = _coerce(where, v, 1.0, source)
        elif k == "output":
            if getattr(LOSSES[name], "outputs", None):
                raise CitysegError(f"{source}: {where}: loss {name!r} reads the outputs {', '.join(LOSSES[name].outputs)} itself")
            if not isinstance(v, str) or not v:
                raise CitysegError(
                    f'{source}: {where} must name a model output, e.g. "{MAIN_OUTPUT}", "aux" or "aux*" (every output whose name starts with aux); got {v!r}'
                )
            entry[k] = v
        elif k == "during":
            if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v) and 0 <= v[0] < v[1] <= 1):
                raise CitysegError(f"{source}: {where} must be [start, end], fractions of the run with 0 <= start < end <= 1; got {v!r}")
            entry[k] = [float(x) for x in v]
        elif k not in options:
            raise CitysegError(f"{source}: unknown config key {where!r} for loss {name!r} (options: weight, output, during, {', '.join(options)})")
        elif k == "class_weights":
            if v in ("none", "auto"):
                entry[k] = v
            elif isinstance(v, list) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                entry[k] = [float(x) for x in v]
            else:
                raise CitysegError(f'{source}: {where} must be "none", "auto" or a list of numbers, got {v!r}')
        else:
            entry[k] = _coerce(where, v, options[k], source)
    if entry["weight"] < 0:
        raise CitysegError(f"{source}: loss[{i}].weight must be >= 0")
    return entry


def validate(cfg: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Cross-key checks the per-key types cannot express."""
    d, t, o, s = cfg["data"], cfg["train"], cfg["optim"], cfg["schedule"]
    if len(d["size"]) != 2 or min(d["size"]) <= 0:
        raise CitysegError(f"{source}: data.size must be [H, W] with positive values, got {d['size']}")
    if (len(d["mean"]), len(d["std"])) not in ((0, 0), (3, 3)):
        raise CitysegError(f"{source}: data.mean and data.std must both be [] or both hold 3 values")
    if any(v <= 0 for v in d["std"]):
        raise CitysegError(f"{source}: data.std values must be positive")
    positive = {
        "train.epochs": t["epochs"],
        "train.batch_size": t["batch_size"],
        "train.eval_batch_size": t["eval_batch_size"],
        "train.val_every": t["val_every"],
        "optim.lr": o["lr"],
    }
    for key, v in positive.items():
        if v <= 0:
            raise CitysegError(f"{source}: {key} must be positive, got {v}")
    nonneg = {
        "data.workers": d["workers"],
        "train.grad_clip": t["grad_clip"],
        "train.max_minutes": t["max_minutes"],
        "train.checkpoint_every": t["checkpoint_every"],
        "train.checkpoint_minutes": t["checkpoint_minutes"],
        "train.iters": t["iters"],
        "optim.weight_decay": o["weight_decay"],
        "optim.eps": o["eps"],
        "schedule.warmup_iters": s["warmup_iters"],
        "train.encoder_lr_mult": t["encoder_lr_mult"],
        "train.frozen_stages": t["frozen_stages"],
        "schedule.min_lr": s["min_lr"],
    }
    for key, v in nonneg.items():
        if v < 0:
            raise CitysegError(f"{source}: {key} must be >= 0, got {v}")
    if not 0.0 < t["loss_scale"] <= 1.0:
        raise CitysegError(f"{source}: train.loss_scale must be in (0, 1] (a fraction of the crop), got {t['loss_scale']}")
    lo, hi = cfg["augment"]["scale"]
    if not 0 < lo <= hi:
        raise CitysegError(f"{source}: augment.scale must be [min, max] with 0 < min <= max")
    crop = cfg["augment"]["crop"]
    if crop and (len(crop) != 2 or min(crop) <= 0):
        raise CitysegError(f"{source}: augment.crop must be [] (= data.size) or [H, W] with positive values, got {crop}")
    if not 0.0 <= cfg["augment"]["hflip"] <= 1.0:
        raise CitysegError(f"{source}: augment.hflip is a probability in [0, 1]")
    for key in ("classmix", *APPEARANCE_KEYS):
        if not 0.0 <= cfg["augment"][key] <= 1.0:
            raise CitysegError(f"{source}: augment.{key} is a probability in [0, 1]")
    if cfg["augment"]["classmix"] > 0 and not cfg["augment"]["enabled"]:
        raise CitysegError(f"{source}: augment.classmix needs augment.enabled = true")
    if not 0.0 < s["warmup_factor"] <= 1.0:
        raise CitysegError(f"{source}: schedule.warmup_factor must be in (0, 1]")
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=3e-4"`` -> ("optim.lr", 0.0003); the value is a TOML value, a bare word is a string."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise CitysegError(f"--set {text!r}: expected key=value, e.g. optim.lr=3e-4")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare word: a string (e.g. optim.name=adamw)
    return key, value


def apply_overrides(cfg: dict[str, Any], overrides: list[str] | dict[str, Any], source: str = "--set") -> dict[str, Any]:
    """Apply dotted overrides (``["train.epochs=3", ...]`` or ``{"train.epochs": 3}``) with type checks.

    ``loss=[{...}, ...]`` replaces the loss list; ``loss.0.weight=0.5`` changes one term.
    """
    cfg = copy.deepcopy(cfg)
    items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides]
    for key, value in items:
        if key == "loss":
            cfg["loss"] = check_losses(value, source)
            continue
        if key.startswith("loss."):
            parts = key.split(".")
            if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) >= len(cfg["loss"]):
                raise CitysegError(
                    f"{source}: unknown config key {key!r} (the recipe has {len(cfg['loss'])} loss terms: loss.0 .. loss.{len(cfg['loss']) - 1})"
                )
            losses = copy.deepcopy(cfg["loss"])
            losses[int(parts[1])][parts[2]] = value
            cfg["loss"] = check_losses(losses, source)
            continue
        if key.startswith("model.options."):
            cfg["model"]["options"][key[len("model.options.") :]] = value
            continue
        section, _, name = key.partition(".")
        if isinstance(value, str) and isinstance(DEFAULTS.get(section, {}).get(name), bool):
            value = {"true": True, "false": False}.get(value.lower(), value)
        cfg[section][name] = check_value(key, value, source)
    return validate(cfg, source)


# ---- writing the resolved config back as TOML --------------------------------------------------
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _toml_value(k)


def dump_toml(cfg: dict[str, Any]) -> str:
    """The resolved config as TOML that ``load_recipe`` reads back to the same dict."""
    lines = ["# resolved training config (cityseg train --config this-file reproduces it)"]
    lines.append(f"loss = {_toml_value(cfg['loss'])}")
    for section, values in cfg.items():
        if section == "loss":
            continue
        lines.append(f"\n[{section}]")
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in values.items())
    return "\n".join(lines) + "\n"
