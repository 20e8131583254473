"""Every file cityseg reads, damaged (the corpus of ``fuzzcorpus``), through the library's readers.

A reader of a user's file returns or raises one ``CitysegError`` line naming the file; a reader of a cache
(the prepared-data manifest, the fast-path choice, the model-info counts) never raises: a damaged cache
reads as absent and is rebuilt. Nothing here blocks on a FIFO. The CLI side (exit code 2, one stderr line,
files already written unchanged) is ``test_fuzz_cli.py``.

The default set tries each reader with the fixed corpus, the odd files and a bounded, derandomised
hypothesis sweep; ``-m slow`` widens the sweep. ``FUZZ_TALLY=FILE`` writes the count of files tried per
reader and outcome.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from PIL import Image

from cityseg import io
from cityseg.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from cityseg.data import cache, layout, readers
from cityseg.errors import CitysegError
from cityseg.infer import fastpath
from cityseg.infer.onnx import load_onnx
from cityseg.models import build_model, info_cache, model_from_checkpoint
from cityseg.models.info_cache import cached_model_info
from cityseg.tools.report.run_files import read_run
from cityseg.train.config import load_recipe
from cityseg.train.init import init_from_checkpoint
from conftest import write_run, write_tiny_dataset
from fuzzcorpus import TALLY, damaged, fixed_corpus, odd_files, png, survives

#: the smallest registered network (68 k parameters): a real checkpoint and ONNX export in a blink
MODEL, OPTIONS, SIZE = "residual_inception_unet", {"base": 2}, (16, 32)
DEFAULT_EXAMPLES, SLOW_EXAMPLES = 25, 400


def write_onnx(path: Path) -> Path:
    """A 1x1 convolution to 34 classes with cityseg's metadata: an export as ``cityseg export`` writes one,
    built directly (the exporter takes seconds; the reader is what is under test)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((34, 3, 1, 1)).astype(np.float32), "weight")
    node = helper.make_node("Conv", ["image", "weight"], ["logits"])
    graph = helper.make_graph(
        [node],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, *SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 34, *SIZE])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    meta = {"model_name": MODEL, "model_options": OPTIONS, "label_mode": "labelIds", "num_classes": 34, "input_size": list(SIZE)}
    meta.update({"class_names": [], "interpolation": "area", "mean": None, "std": None, "full_res_mode": "whole"})
    helper.set_model_props(model, {k: json.dumps(v) for k, v in meta.items()})
    onnx.save(model, path)
    return path


def write_checkpoint(path: Path, **override) -> Path:
    torch.manual_seed(0)
    net = build_model(MODEL, num_classes=34, **OPTIONS)
    fields = dict(model=net.state_dict(), model_name=MODEL, model_options=dict(OPTIONS), label_mode="labelIds", num_classes=34, input_size=list(SIZE))
    save_checkpoint(path, Checkpoint(**{**fields, **override}))
    return path


@dataclass
class Reader:
    """One reader: the seed it damages, the name the damaged file takes, and the call that reads it."""

    seed: str
    name: str
    read: Callable[[Path], object]
    cache: bool = False  # a cache never raises: damaged reads as absent


@pytest.fixture(scope="module", autouse=True)
def tally():
    yield
    if os.environ.get("FUZZ_TALLY"):
        rows = {f"{reader} {outcome}": n for (reader, outcome), n in sorted(TALLY.items())}
        Path(os.environ["FUZZ_TALLY"]).write_text(json.dumps(rows, indent=1))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The seeds (valid files of every kind the toolkit reads) and the readers that read them.

    The caches' producers (the fast path's timing trial, the FLOP count) are replaced by stubs that
    return at once: what is under test is reading a damaged cache, which reruns them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fastpath, "trial", lambda *a, **k: (fastpath.Choice(), {"stub": 0.0}))
        mp.setattr(info_cache, "model_info", lambda name, size, n: {"name": name, "params": 1, "gflops": 0.5, "size": list(size), "note": ""})
        yield build_env(tmp_path_factory.mktemp("fuzz seeds"))


