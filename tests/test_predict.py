"""`cityseg predict` and `cityseg figure`: submission files, names the official script finds, bad input."""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import references
from cityseg import io, labels
from cityseg.checkpoint import save_checkpoint
from cityseg.cli import main
from cityseg.data import layout
from cityseg.infer.outputs import collect_inputs
from cityseg.infer.predictor import Predictor

MODEL = "residual_unet_same"
SIZE = (32, 64)


def make_checkpoint(path, label_mode="labelIds", seed=0):
    from cityseg.models import build_model

    torch.manual_seed(seed)
    n = labels.num_classes(label_mode)
    model = build_model(MODEL, num_classes=n).eval()
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "model_name": MODEL,
            "model_options": {},
            "label_mode": label_mode,
            "num_classes": n,
            "class_names": list(labels.class_names(label_mode)),
            "input_size": list(SIZE),
            "interpolation": "area",
            "mean": [0.3, 0.3, 0.3],
            "std": [0.2, 0.2, 0.2],
            "epoch": 1,
        },
    )
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture(scope="module")
def ckpt_train(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "train.pt", "trainIds", seed=1)


def files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())


def test_predict_writes_submission_files_the_official_script_finds(ckpt, tiny_root, tmp_path, capsys):
    out = tmp_path / "results"
    val = tiny_root / "leftImg8bit" / "val"
    rc = main(["predict", "--checkpoint", str(ckpt), str(val), "--out", str(out), "--format", "labelIds,color,overlay", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    samples = layout.find_samples(tiny_root, "val")
    assert files(out) == sorted(f"{s.stem}_labelIds.png" for s in samples)  # nothing else in the results folder
    vis = tmp_path / "results_vis"
    assert files(vis) == sorted(f"{s.stem}_{k}.png" for s in samples for k in ("color", "overlay"))
    predictor = Predictor.from_checkpoint(ckpt)
    for s in samples:
        image = io.read_image(s.image)
        with Image.open(out / f"{s.stem}_labelIds.png") as im:
            assert im.mode == "L" and im.size == (image.shape[1], image.shape[0])
        pred = io.read_label(out / f"{s.stem}_labelIds.png", max_value=33)
        np.testing.assert_array_equal(pred, predictor.predict(image))
        np.testing.assert_array_equal(io.read_image(vis / f"{s.stem}_color.png"), references.official_colors(pred))
        np.testing.assert_array_equal(io.read_image(vis / f"{s.stem}_overlay.png"), references.overlay(image, pred, quarters=2))
    # the official evaluator's own lookup finds exactly our file for every ground-truth frame
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs

    args = types.SimpleNamespace(predictionPath=str(out), predictionWalk=None)
    for s in samples:
        assert Path(cs.getPrediction(args, str(s.label))) == out / f"{s.stem}_labelIds.png"


def test_trainid_checkpoint_is_submitted_as_labelids(ckpt_train, tiny_root, tmp_path):
    out = tmp_path / "out"
    img = layout.find_samples(tiny_root, "val")[0].image
    assert main(["predict", "--checkpoint", str(ckpt_train), str(img), "--out", str(out), "--quiet"]) == 0
    pred = io.read_label(next(out.iterdir()))
    assert set(np.unique(pred)) <= set(labels.TRAINID_TO_LABELID[:19].tolist())
    train = Predictor.from_checkpoint(ckpt_train).logits(io.read_image(img)).argmax(0).numpy()
    np.testing.assert_array_equal(pred, labels.TRAINID_TO_LABELID[train])


def test_out_defaults_to_cityscapes_results_and_globs_work(ckpt, tiny_root, tmp_path, monkeypatch):
    results = tmp_path / "env_results"
    monkeypatch.setenv("CITYSCAPES_RESULTS", str(results))
    pattern = str(tiny_root / "leftImg8bit" / "v*" / "**" / "*_leftImg8bit.png")
    assert main(["predict", "--checkpoint", str(ckpt), pattern, "--quiet", "--flip", "--scales", "0.5,1"]) == 0
    assert files(results) == sorted(f"{s.stem}_labelIds.png" for s in layout.find_samples(tiny_root, "val"))


def test_collect_inputs(tiny_root, tmp_path):
    found = collect_inputs([tiny_root])  # a dataset root: camera images only, not the annotation PNGs
    assert len(found) == 5 and all(p.name.endswith("_leftImg8bit.png") for p in found)
    plain = tmp_path / "photos"
    io.write_png(plain / "a.png", np.zeros((8, 8, 3), np.uint8))
    io.write_png(plain / "sub" / "b.png", np.zeros((8, 8, 3), np.uint8))
    assert [p.name for p in collect_inputs([plain, plain / "a.png"])] == ["a.png", "b.png"]


def one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("kind", ["gray", "rgba", "16bit"])
def test_bad_images_fail_before_anything_is_written(kind, ckpt, tiny_root, tmp_path, capsys):
    folder = tmp_path / "in"
    shutil.copytree(tiny_root / "leftImg8bit" / "val", folder)
    bad = folder / "zzz_000000_000001_leftImg8bit.png"
    if kind == "gray":
        Image.fromarray(np.zeros((24, 40), np.uint8)).save(bad)
    elif kind == "rgba":
        Image.fromarray(np.zeros((24, 40, 4), np.uint8)).save(bad)
    else:
        import cv2

        cv2.imwrite(str(bad), np.zeros((24, 40, 3), np.uint16))
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(ckpt), str(folder), "--out", str(out), "--quiet"]) == 2
    err = one_line_error(capsys)
    assert bad.name in err and "RGB" in err
    assert not out.exists() or files(out) == []


