"""Bad input through the real CLI: exit code 2, exactly one stderr line naming the file and the problem, no
traceback, and nothing half-written (folders that existed are byte-for-byte unchanged, no temp files).

Coverage map: where each bad-input case is tested, by what the input is.

Data
  wrong root ................ test_bad_input::test_wrong_root (check, prepare); here: train, evaluate
  missing split ............. test_bad_input::test_missing_split (check); here: evaluate --split
  image without label / reverse  test_bad_input::test_image_without_label, test_label_without_image; here: train
  corrupt / truncated PNG ... test_bad_input::test_corrupt_png*, test_truncated_png, test_properties (readers);
                              here: ground truth under evaluate, image under predict
  label values outside table  test_bad_input::test_label_values_outside_table; here: evaluate ground truth
  label size != image size .. test_bad_input::test_label_size_differs_from_image; here: evaluate --checkpoint
  grayscale / 16-bit / RGBA . test_bad_input::test_wrong_image_format, test_rgba_image;
                              test_predict::test_bad_images_fail_before_anything_is_written (gray, rgba, 16bit);
                              here: predict on palette, grayscale+alpha, 1-bit images
Training
  unknown model / config key / label mode  test_train::test_cli_bad_input_is_one_line_exit_2,
                              test_train_config::test_overrides_are_type_checked
  output directory is a file  test_train::test_cli_out_is_a_file_and_empty_split
  resume, other model / label mode  test_train::test_resume_with_other_model_or_label_mode_is_refused (library);
                              here: through the CLI, run folder unchanged
  empty split ............... test_bad_input::test_empty_split_folder (dataset, check); here: train
  unwritable / full run dir . test_faults::test_unwritable_run_dir_*, test_full_disk_during_checkpoint_write_*
Evaluation, prediction, export
  checkpoint of another model / label mode than claimed  test_predict::test_bad_checkpoints_and_inputs
                              (--expect-model / --expect-label-mode); here: weights that do not fit the claimed
                              model, label mode that does not fit num_classes (evaluate, predict, export)
  corrupt / truncated checkpoint  test_checkpoint::test_truncated_or_empty_checkpoint, test_predict (truncated),
                              test_evaluate::test_cli_bad_checkpoint_is_one_line; here: evaluate, export, train --resume
  malicious pickle .......... test_checkpoint::test_pickle_payload_that_would_run_code_is_refused
  image with unexpected channels or size  test_predict (gray, rgba, 16bit); here: more modes, zero-byte,
                              truncated, 40000x40000 header
  prediction PNG: wrong size / several channels / not labelIds / missing / duplicate
                              test_evaluate::test_cli_bad_predictions_exit_2_with_one_line; here: 16-bit values,
                              zero-byte, corrupt and huge-header predictions, empty / missing prediction folder
Anything
  empty folders ............. here: data root, predict input folder, --pred-dir, run folder for --resume
  zero-byte files ........... test_bad_input::test_zero_byte_file (image, check); test_checkpoint (checkpoint);
                              here: label, image under predict, checkpoint under evaluate/predict/export/train,
                              config, prediction
  symlink loops ............. test_bad_input::test_symlink_loops (dataset walk); here: checkpoint, predict input
  40000x40000 header ........ test_bad_input::test_huge_header_rejected_before_decoding (readers, check);
                              test_properties::test_huge_headers_are_refused_without_decoding; here: predict, evaluate
  spaces / non-ASCII names .. test_bad_input::test_non_ascii_and_space_names_work (check, prepare);
                              test_properties (readers); here: train, predict, evaluate, export must WORK
  config with wrong types ... test_train_config::test_recipe_file_errors_name_the_file (library); here: train CLI
  export to unwritable path . here
  faults (kill, Ctrl-C, full disk, concurrent prepare, NaN) ... test_faults, test_cache
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cityseg import io, labels, models
from cityseg.checkpoint import load_checkpoint, save_checkpoint
from cityseg.cli import main
from cityseg.data import layout
from cityseg.models.base import SegmentationModel
from conftest import write_tiny_dataset

MODEL = "residual_unet_same"
SIZE = (16, 32)


# ---- helpers --------------------------------------------------------------------------------------------------------
def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) -> its bytes; {} if the folder does not exist."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temp_files(folder: Path) -> list[str]:
    return [str(p) for p in Path(folder).rglob(".*") if p.name.endswith(".tmp") or ".tmp" in p.name]


def cli_error(capsys, argv, *needles) -> str:
    """Run ``cityseg ARGV`` in-process: exit 2, one stderr line ``cityseg CMD: error: ...`` with every needle."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    assert rc == 2, (rc, out[-500:], err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"cityseg {argv[0]}: error: "), lines[0]
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def cli_ok(capsys, argv) -> str:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 0 and "Traceback" not in out + err, err
    return out