def build_env(d: Path) -> tuple[dict[str, Path], dict[str, Reader]]:
    seeds: dict[str, Path] = {}
    seeds["checkpoint"] = write_checkpoint(d / "model.pt")
    seeds["onnx"] = write_onnx(d / "model.onnx")
    seeds["recipe"] = d / "recipe.toml"
    seeds["recipe"].write_text('base = "cpu-fast"\n[model]\nname = "bisenetv2"\n[train]\nepochs = 3\nbatch_size = 4\n[data]\nsize = [64, 128]\n')
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"), ("TIFF", "tif"), ("WEBP", "webp")):
        seeds[f"image {ext}"] = d / f"image.{ext}"
        Image.fromarray(rgb).save(seeds[f"image {ext}"], format=fmt)
    root = write_tiny_dataset(d / "data")
    sample = layout.find_samples(root, "train")[0]
    seeds["label"], seeds["instance"] = sample.label, sample.instance
    seeds["palette label"] = d / "palette.png"
    im = Image.fromarray(io.read_label(sample.label), "L").convert("P")
    im.save(seeds["palette label"])
    run = write_run(d / "run", root, model=MODEL, size=SIZE)
    io.atomic_write_json(run / "summary.json", {"data": {"root": str(root), "frames": {"train": 3}}, "recipe": "cpu-fast", "elapsed_s": 12.5})
    (run / "best.pt").write_bytes(b"read_run checks it is a file; the report reads it with load_checkpoint")
    for name in ("metrics.csv", "config.toml", "summary.json"):
        seeds[name] = run / name
    seeds["manifest"] = cache.prepare(root, "train", size=(12, 20), workers=1).folder / cache.MANIFEST
    net = build_model(MODEL, num_classes=34, **OPTIONS)
    seeds["fast path"] = d / "fast_path.json"
    fastpath.choose(net, (1, 3, *SIZE), torch.device("cpu"), path=seeds["fast path"])
    seeds["model info"] = d / "model_info.json"
    cached_model_info([MODEL], SIZE, 34, cache_file=seeds["model info"])

    def in_run(path):
        for other in ("metrics.csv", "config.toml", "summary.json", "best.pt"):
            if not (path.parent / other).exists() and not (path.parent / other).is_symlink():
                shutil.copy(run / other, path.parent / other)
        return read_run(path.parent)

    cache_name = seeds["manifest"].parent.name

    def manifest(path):
        """The cache looked up in ``path``'s folder, beside copies of the arrays its manifest names."""
        for array in seeds["manifest"].parent.glob("*.npy"):
            if not (path.parent / array.name).exists():
                shutil.copy(array, path.parent / array.name)
        entry = cache.load(root, "train", size=(12, 20), cache_dir=path.parent.parent)
        assert entry is None or entry.folder == path.parent

    def fast(path):
        fastpath.choose(net, (1, 3, *SIZE), torch.device("cpu"), path=path)

    def info(path):
        rows = cached_model_info([MODEL], SIZE, 34, cache_file=path)
        assert isinstance(rows[0]["params"], int) and isinstance(rows[0]["gflops"], float)

    def init_from(path):
        init_from_checkpoint(net, str(path))

    rd = {
        "checkpoint": Reader("checkpoint", "model.pt", lambda p: model_from_checkpoint(p)),
        "checkpoint (init_from)": Reader("checkpoint", "init.pt", init_from),
        "onnx": Reader("onnx", "model.onnx", load_onnx),
        "recipe": Reader("recipe", "recipe.toml", load_recipe),
        "label": Reader("label", "x_gtFine_labelIds.png", lambda p: io.read_label(p, max_value=readers.MAX_LABEL_ID)),
        "palette label": Reader("palette label", "p_gtFine_labelIds.png", lambda p: io.read_label(p, max_value=readers.MAX_LABEL_ID)),
        "instance": Reader("instance", "x_gtFine_instanceIds.png", io.read_instance),
        "prediction": Reader("label", "x_pred.png", lambda p: readers.read_prediction(p, (24, 40), sample.label)),
        "metrics.csv": Reader("metrics.csv", "metrics.csv", in_run),
        "config.toml": Reader("config.toml", "config.toml", in_run),
        "summary.json": Reader("summary.json", "summary.json", in_run),
        "manifest": Reader("manifest", f"{cache_name}/{cache.MANIFEST}", manifest, cache=True),
        "fast path": Reader("fast path", "fast_path.json", fast, cache=True),
        "model info": Reader("model info", "model_info.json", info, cache=True),
    }
    for ext in ("png", "jpg", "bmp", "tif", "webp"):
        rd[f"image {ext}"] = Reader(f"image {ext}", f"image.{ext}", io.read_image)
    return seeds, rd


READERS = [
    "checkpoint",
    "checkpoint (init_from)",
    "onnx",
    "recipe",
    "image png",
    "image jpg",
    "image bmp",
    "image tif",
    "image webp",
    "label",
    "palette label",
    "instance",
    "prediction",
    "metrics.csv",
    "config.toml",
    "summary.json",
    "manifest",
    "fast path",
    "model info",
]


def try_bytes(env, key: str, data: bytes, folder: Path) -> str:
    seeds, rd = env
    reader = rd[key]
    path = folder / reader.name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return survives(key, reader.read, path, accept=True if reader.cache else None)


@pytest.mark.parametrize("key", READERS)
def test_fixed_corpus(env, key, tmp_path):
    """The deterministic corpus: every kind of damage, and what is not a regular file."""
    seeds, rd = env
    reader = rd[key]
    seed = seeds[reader.seed].read_bytes()
    assert survives(key, reader.read, seeds[reader.seed], accept=True) == "read"  # the seed itself is valid
    outcomes = {name: try_bytes(env, key, data, tmp_path / f"c{i}") for i, (name, data) in enumerate(fixed_corpus(seed).items())}
    for what in ("empty", "text", "one line", "random 1k", "nul bytes", "huge header"):
        assert reader.cache or outcomes[what] == "refused", (key, what)
    for what, path in odd_files(tmp_path / "odd", seed, reader.name).items():
        accept = reader.cache or what == "non-UTF-8 name"
        survives(key, reader.read, path, accept=accept)


