"""Shared fixtures. Tests never download anything: data is generated (SynthCity) or written here."""

from __future__ import annotations

import os

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