def test_bad_checkpoints_and_inputs(ckpt, ckpt_train, tiny_root, tmp_path, capsys):
    img = str(layout.find_samples(tiny_root, "val")[0].image)
    out = tmp_path / "out"
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(Path(ckpt).read_bytes()[:5000])
    cases = [
        (["--checkpoint", str(truncated), img], "cut.pt"),
        (["--checkpoint", str(tmp_path / "missing.pt"), img], "missing.pt"),
        (["--checkpoint", str(ckpt), str(tmp_path / "nope.png")], "nope.png"),
        (["--checkpoint", str(ckpt), str(tmp_path / "*.jpg")], "*.jpg"),
        (["--checkpoint", str(ckpt), img, "--expect-model", "segception"], "segception"),
        (["--checkpoint", str(ckpt_train), img, "--expect-label-mode", "labelIds"], "trainIds"),
        (["--checkpoint", str(ckpt), img, "--format", "labelIds,jpeg"], "jpeg"),
    ]
    for argv, needle in cases:
        assert main(["predict", *argv, "--out", str(out), "--quiet"]) == 2, argv
        assert needle in one_line_error(capsys)
    assert not out.exists()


def test_duplicate_stems_are_refused(ckpt, tiny_root, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    src = layout.find_samples(tiny_root, "val")[0].image
    for d in (a, b):
        d.mkdir()
        shutil.copy(src, d / src.name)
    assert main(["predict", "--checkpoint", str(ckpt), str(a), str(b), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "same output name" in one_line_error(capsys)


def test_results_figure_layout(ckpt, tiny_root, tmp_path, capsys):
    from cityseg.infer.figure import results_figure

    path = results_figure(Predictor.from_checkpoint(ckpt), tiny_root, tmp_path / "fig.png", n=2)
    with Image.open(path) as im:
        two_rows = im.size
    assert two_rows[0] == 1200  # four 3-inch panels at 100 dpi
    out = tmp_path / "cli.png"
    assert main(["figure", "--checkpoint", str(ckpt), "--data", str(tiny_root), "--n", "5", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == two_rows  # only 2 val frames exist
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left
    assert main(["figure", "--checkpoint", str(ckpt), "--data", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "none" in one_line_error(capsys)


def test_results_figure_rows_are_first_n_sorted_frames_in_the_official_palette(ckpt, synth_small, tmp_path, monkeypatch):
    """Rows = the first N val frames in sorted order; columns = input / GT / prediction / errors, coloured
    with the official labelId palette (checked on the arrays handed to imshow); titles on the first row."""
    import matplotlib.axes

    from cityseg.infer.figure import ERROR_COLOR, TITLES, results_figure

    drawn, titles = [], []
    real_imshow, real_title = matplotlib.axes.Axes.imshow, matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", lambda ax, a, **k: (drawn.append(np.asarray(a)), real_imshow(ax, a, **k))[1])
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", lambda ax, t, **k: (titles.append(t), real_title(ax, t, **k))[1])
    predictor = Predictor.from_checkpoint(ckpt)
    results_figure(predictor, synth_small, tmp_path / "fig.png", n=3)
    frames = sorted(str(p) for p in (synth_small / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))[:3]
    assert len(drawn) == 12 and titles == list(TITLES)
    for r, image_path in enumerate(frames):
        sample = next(s for s in layout.find_samples(synth_small, "val") if str(s.image) == image_path)
        image = io.read_image(sample.image)  # 256x512: drawn as is (no display shrink)
        gt, pred = io.read_label(sample.label), predictor.predict(image)
        np.testing.assert_array_equal(drawn[4 * r], image)
        np.testing.assert_array_equal(drawn[4 * r + 1], references.official_colors(gt))
        np.testing.assert_array_equal(drawn[4 * r + 2], references.official_colors(pred))
        # error panel, checked pixel class by pixel class against the official evaluated-id list
        errors = drawn[4 * r + 3]
        scored = np.isin(gt, labels.EVAL_LABEL_IDS)
        assert (errors[~scored] == 0).all()
        wrong = scored & (pred != gt)
        assert (errors[wrong] == ERROR_COLOR).all()
        right = scored & (pred == gt)
        assert (errors[right][:, 0] == errors[right][:, 1]).all()  # grey where right


def test_predictor_takes_the_models_own_full_resolution_mode(tmp_path, monkeypatch):
    """A model whose whole frame does not fit (``full_res_mode = "slide"``) slides unless told otherwise,
    from a checkpoint and from its ONNX metadata; an explicit mode wins."""
    from cityseg.infer import onnx as onnx_mod
    from cityseg.models import build_model

    torch.manual_seed(0)
    model = build_model("residual_unet_attn", num_classes=19).eval()
    assert model.full_res_mode == "slide"
    path = tmp_path / "attn.pt"
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "model_name": "residual_unet_attn",
            "model_options": {},
            "label_mode": "trainIds",
            "num_classes": 19,
            "input_size": [32, 64],
        },
    )
    assert Predictor.from_checkpoint(path).mode == "slide"
    assert Predictor.from_checkpoint(path, mode="whole").mode == "whole"
    meta = {k: json.loads(v) for k, v in onnx_mod._metadata(torch.load(path, weights_only=True), (32, 64), "dynamo", "slide").items()}
    monkeypatch.setattr("cityseg.infer.predictor.load_onnx", lambda p: (object(), meta))
    monkeypatch.setattr("cityseg.infer.predictor.is_onnx_session", lambda m: True)
    monkeypatch.setattr("cityseg.infer.predictor.OnnxModel", lambda m: m)
    assert Predictor.from_onnx("attn.onnx").mode == "slide"
    del meta["full_res_mode"]  # an export from before the key existed: whole, as it was then
    assert Predictor.from_onnx("attn.onnx").mode == "whole"


# ---- ONNX export and onnxruntime prediction -----------------------------------------------------
@pytest.fixture(scope="module")
def onnx_export(ckpt_train, tmp_path_factory):
    """`cityseg export` of the trainIds checkpoint: (path, what the command printed)."""
    import contextlib
    import io as pyio

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    printed = pyio.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", "--checkpoint", str(ckpt_train), "--out", str(out)]) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def onnx_file(onnx_export):
    return onnx_export[0]


def test_export_has_dynamic_batch_and_matches_pytorch(ckpt_train, onnx_export):
    import onnx
    import onnxruntime as ort

    from cityseg.infer.onnx import read_metadata
    from cityseg.models import model_from_checkpoint

    onnx_file, printed = onnx_export
    proto = onnx.load(str(onnx_file))
    for value in (proto.graph.input[0], proto.graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_param and not dims[0].HasField("dim_value"), value.name  # symbolic batch axis
        assert [d.dim_value for d in dims[1:]] == [3 if value is proto.graph.input[0] else 19, *SIZE]
    meta = read_metadata(onnx_file)
    assert meta["label_mode"] == "trainIds" and meta["input_size"] == list(SIZE) and meta["num_classes"] == 19
    # the dynamo exporter wrote it: a fallback to TorchScript would say so here and in the printed line
    assert meta["exporter"] == "dynamo" and "failed" not in printed, printed
    assert printed.startswith(f"wrote {onnx_file}: {MODEL}, input Bx3x{SIZE[0]}x{SIZE[1]}, opset 18, exporter dynamo\n"), printed
    assert meta["mean"] == [0.3, 0.3, 0.3] and meta["model_name"] == MODEL
    assert meta["full_res_mode"] == "whole" and Predictor.from_onnx(onnx_file).mode == "whole"

    model, _ = model_from_checkpoint(ckpt_train)
    model.eval()
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(7)
    for batch in (1, 5):  # the export traced batch 2: both other sizes must run
        x = torch.rand(batch, 3, *SIZE, generator=g) * 4 - 2
        with torch.no_grad():
            ref = model(x)
        (got,) = session.run(["logits"], {"image": x.numpy()})
        got = torch.from_numpy(got)
        assert got.shape == ref.shape == (batch, 19, *SIZE)
        diff = float((got - ref).abs().max())
        agree = float((got.argmax(1) == ref.argmax(1)).float().mean())
        assert diff < 1e-4 * max(1.0, float(ref.abs().max())), diff
        assert agree >= 0.999, agree
    # the command's own check printed the same comparison, at batch 1 and 3
    import re

    checks = re.findall(r"check batch (\d+): max \|logit diff\| (\S+), argmax agreement ([\d.]+)%", printed)
    assert [c[0] for c in checks] == ["1", "3"], printed
    assert all(float(d) < 1e-3 and float(a) >= 99.9 for _, d, a in checks), printed


def test_export_opset_and_size_options(ckpt_train, tmp_path, capsys):
    """--opset is the opset written, --size the input (and output) shape; the command's own check runs there."""
    import onnx

    from cityseg.infer.onnx import read_metadata

    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(ckpt_train), "--out", str(out), "--opset", "17", "--size", "48x96"]) == 0
    printed = capsys.readouterr().out
    proto = onnx.load(str(out))
    assert [(o.domain, o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [("", 17)]
    for value, channels in ((proto.graph.input[0], 3), (proto.graph.output[0], 19)):
        assert [d.dim_value for d in value.type.tensor_type.shape.dim[1:]] == [channels, 48, 96], value.name
    meta = read_metadata(out)
    assert meta["input_size"] == [48, 96] and meta["exporter"] == "dynamo"
    assert "input Bx3x48x96, opset 17, exporter dynamo\n" in printed and printed.count("check batch") == 2, printed


def test_exporter_fallback_is_reported_with_its_reason(ckpt_train, tmp_path, capsys, monkeypatch):
    """When the dynamo exporter fails, auto falls back to TorchScript and says so (result, metadata, printed
    line); with --exporter dynamo the failure is the one-line error."""
    from cityseg.infer.onnx import export_onnx, read_metadata

    real_export = torch.onnx.export

    def no_dynamo(*args, dynamo=True, **kwargs):
        if dynamo:
            raise RuntimeError("dynamo exporter unavailable\nsecond line")
        return real_export(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_dynamo)
    info = export_onnx(ckpt_train, tmp_path / "a.onnx")
    assert info["exporter"] == "torchscript" and info["fallback_reason"] == "RuntimeError: dynamo exporter unavailable"
    assert read_metadata(tmp_path / "a.onnx")["exporter"] == "torchscript"
    assert main(["export", "--checkpoint", str(ckpt_train), "--out", str(tmp_path / "b.onnx"), "--no-check"]) == 0
    assert "exporter torchscript (dynamo exporter failed: RuntimeError: dynamo exporter unavailable)" in capsys.readouterr().out
    assert main(["export", "--checkpoint", str(ckpt_train), "--out", str(tmp_path / "c.onnx"), "--exporter", "dynamo", "--no-check"]) == 2
    assert "ONNX export failed (RuntimeError: dynamo exporter unavailable)" in one_line_error(capsys)
    assert not (tmp_path / "c.onnx").exists()


def test_predict_onnx_runs_on_onnxruntime_and_equals_checkpoint(ckpt_train, onnx_file, tiny_root, tmp_path, monkeypatch):
    import onnxruntime as ort

    calls = []
    real_run = ort.InferenceSession.run
    monkeypatch.setattr(ort.InferenceSession, "run", lambda self, *a, **k: (calls.append(1), real_run(self, *a, **k))[1])
    val = tiny_root / "leftImg8bit" / "val"
    a, b = tmp_path / "onnx_out", tmp_path / "pt_out"
    assert main(["predict", "--onnx", str(onnx_file), str(val), "--out", str(a), "--quiet"]) == 0
    n_onnx = len(calls)
    assert main(["predict", "--checkpoint", str(ckpt_train), str(val), "--out", str(b), "--quiet"]) == 0
    samples = layout.find_samples(tiny_root, "val")
    assert n_onnx == len(samples) and len(calls) == n_onnx  # onnx: one session run per image; .pt: none
    assert files(a) == files(b) == sorted(f"{s.stem}_labelIds.png" for s in samples)
    for name in files(a):
        pa, pb = io.read_label(a / name), io.read_label(b / name)
        assert (pa == pb).mean() >= 0.999  # trainIds mapped back to labelIds on both paths
        assert set(np.unique(pa)) <= set(labels.TRAINID_TO_LABELID[:19].tolist())


def test_bad_onnx_is_one_line(tiny_root, tmp_path, capsys):
    img = str(layout.find_samples(tiny_root, "val")[0].image)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage")
    for path, needle in ((junk, "junk.onnx"), (tmp_path / "absent.onnx", "absent.onnx")):
        assert main(["predict", "--onnx", str(path), img, "--out", str(tmp_path / "o"), "--quiet"]) == 2
        assert needle in one_line_error(capsys)
    assert not (tmp_path / "o").exists()


EXPORT_SIZES = {"residual_unet": (60, 64), "segception_deep": (32, 64), "segception_deep_fixed": (32, 64), "vgg16_unet": (32, 64), "segception_base": (16, 32)}


def _registered_models():
    from cityseg.models import list_models

    return list_models()


@pytest.mark.slow
@pytest.mark.parametrize("name", _registered_models())
def test_every_registered_model_exports_to_onnx(name, tmp_path):
    """ONNX export + onnxruntime parity for every model (Model B at its built size, with its PReLU alphas)."""
    from cityseg.infer.onnx import compare_onnx, export_onnx
    from cityseg.models import build_model

    size = EXPORT_SIZES.get(name, (32, 64))
    options = {"input_size": list(size)} if name == "segception_base" else {}
    torch.manual_seed(0)
    model = build_model(name, num_classes=19, **options)
    size = model.valid_size(*size)  # the smallest size of the model's own rule
    with torch.no_grad():  # BN statistics of real activations: logits of order 1, so the tolerance is tight
        for _ in range(3):
            model.train()(torch.rand(2, 3, *size))
    model.eval()
    ckpt = {
        "model": model.state_dict(),
        "model_name": name,
        "model_options": options,
        "label_mode": "trainIds",
        "num_classes": 19,
        "input_size": list(size),
        "interpolation": "area",
        "mean": None,
        "std": None,
    }
    info = export_onnx(ckpt, tmp_path / f"{name}.onnx")
    assert info["exporter"] == "dynamo", info["fallback_reason"]  # no silent fallback to TorchScript
    for batch, r in compare_onnx(model, info["path"], size, batches=(1, 3)).items():
        assert r["argmax_agreement"] >= 0.999 and r["max_abs_diff"] < 1e-3, (batch, r)


def test_evaluate_accepts_the_onnx_file(ckpt_train, onnx_file, tiny_root, tmp_path):
    """`cityseg evaluate --checkpoint model.onnx` scores the onnxruntime predictions like the checkpoint's."""

    a, b = tmp_path / "onnx" / "s.json", tmp_path / "pt" / "s.json"
    for model, out in ((onnx_file, a), (ckpt_train, b)):
        assert main(["evaluate", "--data", str(tiny_root), "--checkpoint", str(model), "--json", str(out), "--no-confusion", "--workers", "1"]) == 0
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ra["n_images"] == rb["n_images"] == 2
    assert ra["pixel_acc_34"] == pytest.approx(rb["pixel_acc_34"], abs=2e-3)
