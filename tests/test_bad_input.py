"""Bad input to the data layer: one CitysegError line naming the file; the CLI exits 2 without a traceback."""

from __future__ import annotations

import functools
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cityseg import io
from cityseg.cli import main
from cityseg.data import layout
from cityseg.data.cache import prepare
from cityseg.data.check import check_dataset
from cityseg.data.dataset import CityscapesDataset
from cityseg.data.readers import read_frame
from cityseg.errors import CitysegError
from conftest import write_tiny_dataset

STEM = "aachen_000000_000019"  # first train frame of write_tiny_dataset


def cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def assert_cli_error(capsys, root, needle, command="check"):
    """`cityseg check|prepare --data ROOT` exits 2 and prints an error line containing ``needle``."""
    argv = [command, "--data", str(root)]
    if command == "prepare":
        argv += ["--size", "12x20", "--split", "train"]
    rc, out, err = cli(capsys, *argv)
    assert rc == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and all(line.startswith(f"cityseg {command}: error: ") for line in lines), err
    assert any(needle in line for line in lines), err


def expect_error(root, needle, match=None):
    """Dataset construction (which decodes everything into the cache) and ``check_dataset`` both refuse."""
    for fn in (lambda: CityscapesDataset(root, "train", size=(12, 20)), lambda: check_dataset(root, ["train"])):
        with pytest.raises(CitysegError) as exc:
            fn()
        msg = str(exc.value)
        assert "\n" not in msg and needle in msg, msg
        if match:
            assert match in msg, msg
    assert not list(Path(root).glob(".cityseg_cache/*/manifest.json")), "a bad dataset must not leave a cache"


def img(root, stem=STEM, split="train"):
    return layout.image_path(root, split, stem)


def lab(root, stem=STEM, split="train"):
    return layout.annotation_path(root, split, stem, "labelIds")


