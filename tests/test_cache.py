"""The memory-mapped cache: contents, staleness, partial builds, SIGKILL, concurrency, read-only roots."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

import references
from cityseg import io
from cityseg.cli import main
from cityseg.data import cache, layout
from cityseg.data.dataset import CityscapesDataset
from conftest import write_tiny_dataset

SIZE = (12, 20)


def expected_arrays(root, split="train", size=SIZE, interpolation="area"):
    """Every frame of the split decoded by PIL and resized by NumPy, in sorted file order (not cityseg's readers)."""
    pairs = [references.frame(image, label, size, interpolation) for image, label in references.split_pairs(root, split)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def assert_matches_sources(entry, root, split="train", size=SIZE, interpolation="area"):
    images, labels = entry.open()
    exp_images, exp_labels = expected_arrays(root, split, size, interpolation)
    np.testing.assert_array_equal(images, exp_images)
    np.testing.assert_array_equal(labels, exp_labels)


def test_prepare_contents_and_manifest(tiny_root):
    entry = cache.prepare(tiny_root, "train", size=SIZE)
    assert entry.folder == tiny_root / ".cityseg_cache" / "gtFine-train-12x20-area"
    assert_matches_sources(entry, tiny_root)
    m = json.loads((entry.folder / "manifest.json").read_text())
    assert m["complete"] is True and m["count"] == 3 and m["shape"] == [12, 20] and m["interpolation"] == "area"
    assert [f[0] for f in m["files"]] == [s.stem for s in layout.find_samples(tiny_root, "train")]
    assert m["files"][0][1] == "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"
    images, labels = entry.open()
    assert images.dtype == np.uint8 and isinstance(images, np.memmap) and images.shape == (3, 12, 20, 3)
    # up to date: reused, not rebuilt
    again = cache.prepare(tiny_root, "train", size=SIZE)
    assert again.images_path == entry.images_path
    # bilinear and full resolution are separate caches with their own contents (at a factor of 4, where
    # bilinear is not the block mean)
    bil = cache.prepare(tiny_root, "train", size=(6, 10), interpolation="bilinear")
    assert bil.folder != entry.folder
    assert_matches_sources(bil, tiny_root, size=(6, 10), interpolation="bilinear")
    full = cache.prepare(tiny_root, "val", size=None)
    assert full.shape == (24, 40)
    assert_matches_sources(full, tiny_root, "val", None)


def test_labels_take_the_nearest_source_pixel(tmp_path):
    """Per-pixel random labels: the tiny dataset's 4x4 blocks would hide a half-pixel shift of nearest."""
    root = write_tiny_dataset(tmp_path / "r", {"train": 2})
    rng = np.random.default_rng(3)
    for s in layout.find_samples(root, "train"):
        io.write_png(s.label, rng.integers(0, 34, (24, 40), dtype=np.uint8))
    for size in (SIZE, (6, 10)):
        assert_matches_sources(cache.prepare(root, "train", size=size, interpolation="bilinear"), root, size=size, interpolation="bilinear")


def _touch_newer(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


@pytest.mark.parametrize("change", ["modify", "modify_image", "add", "remove"])
def test_stale_cache_is_rebuilt(tmp_path, change):
    root = write_tiny_dataset(tmp_path / "r", {"train": 3})
    old = cache.prepare(root, "train", size=SIZE)
    samples = layout.find_samples(root, "train")
    if change == "modify":
        label = io.read_label(samples[1].label)
        io.write_png(samples[1].label, (label + 1) % 34)
        _touch_newer(samples[1].label)
    elif change == "modify_image":
        image = io.read_image(samples[1].image)
        io.write_png(samples[1].image, 255 - image)
        _touch_newer(samples[1].image)
    elif change == "add":
        write_tiny_dataset(tmp_path / "extra", {"train": 1}, cities=("zagreb",), seed=5)
        for kind in ("leftImg8bit", "gtFine"):
            src = tmp_path / "extra" / kind / "train" / "zagreb"
            src.rename(root / kind / "train" / "zagreb")
    else:
        for p in (samples[2].image, samples[2].label, samples[2].instance, samples[2].color):
            p.unlink()
    assert cache.load(root, "train", size=SIZE) is None
    new = cache.prepare(root, "train", size=SIZE)
    assert new.images_path != old.images_path
    assert len(new) == {"modify": 3, "modify_image": 3, "add": 4, "remove": 2}[change]
    assert_matches_sources(new, root)
    # the superseded arrays are gone; only the new generation remains
    assert sorted(p.name for p in new.folder.glob("*.npy")) == sorted([new.images_path.name, new.labels_path.name])


def test_cache_of_another_version_is_rebuilt(tiny_root, monkeypatch):
    old = cache.prepare(tiny_root, "train", size=SIZE)
    monkeypatch.setattr(cache, "CACHE_VERSION", cache.CACHE_VERSION + 1)
    assert cache.load(tiny_root, "train", size=SIZE) is None
    new = cache.prepare(tiny_root, "train", size=SIZE)
    assert new.images_path != old.images_path and new.manifest["version"] == cache.CACHE_VERSION
    assert_matches_sources(new, tiny_root)
    assert cache.load(tiny_root, "train", size=SIZE).images_path == new.images_path


def test_partial_or_damaged_cache_is_rebuilt(tiny_root):
    entry = cache.prepare(tiny_root, "train", size=SIZE)
    manifest = entry.folder / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])  # truncated manifest
    assert cache.load(tiny_root, "train", size=SIZE) is None
    entry = cache.prepare(tiny_root, "train", size=SIZE)
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**m, "complete": False}))  # not committed
    assert cache.load(tiny_root, "train", size=SIZE) is None
    entry = cache.prepare(tiny_root, "train", size=SIZE)
    with open(entry.labels_path, "r+b") as f:  # truncated array file
        f.truncate(entry.labels_path.stat().st_size - 10)
    assert cache.load(tiny_root, "train", size=SIZE) is None
    assert_matches_sources(cache.prepare(tiny_root, "train", size=SIZE), tiny_root)


