"""What a training run folder holds, read and checked: ``config.toml``, ``metrics.csv``, the checkpoint, and
``environment.json`` / ``summary.json`` when the run wrote them. A missing or unreadable required file is one
``CitysegError`` line naming it, so the report is written whole or not at all."""

from __future__ import annotations

import csv
import json
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cityseg.errors import CitysegError
from cityseg.io import reading
from cityseg.train.report import CSV_COLUMNS

METRICS = "metrics.csv"
CONFIG = "config.toml"
ENVIRONMENT = "environment.json"
SUMMARY = "summary.json"
#: checkpoints a report scores, in order of preference: the best validated weights, else the latest
CHECKPOINTS = ("best.pt", "last.pt")
#: the kinds of the values the report reads from each file, by dotted key ("data.frames": the table
#: ``frames`` in the table ``data``); a value of another kind is an error naming the file and the key
CONFIG_KINDS = {"train": dict, "data": dict, "data.label_mode": str, "data.train_split": str}
SUMMARY_KINDS = {"data": dict, "data.root": str, "data.frames": dict, "recipe": str, "images_seen": int, "elapsed_s": (int, float)}
ENVIRONMENT_KINDS = {"gpus": list, "command": str, "data_root": str, "cpu": str, "cpu_count": int, "packages": dict}


@dataclass
class RunFiles:
    """A run folder's contents; ``environment`` and ``summary`` are None when the run did not write them."""

    folder: Path
    config_text: str
    config: dict[str, Any]
    history: list[dict[str, float | None]]
    checkpoint: Path
    environment: dict[str, Any] | None
    summary: dict[str, Any] | None


def read_run(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> RunFiles:
    """Read ``run_dir``; ``checkpoint`` overrides the one found there (``best.pt``, else ``last.pt``)."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise CitysegError(f"{folder}: run folder not found")
    if checkpoint is None:
        found = [folder / name for name in CHECKPOINTS if (folder / name).is_file()]
        if not found:
            raise CitysegError(f"{folder}: no checkpoint ({' or '.join(CHECKPOINTS)}) in the run folder")
        checkpoint = found[0]
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CitysegError(f"{checkpoint}: checkpoint not found")
    config_text = _read_text(folder / CONFIG, "the run's resolved config")
    with reading(folder / CONFIG, "the run's resolved config"):
        config = tomllib.loads(config_text)
    _check_kinds(folder / CONFIG, config, CONFIG_KINDS)
    return RunFiles(
        folder=folder,
        config_text=config_text,
        config=config,
        history=read_history(folder / METRICS),
        checkpoint=checkpoint,
        environment=_read_json(folder / ENVIRONMENT, ENVIRONMENT_KINDS),
        summary=_read_json(folder / SUMMARY, SUMMARY_KINDS),
    )


def read_history(path: Path) -> list[dict[str, float | None]]:
    """The rows of ``metrics.csv`` as numbers (empty or NaN cells as None), one dict per epoch."""
    what = "the per-epoch metrics the curves are drawn from"
    text = _read_text(path, what)
    with reading(path, what):
        reader = csv.DictReader(text.splitlines())
        header = set(reader.fieldnames or ())
        rows = list(reader)
    missing = [c for c in ("epoch", "train_loss") if c not in header]
    if missing:
        raise CitysegError(f"{path}: not a cityseg metrics file (no {', '.join(missing)} column; expected {','.join(CSV_COLUMNS)})")
    if not rows:
        raise CitysegError(f"{path}: no epoch recorded yet (the run has not finished its first epoch)")
    history = []
    for line, row in enumerate(rows, start=2):
        try:
            history.append({k: _number(v) for k, v in row.items() if k})
        except ValueError:
            raise CitysegError(f"{path}: line {line} holds a value that is not a number") from None
    return history


def best_epoch(history: list[dict[str, float | None]], key: str) -> dict[str, float | None] | None:
    """The row with the highest ``key`` (the first of equals, as training keeps ``best.pt``), or None."""
    scored = [r for r in history if r.get(key) is not None]
    return max(scored, key=lambda r: r[key]) if scored else None


def _number(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    value = float(text)
    return None if math.isnan(value) else value


def _read_text(path: Path, what: str) -> str:
    if not path.exists() and not path.is_symlink():
        raise CitysegError(f"{path}: missing ({what}); is this a run folder written by `cityseg train`?")
    with reading(path, what):
        text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise CitysegError(f"{path}: empty file ({what})")
    return text


def _read_json(path: Path, kinds: dict[str, type | tuple[type, ...]]) -> dict[str, Any] | None:
    """An optional JSON file: None when absent; an unreadable one is an error rather than a silent gap."""
    if not path.exists() and not path.is_symlink():
        return None
    with reading(path, "JSON"):
        data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise CitysegError(f"{path}: expected a JSON object")
    _check_kinds(path, data, kinds)
    return data


def _check_kinds(path: Path, data: dict[str, Any], kinds: dict[str, type | tuple[type, ...]]) -> None:
    """Each dotted key of ``kinds`` present in ``data`` (inside tables that are present) has its kind."""
    for key, kind in kinds.items():
        *tables, name = key.split(".")
        where = data
        for table in tables:
            where = where.get(table) if isinstance(where, dict) else None
        if not isinstance(where, dict) or name not in where:
            continue
        value = where[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise CitysegError(f"{path}: {key} holds {type(value).__name__} {str(value)[:40]!r}, not the kind a cityseg run writes")