@pytest.mark.parametrize("key", READERS)
def test_damaged_bytes(env, key, tmp_path_factory):
    """A derandomised hypothesis sweep of truncations, flips, splices and unrelated bytes."""
    seeds, rd = env
    seed = seeds[rd[key].seed].read_bytes()
    folder = tmp_path_factory.mktemp("sweep")
    examples = DEFAULT_EXAMPLES if key not in ("model info",) else 8

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=damaged(seed))
    def sweep(data):
        try_bytes(env, key, data, folder)

    sweep()


@pytest.mark.slow
@pytest.mark.parametrize("key", READERS)
def test_damaged_bytes_wide(env, key, tmp_path_factory):
    seeds, rd = env
    seed = seeds[rd[key].seed].read_bytes()
    folder = tmp_path_factory.mktemp("wide")

    @settings(
        max_examples=SLOW_EXAMPLES if key != "model info" else 40, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(data=damaged(seed))
    def sweep(data):
        try_bytes(env, key, data, folder)

    sweep()


def test_checkpoint_values_of_the_wrong_kind_are_refused(tmp_path):
    """A well-formed file whose model-describing keys hold the wrong kinds: refused on loading, in one line."""
    cases = {
        "model": {"model": [1, 2]},
        "model_name": {"model_name": 7},
        "model_options": {"model_options": ["base", 2]},
        "input_size": {"input_size": ["a", "b"]},
        "mean": {"mean": "0.5"},
        "num_classes": {"num_classes": True},
        "config": {"config": 3},
    }
    for key, override in cases.items():
        path = tmp_path / f"{key}.pt"
        ckpt = Checkpoint(**{**dict(model={}, model_name=MODEL, label_mode="labelIds", num_classes=34), **override})
        torch.save(ckpt.to_dict(), path)
        with pytest.raises(Exception) as exc:
            load_checkpoint(path)
        assert type(exc.value).__name__ == "CitysegError" and key in str(exc.value) and str(path) in str(exc.value), exc.value


def test_pixel_limit_is_pillows_and_refuses_in_one_line(tmp_path):
    """The limit covers 8K frames; a header above it is one error line naming its size, without Pillow's
    bomb warning (between the limit and twice it) or error (above); elsewhere the warning still shows."""
    assert Image.MAX_IMAGE_PIXELS == io.MAX_PIXELS >= 7680 * 4320
    frame_8k = tmp_path / "8k.png"
    frame_8k.write_bytes(png(7680, 4320))
    assert io.probe_image(frame_8k) == (4320, 7680, "RGB")  # the header only: nothing is decoded
    for w, h, needle in (
        (12000, 12000, "more than 134,217,728 pixels"),
        (10000, 10000, "10000x10000 pixels"),
        (8193, 8192, "8193x8192 pixels"),
        (40000, 40000, "refusing"),
    ):
        path = tmp_path / f"{w}x{h}.png"
        path.write_bytes(png(w, h))
        assert survives("pixel limit", io.read_image, path, accept=False) == "refused"
        with pytest.raises(CitysegError, match=needle):
            io.read_image(path)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        Image.open(tmp_path / "10000x10000.png").close()
    assert [w.category for w in shown] == [Image.DecompressionBombWarning]  # not silenced for other callers


def test_resume_from_a_checkpoint_without_a_config_is_one_line(tmp_path, capsys):
    """A model-only checkpoint (no training config) as a run's last.pt: ``--resume`` says so in one line."""
    from cityseg.cli import main

    run = tmp_path / "run"
    write_checkpoint(run / "last.pt")
    rc = main(["train", "--data", str(write_tiny_dataset(tmp_path / "data")), "--out", str(run), "--resume"])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and str(run / "last.pt") in lines[0] and "no training config" in lines[0], lines


def test_cached_rows_of_the_wrong_shape_are_counted_again(env, tmp_path):
    """A model-info cache of this code's fingerprint whose rows are damaged: each is counted again (here by
    the stub) rather than printed; a row of the right shape is kept."""
    key = f"{MODEL}|{SIZE[0]}x{SIZE[1]}|34"
    good = {"name": MODEL, "params": 7, "gflops": 1.5, "size": list(SIZE), "note": ""}
    bad_rows = [None, 3, [1], {}, {**good, "params": "7"}, {**good, "params": True}, {**good, "gflops": "x"}, {**good, "name": "other"}, {**good, "note": 5}]
    path = tmp_path / "model_info.json"
    for row in [*bad_rows, good]:
        path.write_text(json.dumps({"fingerprint": info_cache.code_fingerprint(), "models": {key: row}}))
        got = cached_model_info([MODEL], SIZE, 34, cache_file=path)[0]
        assert (got["params"], got["gflops"]) == ((7, 1.5) if row is good else (1, 0.5)), row
