"""Atomic writes give the final file the mode a plain ``open()`` gives it under the user's umask."""

from __future__ import annotations

import os
import stat

import pytest

from cityseg import io


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_file_mode_follows_umask(mask, umask, tmp_path):
    umask(mask)
    assert io.current_umask() == mask
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # the oracle: what open() gives under this umask
    writers = {
        "text": lambda p: io.atomic_write_text(p, "x"),
        "json": lambda p: io.atomic_write_json(p, {"a": 1}),
        "bytes": lambda p: io.atomic_write_bytes(p, b"x"),
        "png": lambda p: io.write_png(p, [[0, 1], [2, 3]]),
    }
    expected = {0o022: 0o644, 0o077: 0o600, 0o002: 0o664}[mask]
    assert stat.S_IMODE(plain.stat().st_mode) == expected
    for name, write in writers.items():
        target = tmp_path / f"{name}.out"
        write(target)
        assert stat.S_IMODE(target.stat().st_mode) == expected, name
        write(target)  # replacing an existing file gives the same mode
        assert stat.S_IMODE(target.stat().st_mode) == expected, name
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_umask_is_read_without_changing_it(umask):
    umask(0o027)
    assert io.current_umask() == 0o027
    assert io.current_umask() == 0o027
    now = os.umask(0o022)
    assert now == 0o027