def test_failed_build_commits_nothing_and_keeps_old_cache(tiny_root, monkeypatch):
    old = cache.prepare(tiny_root, "train", size=SIZE)
    io.write_png(layout.find_samples(tiny_root, "train")[2].label, np.full((24, 40), 99, np.uint8))
    with pytest.raises(Exception, match="label value 99"):
        cache.prepare(tiny_root, "train", size=SIZE)
    names = sorted(p.name for p in old.folder.iterdir())
    assert names == sorted([".lock", "manifest.json", old.images_path.name, old.labels_path.name])  # no temp files
    assert cache.load(tiny_root, "train", size=SIZE) is None  # the old one is stale, never silently used


def _slow_prepare(root, started):
    """Child process: decode slowly, signalling once the temp arrays are being written."""
    from cityseg.data import readers

    real = readers.read_pair

    def slow(*a, **k):
        started.set()
        time.sleep(0.5)
        return real(*a, **k)

    readers.read_pair = slow
    cache.prepare(root, "train", size=SIZE, workers=1)


def test_sigkill_mid_build_then_rebuild(tmp_path):
    root = write_tiny_dataset(tmp_path / "r", {"train": 4})
    ctx = multiprocessing.get_context("fork")
    started = ctx.Event()
    child = ctx.Process(target=_slow_prepare, args=(root, started))
    child.start()
    assert started.wait(60)
    time.sleep(0.2)
    os.kill(child.pid, signal.SIGKILL)
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    folder = root / ".cityseg_cache" / "gtFine-train-12x20-area"
    assert list(folder.glob(".images-*.tmp")), "the kill should have hit a build in progress"
    assert not (folder / "manifest.json").exists()
    assert cache.load(root, "train", size=SIZE) is None
    entry = cache.prepare(root, "train", size=SIZE)  # the lock died with the child; leftovers are removed
    assert_matches_sources(entry, root)
    assert not list(folder.glob(".*.tmp"))


def _racer(root, barrier, out):
    barrier.wait(60)
    entry = cache.prepare(root, "train", size=SIZE, workers=1)
    out.put(entry.images_path.name)


def test_concurrent_prepare(tmp_path):
    root = write_tiny_dataset(tmp_path / "r", {"train": 6})
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(root, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    names = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert names[0] == names[1]  # the second waited on the lock and reused the first one's build
    entry = cache.load(root, "train", size=SIZE)
    assert entry is not None and entry.images_path.name == names[0]
    assert_matches_sources(entry, root)
    assert len(list(entry.folder.glob("*.npy"))) == 2


def test_parallel_decoding_matches_serial(tmp_path, monkeypatch):
    root = write_tiny_dataset(tmp_path / "r", {"train": 5})
    monkeypatch.setattr(cache, "PARALLEL_MIN_FILES", 1)
    monkeypatch.setattr(cache, "CHUNK", 2)
    entry = cache.prepare(root, "train", size=SIZE, workers=2, cache_dir=tmp_path / "c")
    assert entry.folder.parent == tmp_path / "c"
    assert_matches_sources(entry, root)


def test_read_only_root_falls_back_to_user_cache(tiny_root, tmp_path, monkeypatch, make_read_only):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    make_read_only(tiny_root)
    ds = CityscapesDataset(tiny_root, "train", size=SIZE)
    assert tmp_path / "xdg" in ds._entry.folder.parents
    assert not (tiny_root / ".cityseg_cache").exists()
    assert len(ds) == 3 and ds[2][0].shape == (3, 12, 20)


def test_valid_cache_in_read_only_dir_is_used(tiny_root, tmp_path, make_read_only):
    entry = cache.prepare(tiny_root, "train", size=SIZE, cache_dir=tmp_path / "c")
    make_read_only(entry.folder)
    again = cache.prepare(tiny_root, "train", size=SIZE, cache_dir=tmp_path / "c")
    assert again.images_path == entry.images_path


def test_prepare_cli(tiny_root, capsys):
    assert main(["prepare", "--data", str(tiny_root), "--size", "12x20"]) == 0
    out = capsys.readouterr().out
    assert "train: 3 frames at 12x20 (area)" in out and "val: 2 frames" in out
    assert cache.load(tiny_root, "val", size=SIZE) is not None
    assert main(["prepare", "--data", str(tiny_root), "--size", "full", "--split", "val", "--interpolation", "bilinear"]) == 0
    assert "val: 2 frames at 24x40 (bilinear)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:  # argparse's own error: one line, exit 2
        main(["prepare", "--data", str(tiny_root), "--size", "12by20"])
    assert exc.value.code == 2 and "invalid size '12by20'" in capsys.readouterr().err


def test_full_disk_is_one_line_and_keeps_old_cache(tiny_root, monkeypatch):
    import errno

    from cityseg.errors import CitysegError

    old = cache.prepare(tiny_root, "train", size=SIZE)
    real = np.lib.format.open_memmap

    def full_disk(path, *a, **k):
        if "labels-" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(np.lib.format, "open_memmap", full_disk)
    with pytest.raises(CitysegError, match="No space left on device") as exc:
        cache.prepare(tiny_root, "train", size=SIZE, force=True)
    assert str(old.folder) in str(exc.value) and "\n" not in str(exc.value)
    assert sorted(p.name for p in old.folder.iterdir()) == sorted([".lock", "manifest.json", old.images_path.name, old.labels_path.name])
    assert cache.load(tiny_root, "train", size=SIZE).images_path == old.images_path