def make_checkpoint(path, label_mode="labelIds", override=None):
    from cityseg.models import build_model

    torch.manual_seed(0)
    n = labels.num_classes(label_mode)
    model = build_model(MODEL, num_classes=n).eval()
    ckpt = {
        "model": model.state_dict(),
        "model_name": MODEL,
        "model_options": {},
        "label_mode": label_mode,
        "num_classes": n,
        "class_names": list(labels.class_names(label_mode)),
        "input_size": list(SIZE),
        "interpolation": "area",
        "mean": None,
        "std": None,
        "epoch": 1,
    }
    ckpt.update(override or {})
    save_checkpoint(path, ckpt)
    return Path(path)


class TinyNet(SegmentationModel):
    """Two convs: enough for a real `cityseg train` run folder in about a second."""

    name = "tiny"
    size_multiple = 4
    min_size = 8

    def __init__(self, num_classes: int = 34, width: int = 4):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Conv2d(width, num_classes, 1)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.fixture(scope="module", autouse=True)
def tiny_model():
    models.MODELS["tiny"] = models.Entry(partial(TinyNet), "tiny test net")
    models.MODELS["tiny_other"] = models.Entry(partial(TinyNet, width=6), "tiny test net, other width")
    yield
    models.MODELS.pop("tiny", None)
    models.MODELS.pop("tiny_other", None)


# ---- fixtures ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Read-only by convention: 3 train + 2 val frames of 24x40 under a path with a space and non-ASCII."""
    return write_tiny_dataset(tmp_path_factory.mktemp("bad cli") / "data sät")