# ---- roots and splits -------------------------------------------------------------------------------
def test_wrong_root(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    with pytest.raises(CitysegError, match="dataset root not found"):
        CityscapesDataset(missing)
    assert_cli_error(capsys, missing, str(missing))
    assert_cli_error(capsys, missing, str(missing), command="prepare")
    (tmp_path / "notcs").mkdir()
    with pytest.raises(CitysegError, match="no leftImg8bit"):
        check_dataset(tmp_path / "notcs")


def test_env_root(tiny_root, monkeypatch):
    monkeypatch.setenv("CITYSCAPES_DATASET", str(tiny_root))
    assert layout.resolve_root(None) == tiny_root
    assert len(CityscapesDataset(split="val", size=(12, 20), cache=False)) == 2


def test_missing_split(tiny_root, capsys):
    with pytest.raises(CitysegError, match="split 'test' is missing"):
        CityscapesDataset(tiny_root, "test")
    rc, _, err = cli(capsys, "check", "--data", str(tiny_root), "--split", "test")
    assert rc == 2 and "split 'test' is missing" in err
    with pytest.raises(CitysegError, match="unknown split"):
        CityscapesDataset(tiny_root, "training")


def test_empty_split_folder(tmp_path, capsys):
    root = write_tiny_dataset(tmp_path / "r", {"train": 2})
    (root / "leftImg8bit" / "val").mkdir()
    (root / "gtFine" / "val").mkdir()
    with pytest.raises(CitysegError, match="split 'val' is empty"):
        CityscapesDataset(root, "val")
    with pytest.raises(CitysegError, match="split 'val' is empty"):
        prepare(root, "val", size=(12, 20))
    rc, out, err = cli(capsys, "check", "--data", str(root))
    assert rc == 2 and "split 'val' is empty" in err and "train:" in out  # the good split is still reported


# ---- pairing ---------------------------------------------------------------------------------------
def test_image_without_label(tiny_root, capsys):
    lab(tiny_root).unlink()
    expect_error(tiny_root, str(img(tiny_root)), "has no annotation")
    assert_cli_error(capsys, tiny_root, str(img(tiny_root)))


def test_label_without_image(tiny_root, capsys):
    img(tiny_root).unlink()
    expect_error(tiny_root, str(lab(tiny_root)), "has no image")
    assert_cli_error(capsys, tiny_root, str(lab(tiny_root)))


def test_image_name_not_following_pattern(tiny_root):
    bad = img(tiny_root).with_name("aachen_frame1_leftImg8bit.png")
    img(tiny_root).rename(bad)
    with pytest.raises(CitysegError, match="does not follow"):
        CityscapesDataset(tiny_root)


# ---- broken files ----------------------------------------------------------------------------------
def test_corrupt_png(tiny_root, capsys):
    img(tiny_root).write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    expect_error(tiny_root, str(img(tiny_root)), "cannot read image")
    assert_cli_error(capsys, tiny_root, str(img(tiny_root)))


def test_corrupt_png_data_with_valid_header(tiny_root):
    data = bytearray(img(tiny_root).read_bytes())
    idat = data.index(b"IDAT")
    data[idat + 20 : idat + 60] = bytes(40)  # zero part of the compressed stream: CRC and zlib break
    img(tiny_root).write_bytes(bytes(data))
    expect_error(tiny_root, str(img(tiny_root)))


def test_truncated_png(tiny_root, capsys):
    data = lab(tiny_root).read_bytes()
    lab(tiny_root).write_bytes(data[: len(data) // 2])
    expect_error(tiny_root, str(lab(tiny_root)), "truncated")
    assert_cli_error(capsys, tiny_root, str(lab(tiny_root)), command="prepare")


def test_zero_byte_file(tiny_root, capsys):
    img(tiny_root).write_bytes(b"")
    expect_error(tiny_root, str(img(tiny_root)), "empty file")
    assert_cli_error(capsys, tiny_root, str(img(tiny_root)))


def test_label_values_outside_table(tiny_root, capsys):
    label = io.read_label(lab(tiny_root))
    label[3, 5] = 40
    io.write_png(lab(tiny_root), label)
    expect_error(tiny_root, str(lab(tiny_root)), "label value 40 outside the label table (0..33)")
    assert_cli_error(capsys, tiny_root, "label value 40")


def test_label_size_differs_from_image(tiny_root, capsys):
    io.write_png(lab(tiny_root), np.zeros((24, 41), np.uint8))
    expect_error(tiny_root, str(lab(tiny_root)), "label size 41x24 differs from its image 40x24")
    assert_cli_error(capsys, tiny_root, "differs from its image")


@pytest.mark.parametrize(
    "array, what",
    [(np.zeros((24, 40), np.uint8), "grayscale"), (np.full((24, 40), 1000, np.uint16), "16-bit"), (np.zeros((24, 40, 3), np.uint16), "16-bit RGB")],
)
def test_wrong_image_format(tiny_root, capsys, array, what):
    io.write_png(img(tiny_root), array)
    expect_error(tiny_root, str(img(tiny_root)), f"expected an 8-bit RGB image, got {what}")
    assert_cli_error(capsys, tiny_root, what)


def test_rgba_image(tiny_root, capsys):
    from PIL import Image

    Image.fromarray(np.zeros((24, 40, 4), np.uint8), "RGBA").save(img(tiny_root))
    expect_error(tiny_root, str(img(tiny_root)), "RGBA")
    assert_cli_error(capsys, tiny_root, "RGBA")


def test_rgb_label_rejected(tiny_root):
    io.write_png(lab(tiny_root), np.zeros((24, 40, 3), np.uint8))
    expect_error(tiny_root, str(lab(tiny_root)), "single-channel")


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_huge_header_rejected_before_decoding(tiny_root, capsys, monkeypatch):
    import cv2

    header = _png_header_only(40000, 40000)
    img(tiny_root).write_bytes(header)
    real_decode = cv2.imdecode

    def no_decode(buf, flags):  # the decoder must never see the huge file: it would allocate 4.8 GB
        assert bytes(buf[:33]) != header[:33], "cv2.imdecode called on a 40000x40000 header"
        return real_decode(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", no_decode)
    with pytest.raises(CitysegError, match="refusing to decode") as exc:
        io.read_image(img(tiny_root))
    assert str(img(tiny_root)) in str(exc.value)
    expect_error(tiny_root, str(img(tiny_root)), "refusing to decode")
    # between the PIL bomb limit and ours: our own header check
    img(tiny_root).write_bytes(_png_header_only(9000, 9000))
    with pytest.raises(CitysegError, match="9000x9000 pixels"):
        io.read_image(img(tiny_root))
    assert_cli_error(capsys, tiny_root, "refusing to decode")


# ---- file system oddities ------------------------------------------------------------------------------
def test_symlink_loops(tiny_root, capsys):
    city = img(tiny_root).parent
    (city / "loop").symlink_to(city, target_is_directory=True)  # links to itself and to an ancestor: each real folder walked once
    (tiny_root / "gtFine" / "train" / "aachen" / "up").symlink_to(tiny_root / "gtFine", target_is_directory=True)
    ds = CityscapesDataset(tiny_root, "train", size=(12, 20))
    assert len(ds) == 3
    rc, out, _ = cli(capsys, "check", "--data", str(tiny_root))
    assert rc == 0 and "3 pairs" in out
    # a file that is a symlink loop is a bad file, named in the error
    a = city / "aachen_000009_000009_leftImg8bit.png"
    b = city / "b.png"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(CitysegError) as exc:
        CityscapesDataset(tiny_root, "train", size=(12, 20))
    assert str(a) in str(exc.value)
    assert_cli_error(capsys, tiny_root, str(a))


def test_symlinked_city_folder_is_followed(tmp_path):
    root = write_tiny_dataset(tmp_path / "r", {"train": 2}, cities=("aachen",))
    other = write_tiny_dataset(tmp_path / "other", {"train": 1}, cities=("bonn",))
    for top in ("leftImg8bit", "gtFine"):
        (root / top / "train" / "bonn").symlink_to(other / top / "train" / "bonn", target_is_directory=True)
    assert [s.city for s in CityscapesDataset(root, "train", cache=False).samples] == ["aachen", "aachen", "bonn"]


@pytest.mark.parametrize("cities", [("münster", "bad homburg"), ("zürich", "москва")])
def test_non_ascii_and_space_names_work(tmp_path, capsys, cities):
    root = write_tiny_dataset(tmp_path / "data set ü", {"train": 2, "val": 2}, cities=cities)
    ds = CityscapesDataset(root, "train", size=(12, 20))
    assert {s.city for s in ds.samples} == set(cities)
    x, y = ds[1]
    _, label, _ = read_frame(ds.samples[1])
    assert label.shape == (24, 40) and x.shape == (3, 12, 20) and y.shape == (12, 20)
    rc, out, _ = cli(capsys, "check", "--data", str(root))
    assert rc == 0 and "2 pairs" in out
    rc, out, _ = cli(capsys, "prepare", "--data", str(root), "--size", "12x20")
    assert rc == 0, out


def test_read_only_cache_dir(tiny_root, tmp_path, capsys, make_read_only):
    ro = tmp_path / "ro_cache"
    ro.mkdir()
    make_read_only(ro)
    with pytest.raises(CitysegError, match="cache directory is not writable") as exc:
        prepare(tiny_root, "train", size=(12, 20), cache_dir=ro)
    assert str(ro) in str(exc.value)
    rc, _, err = cli(capsys, "prepare", "--data", str(tiny_root), "--size", "12x20", "--cache-dir", str(ro))
    assert rc == 2 and str(ro) in err and len(err.strip().splitlines()) == 1


# ---- property tests: the readers never raise anything but CitysegError ------------------------------------
READERS = (io.read_image, lambda p: io.read_label(p, max_value=33), io.read_instance, io.probe_image)


@functools.lru_cache(maxsize=1)
def _valid_pngs() -> list[bytes]:
    """A valid RGB image, labelIds and 16-bit instanceIds PNG, as bytes."""
    import cv2

    rng = np.random.default_rng(0)
    arrays = (rng.integers(0, 256, (6, 7, 3), dtype=np.uint8), rng.integers(0, 34, (6, 7), dtype=np.uint8), rng.integers(0, 34000, (6, 7), dtype=np.uint16))
    return [cv2.imencode(".png", a)[1].tobytes() for a in arrays]


def _read_all(path: Path) -> None:
    for reader in READERS:
        try:
            reader(path)
        except CitysegError as e:
            assert "\n" not in str(e) and str(path) in str(e)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), png_prefix=st.booleans())
def test_readers_on_random_bytes(tmp_path, data, png_prefix):
    path = tmp_path / "random.png"
    path.write_bytes((b"\x89PNG\r\n\x1a\n" if png_prefix else b"") + data)
    _read_all(path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    which=st.integers(0, 2),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=6),
    cut=st.none() | st.integers(0, 10**6),
)
def test_readers_on_damaged_png(tmp_path, which, flips, cut):
    data = bytearray(_valid_pngs()[which])
    for pos, xor in flips:
        data[pos % len(data)] ^= xor
    if cut is not None:
        data = data[: cut % len(data)]
    path = tmp_path / "damaged.png"
    path.write_bytes(bytes(data))
    _read_all(path)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"label_mode": "trainId"}, "unknown label mode 'trainId'"),
        ({"interpolation": "cubic"}, "unknown interpolation 'cubic'"),
        ({"annotation": "gtMedium"}, "unknown annotation 'gtMedium'"),
        ({"size": (0, 256)}, "height and width must be positive"),
        ({"mean": (0.5, 0.5)}, "mean must have 1 or 3 values"),
    ],
)
def test_bad_dataset_options(tiny_root, kwargs, needle):
    with pytest.raises(CitysegError, match=re.escape(needle)):
        CityscapesDataset(tiny_root, "train", **kwargs)
