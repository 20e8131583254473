"""Shared fixtures. Tests never download anything: data is generated (SynthCity) or written here."""

from __future__ import annotations

import builtins
import contextlib
import importlib
import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_configure(config):
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


# ---- SynthCity datasets shared by the whole session (generated once) --------------------------
@pytest.fixture(scope="session")
def synth_small(tmp_path_factory):
    """A small SynthCity dataset at 256x512: 8 train, 4 val, 2 test frames. Treat as read-only."""
    from cityseg.data.synth import generate

    root = tmp_path_factory.mktemp("synth_small")
    generate(root, train=8, val=4, test=2, size=(256, 512), seed=0)
    return root


@pytest.fixture(scope="session")
def synth_full(tmp_path_factory):
    """SynthCity at the official 1024x2048: 2 train, 3 val frames. Treat as read-only."""
    from cityseg.data.synth import generate

    root = tmp_path_factory.mktemp("synth_full")
    generate(root, train=2, val=3, test=0, size=(1024, 2048), seed=1)
    return root


@pytest.fixture
def synth_copy(synth_small, tmp_path):
    """A private, writable copy of ``synth_small`` for tests that modify or break files."""
    import shutil

    dst = tmp_path / "synth"
    shutil.copytree(synth_small, dst)
    return dst