@pytest.fixture
def copy(root, tmp_path):
    return Path(shutil.copytree(root, tmp_path / "data copy"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model ü.pt")


@pytest.fixture(scope="module")
def tiny_ckpt(run_dir):
    """The tiny net's checkpoint from a real training run (fast to export)."""
    return run_dir / "last.pt"


@pytest.fixture(scope="module")
def preds(root, tmp_path_factory):
    """Ground-truth copies as predictions (named ``<stem>_pred.png``) for the val split."""
    d = tmp_path_factory.mktemp("preds") / "preds ü"
    for s in layout.find_samples(root, "val"):
        io.write_png(d / f"{s.stem}_pred.png", io.read_label(s.label))
    return d


@pytest.fixture(scope="module")
def run_dir(root, tmp_path_factory):
    """A finished 1-epoch `cityseg train` run of the tiny net (in a folder whose name has a space and ü)."""
    out = tmp_path_factory.mktemp("runs") / "run ü 1"
    rc = main(train_args(root, out))
    assert rc == 0
    return out


def train_args(root, out, *extra):
    return [
        "train",
        "--data",
        str(root),
        "--out",
        str(out),
        "--model",
        "tiny",
        "--size",
        "16x32",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--quiet",
        "--set",
        "train.fast=false",
        "--set",
        "train.eval_batch_size=2",
        *extra,
    ]


def val_image(root) -> Path:
    return layout.find_samples(root, "val")[0].image


# ---- names with spaces and non-ASCII characters must work -------------------------------------------------------------
def test_non_ascii_and_space_names_work_end_to_end(root, run_dir, ckpt, preds, tmp_path, capsys):
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1  # training wrote into "run ü 1"
    src = tmp_path / "in put ü"
    src.mkdir()
    shutil.copy(val_image(root), src / "my image ü.png")
    shutil.copy(val_image(root), src / "москва фото.png")
    out = tmp_path / "out ü"
    cli_ok(capsys, ["predict", "--checkpoint", ckpt, src, "--out", out, "--format", "labelIds,color", "--quiet"])
    assert sorted(p.name for p in out.iterdir()) == ["my image ü_labelIds.png", "москва фото_labelIds.png"]
    assert sorted(p.name for p in (tmp_path / "out ü_vis").iterdir()) == ["my image ü_color.png", "москва фото_color.png"]
    assert io.read_label(out / "my image ü_labelIds.png", max_value=33).shape == (24, 40)
    # a single file given by name, and the run's own checkpoint
    cli_ok(capsys, ["predict", "--checkpoint", run_dir / "best.pt", src / "my image ü.png", "--out", tmp_path / "o2", "--quiet"])
    assert (tmp_path / "o2" / "my image ü_labelIds.png").is_file()
    # evaluate a prediction folder and a checkpoint from paths with spaces / non-ASCII
    js = tmp_path / "scores ü" / "s.json"
    cli_ok(capsys, ["evaluate", "--data", root, "--pred-dir", preds, "--json", js])
    import json

    assert json.loads(js.read_text())["mIoU"] == 1.0
    cli_ok(capsys, ["evaluate", "--data", root, "--checkpoint", run_dir / "last.pt", "--out", tmp_path / "ev ü"])
    assert (tmp_path / "ev ü" / "confusion.png").is_file()


# ---- bad dataset files through train / evaluate / predict ------------------------------------------------------------------
def test_train_wrong_root_and_empty_root(tmp_path, capsys):
    out = tmp_path / "run"
    cli_error(capsys, train_args(tmp_path / "nowhere", out), tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    cli_error(capsys, train_args(tmp_path / "empty", out), tmp_path / "empty", "not a Cityscapes root")
    assert not out.exists()


def test_check_and_prepare_on_empty_folders(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    cli_error(capsys, ["check", "--data", empty], empty)
    (empty / "leftImg8bit").mkdir()  # the top folders exist but hold nothing
    (empty / "gtFine").mkdir()
    cli_error(capsys, ["check", "--data", empty], empty)
    cli_error(capsys, ["prepare", "--data", empty, "--size", "12x20"], empty)
    assert sorted(p.name for p in empty.iterdir()) == ["gtFine", "leftImg8bit"]  # no cache folder


def test_evaluate_wrong_root_and_missing_split(root, preds, tmp_path, capsys):
    js = tmp_path / "o" / "s.json"
    cli_error(capsys, ["evaluate", "--data", tmp_path / "nowhere", "--pred-dir", preds, "--json", js], tmp_path / "nowhere")
    cli_error(capsys, ["evaluate", "--data", root, "--split", "test", "--pred-dir", preds, "--json", js], "split 'test'")
    assert not (tmp_path / "o").exists()


def test_train_image_without_label_and_empty_split(copy, tmp_path, capsys):
    s = layout.find_samples(copy, "train")[1]
    s.label.unlink()
    out = tmp_path / "run"
    cli_error(capsys, train_args(copy, out), s.image, "has no annotation")
    assert not out.exists()
    # an empty val split: folders exist, no frames
    shutil.rmtree(copy / "leftImg8bit" / "val")
    shutil.rmtree(copy / "gtFine" / "val")
    (copy / "leftImg8bit" / "val").mkdir()
    (copy / "gtFine" / "val").mkdir()
    # put the label back
    io.write_png(s.label, np.zeros((24, 40), np.uint8))
    cli_error(capsys, train_args(copy, out), "split 'val' is empty")
    assert not out.exists()


@pytest.mark.parametrize("how", ["truncated", "zero_bytes", "outside_table", "huge_header", "rgb"])
def test_evaluate_bad_ground_truth(how, copy, preds, tmp_path, capsys):
    gt = layout.find_samples(copy, "val")[1].label
    data = gt.read_bytes()
    needle = {
        "truncated": "truncated",
        "zero_bytes": "empty file",
        "outside_table": "label value 40",
        "huge_header": "refusing to decode",
        "rgb": "single-channel",
    }[how]
    if how == "truncated":
        gt.write_bytes(data[: len(data) // 2])
    elif how == "zero_bytes":
        gt.write_bytes(b"")
    elif how == "outside_table":
        arr = io.read_label(gt)
        arr[2, 3] = 40
        io.write_png(gt, arr)
    elif how == "huge_header":
        gt.write_bytes(png_header_only(40000, 40000, color=0))
    else:
        io.write_png(gt, np.zeros((24, 40, 3), np.uint8))
    js = tmp_path / "o" / "s.json"
    cli_error(capsys, ["evaluate", "--data", copy, "--pred-dir", preds, "--json", js], gt, needle)
    assert not (tmp_path / "o").exists()


def test_evaluate_checkpoint_image_size_differs_from_labels(copy, ckpt, tmp_path, capsys):
    img = layout.find_samples(copy, "val")[0].image
    io.write_png(img, np.zeros((24, 44, 3), np.uint8))
    js = tmp_path / "o" / "s.json"
    cli_error(capsys, ["evaluate", "--data", copy, "--checkpoint", ckpt, "--json", js, "--workers", "1"], img, "44x24")
    assert not (tmp_path / "o").exists()


# ---- images for predict -----------------------------------------------------------------------------------------------------
def png_header_only(width: int, height: int, color: int = 2) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("kind", ["palette", "gray_alpha", "one_bit", "zero_bytes", "truncated", "not_png", "huge_header"])
def test_predict_bad_image_fails_before_writing(kind, root, ckpt, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "in"
    shutil.copytree(root / "leftImg8bit" / "val", folder)
    bad = folder / "zzz_000000_000001_leftImg8bit.png"  # sorted last: good frames come first
    needle = {
        "palette": "palette",
        "gray_alpha": "grayscale+alpha",
        "one_bit": "1-bit",
        "zero_bytes": "empty file",
        "truncated": "truncated",
        "not_png": "cannot read image",
        "huge_header": "refusing to decode",
    }[kind]
    good = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    if kind == "palette":
        Image.fromarray(good).convert("P").save(bad)
    elif kind == "gray_alpha":
        Image.fromarray(good[:, :, :2], "LA").save(bad)
    elif kind == "one_bit":
        Image.fromarray(good[:, :, 0] > 128).save(bad)
    elif kind == "zero_bytes":
        bad.write_bytes(b"")
    elif kind == "truncated":
        io.write_png(bad, good)
        bad.write_bytes(bad.read_bytes()[:-40])
    elif kind == "not_png":
        bad.write_text("this is a text file with a .png name\n")
    else:
        import cv2

        bad.write_bytes(png_header_only(40000, 40000))
        real = cv2.imdecode

        def guarded(buf, flags):
            assert bytes(buf[16:24]) != bad.read_bytes()[16:24], "decoder called on the 40000x40000 header"
            return real(buf, flags)

        monkeypatch.setattr(cv2, "imdecode", guarded)
    out = tmp_path / "out"
    cli_error(capsys, ["predict", "--checkpoint", ckpt, folder, "--out", out, "--format", "labelIds,overlay", "--quiet"], bad, needle)
    assert snapshot(out) == {} and snapshot(tmp_path / "out_vis") == {}  # nothing written at all
    assert not temp_files(tmp_path)


def test_predict_empty_folder_and_symlink_loops(ckpt, root, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    cli_error(capsys, ["predict", "--checkpoint", ckpt, empty, "--out", out, "--quiet"], empty, "holds no")
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.symlink_to(b)
    b.symlink_to(a)
    cli_error(capsys, ["predict", "--checkpoint", ckpt, a, "--out", out, "--quiet"], a, "symlink")
    # a folder that links back to itself inside the input folder: walked once, predictions still work
    folder = tmp_path / "in"
    shutil.copytree(root / "leftImg8bit" / "val", folder)
    (folder / "aachen" / "loop").symlink_to(folder, target_is_directory=True)
    cli_ok(capsys, ["predict", "--checkpoint", ckpt, folder, "--out", out, "--quiet"])
    assert len(list(out.iterdir())) == 2
    assert not out.with_name("out_vis").exists()


def test_predict_out_is_a_file(ckpt, root, tmp_path, capsys):
    out = tmp_path / "results"
    out.write_text("keep")
    cli_error(capsys, ["predict", "--checkpoint", ckpt, val_image(root), "--out", out, "--quiet"], out)
    assert out.read_text() == "keep" and not temp_files(tmp_path)


# ---- checkpoints: zero-byte, truncated, symlink loop, claims that do not fit --------------------------------------------------
@pytest.fixture(scope="module")
def bad_checkpoints(ckpt, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad ckpts")
    (d / "empty.pt").write_bytes(b"")
    (d / "cut.pt").write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    (d / "loop.pt").symlink_to(d / "loop2.pt")
    (d / "loop2.pt").symlink_to(d / "loop.pt")
    (d / "dir.pt").mkdir()
    # claims residual_unet_same but holds weights of another model
    from cityseg.models import build_model

    other = build_model("tiny", num_classes=34).state_dict()
    make_checkpoint(d / "other_weights.pt", override={"model": other})
    # claims trainIds but has a 34-class head: predictions would be silently wrong
    make_checkpoint(d / "mode_mismatch.pt", override={"label_mode": "trainIds"})
    make_checkpoint(d / "unknown_mode.pt", override={"label_mode": "colors"})
    return d


BAD_CKPTS = {
    "empty.pt": "empty checkpoint file",
    "cut.pt": "cannot read checkpoint",
    "loop.pt": "symlink",
    "dir.pt": "is a folder",
    "other_weights.pt": "weights do not fit model 'residual_unet_same'",
    "mode_mismatch.pt": "claims label mode trainIds (19 classes) but num_classes is 34",
    "unknown_mode.pt": "unknown label mode 'colors'",
}


@pytest.mark.parametrize("name", list(BAD_CKPTS))
def test_bad_checkpoint_in_evaluate_predict_export(name, bad_checkpoints, root, tmp_path, capsys):
    path = bad_checkpoints / name
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.onnx").write_bytes(b"old export")
    before = snapshot(out)
    cli_error(capsys, ["evaluate", "--data", root, "--checkpoint", path, "--json", out / "s.json"], path, BAD_CKPTS[name])
    cli_error(capsys, ["predict", "--checkpoint", path, val_image(root), "--out", out / "pred", "--quiet"], path, BAD_CKPTS[name])
    cli_error(capsys, ["export", "--checkpoint", path, "--out", out / "keep.onnx"], path, BAD_CKPTS[name])
    cli_error(capsys, ["figure", "--checkpoint", path, "--data", root, "--n", "1", "--out", out / "fig.png"], path, BAD_CKPTS[name])
    assert snapshot(out) == before  # the old export is untouched, nothing else appeared


# ---- training: resume refusals leave the run folder untouched -----------------------------------------------------------------
def _broken_run(run_dir, tmp_path, how):
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    if how == "truncated":
        data = (run / "last.pt").read_bytes()
        (run / "last.pt").write_bytes(data[: len(data) // 3])
    elif how == "zero_bytes":
        (run / "last.pt").write_bytes(b"")
    elif how == "no_last":
        (run / "last.pt").unlink()
    return run


@pytest.mark.parametrize(
    "how, extra, needles",
    [
        ("other_model", ["--model", "tiny_other"], ["last.pt", "cannot resume", "model"]),
        ("other_options", ["--set", "model.options.width=6"], ["last.pt", "cannot resume", "model_options"]),
        ("other_label_mode", ["--set", "data.label_mode=trainIds"], ["last.pt", "cannot resume", "label_mode"]),
        ("truncated", [], ["last.pt", "cannot read checkpoint"]),
        ("zero_bytes", [], ["last.pt", "empty checkpoint file"]),
        ("no_last", [], ["last.pt", "nothing to resume"]),
    ],
)
def test_train_resume_refusals_keep_the_run_folder(how, extra, needles, run_dir, root, tmp_path, capsys):
    run = _broken_run(run_dir, tmp_path, how)
    before = snapshot(run)
    args = ["train", "--data", root, "--out", run, "--resume", "--epochs", "2", "--quiet", *extra]
    cli_error(capsys, args, *needles)
    if how in ("truncated", "zero_bytes", "no_last"):  # with an explicit recipe too (not read from last.pt)
        cli_error(capsys, [*train_args(root, run, "--resume", "--epochs", "2")], *needles)
    assert snapshot(run) == before


def test_train_into_an_existing_run_without_resume(run_dir, root, tmp_path, capsys):
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    before = snapshot(run)
    cli_error(capsys, train_args(root, run), run, "already holds a training run")
    assert snapshot(run) == before


# ---- config files --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, needle",
    [
        ("", "empty config file"),
        ("\n  \n", "empty config file"),
        ("[train]\nepochs = 'ten'\n", "train.epochs must be an integer"),
        ("[optim]\nlr = [0.1]\n", "optim.lr must be a number"),
        ("[data]\nsize = 128\n", "data.size"),
        ("[train]\nfast = 'maybe'\n", "train.fast"),
        ("train = 3\n", "'train' must be a table"),
        ("[train]\nepochs = 2\n[train]\nepochs = 3\n", "cannot read TOML config: TOMLDecodeError"),
        ("[train\n", "cannot read TOML config: TOMLDecodeError"),
        ("\xff\xfe[train]\n", "cannot read TOML config"),
    ],
)
def test_train_config_file_with_wrong_types(text, needle, root, tmp_path, capsys):
    cfg = tmp_path / "my config ü.toml"
    if text.startswith("\xff"):
        cfg.write_bytes(text.encode("latin-1"))
    else:
        cfg.write_text(text)
    out = tmp_path / "run"
    cli_error(capsys, train_args(root, out, "--config", cfg), cfg, needle)
    assert not out.exists()


def test_train_config_is_a_folder_or_symlink_loop(root, tmp_path, capsys):
    out = tmp_path / "run"
    folder = tmp_path / "cfg.toml"
    folder.mkdir()
    cli_error(capsys, train_args(root, out, "--config", folder), folder, "not a file")
    loop = tmp_path / "loop.toml"
    loop.symlink_to(tmp_path / "loop2.toml")
    (tmp_path / "loop2.toml").symlink_to(loop)
    cli_error(capsys, train_args(root, out, "--config", loop), loop)
    assert not out.exists()


# ---- evaluate --pred-dir: more broken predictions -------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["values_16bit", "zero_bytes", "corrupt", "huge_header", "palette_rgb"])
def test_evaluate_more_bad_predictions(how, root, preds, tmp_path, capsys):
    d = Path(shutil.copytree(preds, tmp_path / "p"))
    victim = sorted(d.glob("*.png"))[1]
    arr = io.read_label(victim)
    needle = {
        "values_16bit": "value 1000 is not a labelId",
        "zero_bytes": "empty file",
        "corrupt": "cannot read image",
        "huge_header": "refusing to decode",
        "palette_rgb": None,
    }[how]
    if how == "values_16bit":
        a16 = arr.astype(np.uint16)
        a16[0, 0] = 1000
        io.write_png(victim, a16)
    elif how == "zero_bytes":
        victim.write_bytes(b"")
    elif how == "corrupt":
        victim.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    elif how == "huge_header":
        victim.write_bytes(png_header_only(40000, 40000, color=0))
    else:  # a palette PNG whose indices are labelIds is fine; a colour (RGB) rendering is not
        Image.fromarray(labels.colorize(arr, "labelIds")).save(victim)
        needle = "3 channels"
    js = tmp_path / "o" / "s.json"
    cli_error(capsys, ["evaluate", "--data", root, "--pred-dir", d, "--json", js], victim, needle)
    assert not (tmp_path / "o").exists()


def test_evaluate_empty_missing_or_file_pred_dir(root, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    js = tmp_path / "o" / "s.json"
    cli_error(capsys, ["evaluate", "--data", root, "--pred-dir", empty, "--json", js], "no prediction", empty)
    cli_error(capsys, ["evaluate", "--data", root, "--pred-dir", tmp_path / "nope", "--json", js], tmp_path / "nope")
    f = tmp_path / "file"
    f.write_text("x")
    cli_error(capsys, ["evaluate", "--data", root, "--pred-dir", f, "--json", js], f)
    assert not (tmp_path / "o").exists()


def test_evaluate_json_to_unwritable_path(root, preds, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("keep")
    cli_error(capsys, ["evaluate", "--data", root, "--pred-dir", preds, "--json", blocker / "s.json"], blocker)
    folder = tmp_path / "folder.json"
    folder.mkdir()
    cli_error(capsys, ["evaluate", "--data", root, "--pred-dir", preds, "--no-confusion", "--json", folder], folder, "is a folder")
    assert blocker.read_text() == "keep" and list(folder.iterdir()) == [] and not temp_files(tmp_path)


# ---- export to an unwritable path ------------------------------------------------------------------------------------------------
def test_export_to_unwritable_paths(tiny_ckpt, tmp_path, capsys, monkeypatch):
    ckpt = tiny_ckpt
    blocker = tmp_path / "blocker"
    blocker.write_text("keep")
    cli_error(capsys, ["export", "--checkpoint", ckpt, "--out", blocker / "m.onnx", "--no-check"], blocker / "m.onnx", "a file is in the way")
    folder = tmp_path / "model.onnx"
    folder.mkdir()
    cli_error(capsys, ["export", "--checkpoint", ckpt, "--out", folder, "--no-check"], folder, "is a folder")
    assert blocker.read_text() == "keep" and list(folder.iterdir()) == []
    # a read-only folder (root ignores permission bits, so the commit of the atomic write is refused)
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "m.onnx").write_bytes(b"previous export")
    real_replace = os.replace

    def refuse(src, dst, *a, **k):
        if Path(dst).parent == ro:
            raise PermissionError(13, "Permission denied", str(dst))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", refuse)
    cli_error(capsys, ["export", "--checkpoint", ckpt, "--out", ro / "m.onnx", "--no-check", "--exporter", "torchscript"], ro / "m.onnx", "Permission denied")
    monkeypatch.undo()
    assert snapshot(ro) == {"m.onnx": b"previous export"}  # old file kept
    assert os.listdir(ro) == ["m.onnx"]  # no temp files or temp folders left


def test_export_with_spaces_and_non_ascii_works(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "exports ü" / "my model ü.onnx"
    text = cli_ok(capsys, ["export", "--checkpoint", tiny_ckpt, "--out", out, "--exporter", "torchscript"])
    assert "argmax agreement 100.0000%" in text  # and onnxruntime reads it back from that path
    assert out.stat().st_size > 0 and sorted(p.name for p in out.parent.iterdir()) == [out.name]


# ---- the console script itself (a few cases through a real process) ---------------------------------------------------------------
@pytest.mark.parametrize("case", ["huge_image", "cut_checkpoint", "config_types"])
def test_console_script_exit_2_one_line(case, root, ckpt, bad_checkpoints, tmp_path):
    if case == "huge_image":
        img = tmp_path / "huge image ü.png"
        img.write_bytes(png_header_only(40000, 40000))
        argv = ["predict", "--checkpoint", str(ckpt), str(img), "--out", str(tmp_path / "o"), "--quiet"]
        needle = str(img)
    elif case == "cut_checkpoint":
        argv = ["evaluate", "--data", str(root), "--checkpoint", str(bad_checkpoints / "cut.pt"), "--json", str(tmp_path / "o" / "s.json")]
        needle = "cut.pt"
    else:
        cfg = tmp_path / "c.toml"
        cfg.write_text("[train]\nbatch_size = 'big'\n")
        argv = ["train", "--data", str(root), "--out", str(tmp_path / "o"), "--model", "residual_unet_same", "--config", str(cfg)]
        needle = "train.batch_size"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "cityseg", *argv], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert lines[0].startswith(f"cityseg {argv[0]}: error: ") and needle in lines[0]
    assert not (tmp_path / "o").exists()
