"""Torch files are loaded with ``weights_only=True`` everywhere: a pickle that would run ``os.system`` is refused by
every reader (checkpoint loading, the Predictor, evaluate, report, ``train.init_from``, resume, encoder
weights), in every container (zip, the legacy pre-zip format, a bare pickle), and the command never runs.
The legacy format with CUDA storages loads on a CPU-only machine through ``map_location``."""

from __future__ import annotations

import ast
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from cityseg.checkpoint import load_checkpoint
from cityseg.cli import main
from cityseg.errors import CitysegError
from cityseg.infer.predictor import Predictor
from cityseg.models import build_model
from cityseg.models.weights import read_state_dict
from cityseg.train.init import init_from_checkpoint
from conftest import write_run, write_tiny_dataset
from test_fuzz import MODEL, OPTIONS, SIZE, write_checkpoint

SRC = Path(__file__).resolve().parent.parent / "src" / "cityseg"


class Payload:
    """Unpickling this runs ``touch MARKER``: the attack a checkpoint from a stranger can carry."""

    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch '{Payload.marker}'",))


def evil_files(folder: Path, marker: Path) -> dict[str, Path]:
    """The payload inside a valid checkpoint (zip and legacy format) and as a bare pickle."""
    Payload.marker = str(marker)
    good = load_checkpoint(write_checkpoint(folder / "good.pt"))
    out = {"zip": folder / "evil_zip.pt", "legacy": folder / "evil_legacy.pt", "pickle": folder / "evil.pkl"}
    torch.save({**good, "payload": Payload()}, out["zip"])
    torch.save({**good, "payload": Payload()}, out["legacy"], _use_new_zipfile_serialization=False)
    out["pickle"].write_bytes(pickle.dumps({**good, "payload": Payload()}))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("security")
    marker = d / "PWNED"
    root = write_tiny_dataset(d / "data")
    return {"dir": d, "marker": marker, "root": root, "evil": evil_files(d, marker)}


def refused(world, call) -> str:
    """``call()`` raises one ``CitysegError`` line (or the CLI exits 2) and the payload never ran."""
    with pytest.raises(CitysegError) as exc:
        call()
    assert not world["marker"].exists(), "the pickle ran its command"
    return str(exc.value)


@pytest.mark.parametrize("kind", ["zip", "legacy", "pickle"])
def test_every_library_reader_refuses_a_pickle_that_runs_code(world, kind):
    path = world["evil"][kind]
    assert "refused to load" in refused(world, lambda: load_checkpoint(path)) or kind == "pickle"
    refused(world, lambda: Predictor.from_checkpoint(path))
    refused(world, lambda: init_from_checkpoint(build_model(MODEL, num_classes=34, **OPTIONS), str(path)))
    refused(world, lambda: read_state_dict(path, "torchvision"))


def cli_refuses(world, capsys, argv, needle) -> None:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in out + err and str(needle) in lines[0], err
    assert not world["marker"].exists(), "the pickle ran its command"


def test_every_command_refuses_a_pickle_that_runs_code(world, capsys, tmp_path):
    evil, root = world["evil"]["zip"], world["root"]
    cli_refuses(world, capsys, ["evaluate", "--data", root, "--checkpoint", evil], evil)
    cli_refuses(world, capsys, ["predict", "--checkpoint", evil, root / "leftImg8bit", "--out", tmp_path / "pred", "--quiet"], evil)
    cli_refuses(world, capsys, ["export", "--checkpoint", evil, "--out", tmp_path / "m.onnx"], evil)
    train = ["train", "--data", root, "--model", MODEL, "--size", f"{SIZE[0]}x{SIZE[1]}", "--quiet", "--set", "train.iters=1"]
    cli_refuses(world, capsys, [*train, "--out", tmp_path / "init", "--set", f"train.init_from='{evil}'"], evil)
    run = tmp_path / "resume"
    run.mkdir()
    shutil.copy(evil, run / "last.pt")
    cli_refuses(world, capsys, [*train, "--out", run, "--resume"], run / "last.pt")  # the recipe comes from last.pt
    cli_refuses(world, capsys, [*train, "--out", run, "--resume", "--config", "cpu-fast"], run / "last.pt")
    report = write_run(tmp_path / "report run", root, model=MODEL, size=SIZE)
    shutil.copy(evil, report / "best.pt")
    cli_refuses(world, capsys, ["report", report, "--data", root], report / "best.pt")


def test_every_torch_load_in_the_sources_is_weights_only():
    """The guarantee above holds for readers not written yet: no ``torch.load`` without ``weights_only=True``."""
    calls = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
                owner = node.func.value
                if isinstance(owner, ast.Name) and owner.id == "torch":
                    safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True for k in node.keywords)
                    calls.append((f"{path.relative_to(SRC)}:{node.lineno}", safe))
    assert calls and all(safe for _, safe in calls), calls


def legacy_cuda_checkpoint(path: Path) -> dict:
    """A checkpoint in the legacy (pre-zip) format whose storages say they live on ``cuda:0``.

    A CPU-only torch cannot create CUDA tensors to save, so the file is written from CPU tensors and
    the storage location in its pickle is rewritten: the legacy format records it as the string
    ``"cpu"`` (protocol 2 ``BINUNICODE``: opcode ``X``, 4-byte length), which becomes ``"cuda:0"``, as
    ``torch.save`` writes it on a GPU. Returns the checkpoint the file holds.
    """
    ckpt = load_checkpoint(write_checkpoint(path.with_suffix(".zip.pt")))
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"
    assert data.count(cpu) == 1 and cuda not in data  # one location entry per storage type; the rewrite is exact
    path.write_bytes(data.replace(cpu, cuda))
    return ckpt


def test_legacy_format_with_cuda_storages_loads_on_the_cpu(tmp_path):
    path = tmp_path / "legacy_cuda.pt"
    ckpt = legacy_cuda_checkpoint(path)
    if not torch.cuda.is_available():  # the location is real: without map_location torch refuses it
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    got = load_checkpoint(path)  # map_location="cpu", weights_only=True
    assert got["model"].keys() == ckpt["model"].keys()
    assert all(v.device.type == "cpu" and torch.equal(v, ckpt["model"][k]) for k, v in got["model"].items())
    assert Predictor.from_checkpoint(path).predict(torch.zeros(3, *SIZE).numpy().transpose(1, 2, 0).astype("uint8")).shape == SIZE