# ---- tiny hand-written datasets (data-layer tests; no dependency on SynthCity) -------------------
def write_tiny_dataset(root, splits=None, size=(24, 40), cities=("aachen", "bremen"), seed=0, test_labels=False, annotation="gtFine"):
    """Write a minimal dataset in the official layout: random RGB images, blocky labelIds (0..33),
    matching 16-bit instanceIds and colour PNGs. ``splits``: name -> frame count. Returns the root."""
    from pathlib import Path

    import numpy as np

    from cityseg import io, labels
    from cityseg.data import layout

    root = Path(root)
    splits = {"train": 3, "val": 2} if splits is None else splits
    rng = np.random.default_rng(seed)
    h, w = size
    for split, n in splits.items():
        for k in range(n):
            stem = f"{cities[k % len(cities)]}_{k:06d}_{19 + k:06d}"
            io.write_png(layout.image_path(root, split, stem), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            if split == "test" and not test_labels:
                continue
            blocks = rng.integers(0, labels.NUM_LABEL_IDS, (max(1, h // 4), max(1, w // 4)), dtype=np.uint8)
            lab = np.kron(blocks, np.ones((4, 4), np.uint8))[:h, :w]
            lab = np.pad(lab, ((0, h - lab.shape[0]), (0, w - lab.shape[1])), mode="edge")
            inst = lab.astype(np.uint16)
            inst[lab == 26] = 26 * 1000 + 1  # one car instance
            io.write_png(layout.annotation_path(root, split, stem, "labelIds", annotation), lab)
            io.write_png(layout.annotation_path(root, split, stem, "instanceIds", annotation), inst)
            io.write_png(layout.annotation_path(root, split, stem, "color", annotation), labels.colorize(lab))
    return root


@pytest.fixture
def tiny_root(tmp_path):
    """A fresh writable tiny dataset: 3 train + 2 val frames of 24x40 in two cities."""
    return write_tiny_dataset(tmp_path / "tiny")


def check_onnx_parity(model, path, size=(128, 256)):
    """Settle ``model``'s BN statistics on real activations (logits of order 1, so atol 1e-4 is tight),
    export it in eval mode with the project's exporter, and compare onnxruntime with PyTorch at batch 1 and
    3 (the batch axis is dynamic). Returns the ONNX graph for further checks."""
    import onnx
    import onnxruntime as ort
    import torch

    from cityseg.infer.onnx import export_model

    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(2, 3, *size))
    model.eval()
    export_model(model, torch.rand(2, 3, *size), path, opset=18, dynamo=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = torch.rand(batch, 3, *size)
        with torch.no_grad():
            ref = model(x).numpy()
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert got.shape == ref.shape and abs(got - ref).max() < 1e-4
    return onnx.load(str(path)).graph


# ---- a training run folder and its report (report tests; no training) -----------------------------
def write_run(folder, root, model="bisenetv2", size=(64, 128)):
    """A run folder as ``cityseg train`` leaves it, without the training: an untrained ``model``'s
    ``best.pt`` (19 trainIds at ``size``), ``config.toml``, ``environment.json`` naming ``root``, and a
    ``metrics.csv`` of four epochs whose first loss is a spike. Returns the folder."""
    from pathlib import Path

    import torch

    from cityseg import io, labels
    from cityseg.checkpoint import Checkpoint, save_checkpoint
    from cityseg.models import build_model
    from cityseg.runtime import environment
    from cityseg.train.config import apply_overrides, dump_toml, load_recipe
    from cityseg.train.report import write_metrics_csv

    folder = Path(folder)
    cfg, _ = load_recipe("cpu-fast")
    cfg = apply_overrides(cfg, {"model.name": model, "data.size": list(size), "train.epochs": 4}, source="test")
    torch.manual_seed(0)
    net = build_model(model, num_classes=19).eval()
    ckpt = Checkpoint(
        model=net.state_dict(),
        model_name=model,
        label_mode="trainIds",
        num_classes=19,
        class_names=list(labels.TRAINID_NAMES),
        input_size=list(size),
        mean=list(cfg["data"]["mean"]),
        std=list(cfg["data"]["std"]),
        epoch=4,
        config=cfg,
    )
    save_checkpoint(folder / "best.pt", ckpt)
    io.atomic_write_text(folder / "config.toml", dump_toml(cfg))
    io.atomic_write_json(folder / "environment.json", environment(root))
    history = [
        {"epoch": e, "train_loss": tl, "val_loss": vl, "pixel_acc": pa, "miou_19": m19, "miou_34": m34, "lr": lr, "seconds": 12.5}
        for e, tl, vl, pa, m19, m34, lr in (
            (1, 9.5, 24.0, 0.41, 0.08, 0.05, 3e-3),
            (2, 2.1, 1.9, 0.62, 0.17, 0.11, 2.3e-3),
            (3, 1.6, 1.5, 0.70, 0.24, 0.16, 1.4e-3),
            (4, 1.4, 1.45, 0.72, 0.23, 0.17, 4e-4),
        )
    ]
    write_metrics_csv(folder / "metrics.csv", history)
    return folder


class DegradedOracle:
    """A stand-in ``Predictor``: each frame's ground truth with a different share of its rows (10%, 30%,
    50%, ...) set to road, the people of the first frame predicted as cars, so the frames score apart, and
    the bottom fifth of the second frame predicted as void ids (0 and 4), so the void column has counts."""

    label_mode = "labelIds"  # it predicts Cityscapes labelIds, as a Predictor of a labelIds checkpoint does

    def __init__(self, root, split="val"):
        import hashlib

        import numpy as np

        from cityseg.data.layout import require_samples
        from cityseg.data.readers import read_frame

        self.preds = {}
        for k, sample in enumerate(require_samples(root, split)):
            image, gt, _ = read_frame(sample)
            pred = gt.copy()
            pred[: int(gt.shape[0] * min(0.9, 0.1 + 0.2 * k))] = 7  # road
            if k == 0:
                pred[gt == 24] = 26  # person -> car
            if k == 1:  # void predictions on evaluated pixels: "unlabeled" and "static"
                h = gt.shape[0]
                pred[h - h // 10 :] = 0
                pred[h - h // 5 : h - h // 10] = 4
            pred[pred >= 34] = 0
            self.preds[hashlib.blake2b(image.tobytes(), digest_size=16).digest()] = pred.astype(np.uint8)

    def predict(self, image):
        import hashlib

        return self.preds[hashlib.blake2b(image.tobytes(), digest_size=16).digest()]


@pytest.fixture(scope="session")
def oracle_report(synth_small, tmp_path_factory):
    """The report of a ``write_run`` folder on ``synth_small`` val, predicted by ``DegradedOracle``:
    (page path, run folder). Treat as read-only."""
    from cityseg.tools.report import write_report

    run = write_run(tmp_path_factory.mktemp("oracle_run"), synth_small)
    page = write_report(run, predictor=DegradedOracle(synth_small), log=lambda *_: None)
    return page, run


# ---- outside oracles -----------------------------------------------------------------------------
def require_oracle(module: str):
    """Import an outside test oracle. A missing oracle fails the suite; it never skips tests silently."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pytest.fail(f"test oracle {module} is missing ({e}); `make test` installs it (pip install --no-deps cityscapesscripts)", pytrace=False)


# ---- unwritable folders ---------------------------------------------------------------------------
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _refuse_writes_inside(folder: Path, monkeypatch) -> None:
    """Make the OS calls that create, replace or remove files refuse with EACCES inside ``folder``."""
    inside_of = os.path.realpath(folder)

    def inside(path) -> bool:
        if isinstance(path, int):
            return False
        real = os.path.realpath(os.fsdecode(path))
        return real == inside_of or real.startswith(inside_of + os.sep)

    def refuse(path):
        raise PermissionError(13, "Permission denied", os.fsdecode(path))

    def guard(real, writes=lambda *a, **k: True):
        def call(path, *a, **k):
            if inside(path) and writes(*a, **k):
                refuse(path)
            return real(path, *a, **k)

        return call

    def rename_guard(real):
        def call(src, dst, *a, **k):
            for path in (src, dst):
                if inside(path):
                    refuse(path)
            return real(src, dst, *a, **k)

        return call

    monkeypatch.setattr(os, "open", guard(os.open, lambda flags, *a, **k: bool(flags & _WRITE_FLAGS)))
    monkeypatch.setattr(builtins, "open", guard(builtins.open, lambda mode="r", *a, **k: any(c in mode for c in "wax+")))
    for name in ("mkdir", "unlink", "remove", "rmdir"):
        monkeypatch.setattr(os, name, guard(getattr(os, name)))
    for name in ("replace", "rename"):
        monkeypatch.setattr(os, name, rename_guard(getattr(os, name)))


def _still_writable(folder: Path) -> bool:
    probe = folder / ".probe"
    try:
        probe.touch()
    except OSError:
        return False
    probe.unlink()
    return True


@pytest.fixture
def make_read_only(monkeypatch):
    """``make_read_only(folder)``: nothing can be created, replaced or removed in ``folder`` until the test
    ends. chmod for a normal user; root ignores modes, so as root the immutable flag (chattr +i). Where
    neither takes effect (no CAP_LINUX_IMMUTABLE, no chattr, a filesystem without modes), the OS calls
    that write refuse with EACCES inside the folder instead, so the test runs everywhere."""
    made: list[Path] = []
    flagged: list[Path] = []

    def make(folder) -> None:
        folder = Path(folder)
        made.append(folder)
        if os.geteuid() != 0:
            folder.chmod(0o555)
        else:
            with contextlib.suppress(OSError):
                if subprocess.run(["chattr", "+i", str(folder)], capture_output=True, timeout=60).returncode == 0:
                    flagged.append(folder)
        if _still_writable(folder):
            _refuse_writes_inside(folder, monkeypatch)

    yield make
    for folder in flagged:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True, timeout=60)
    for folder in made:
        folder.chmod(0o755)
