"""A real checkpoint after one training step, through the CLI: `evaluate --checkpoint` and `predict` with
flip, multi-scale and sliding-window inference, bf16, ``--vis-dir`` and ``--alpha``, each held to inference
written out by hand in tests/references.py."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import references
from cityseg import models
from cityseg.cli import main
from cityseg.data import layout
from cityseg.eval.evaluate import evaluate_pred_dir
from cityseg.io import write_png
from cityseg.models.base import SegmentationModel

FRAME = (64, 128)
SIZE = (32, 64)  # the training size: whole mode runs the model at half the frame size


class SmallNet(SegmentationModel):
    """Conv + BN at full and at half resolution, the half upsampled back: a few milliseconds per pass, yet
    its logits depend on context, so windows, mirrors and scales all change them."""

    name = "small"
    size_multiple = 4
    min_size = 8

    def __init__(self, num_classes: int = 34, width: int = 8):
        super().__init__()
        self.fine = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.coarse = nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, width, 5, padding=2))
        self.head = nn.Conv2d(2 * width, num_classes, 1)

    def forward(self, x):
        a = self.fine(x)
        b = F.interpolate(self.coarse(a), size=a.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([a, b], 1))


@pytest.fixture(scope="module", autouse=True)
def small_model():
    models.MODELS["small"] = models.Entry(partial(SmallNet), "small test net")
    yield
    models.MODELS.pop("small", None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """SynthCity at 64x128 (2 train, 2 val frames) and the small net after one step of `cityseg train` on
    trainIds, with mean/std and area resizing: (root, checkpoint path, model in eval mode, checkpoint)."""
    from cityseg.data.synth import generate
    from cityseg.models import model_from_checkpoint

    base = tmp_path_factory.mktemp("trained")
    root = base / "data"
    generate(root, train=2, val=2, test=0, size=FRAME, seed=2)
    overrides = ["data.label_mode=trainIds", "data.interpolation=area", "data.mean=[0.3,0.35,0.3]", "data.std=[0.2,0.2,0.2]", "train.fast=false"]
    argv = ["train", "--data", str(root), "--model", "small", "--out", str(base / "run"), "--epochs", "1", "--batch-size", "2"]
    argv += ["--size", "x".join(map(str, SIZE)), "--workers", "0", "--quiet", *[a for o in overrides for a in ("--set", o)]]
    assert main(argv) == 0
    path = base / "run" / "last.pt"
    model, ckpt = model_from_checkpoint(path)
    assert ckpt["epoch"] == 1 and ckpt["label_mode"] == "trainIds" and ckpt["input_size"] == list(SIZE)
    return root, path, model.eval(), ckpt


def by_hand(trained, image, **options):
    _, _, model, ckpt = trained
    return references.predict(model, image, ckpt, **options)


# ---- evaluate --checkpoint -----------------------------------------------------------------------
CASES = {
    "flip": (["--flip"], dict(flip=True)),
    "scales": (["--scales", "1,2"], dict(scales=(1.0, 2.0))),
    "slide": (["--mode", "slide"], dict(mode="slide")),
    "slide_flip_scales": (["--mode", "slide", "--flip", "--scales", "0.5,1"], dict(mode="slide", flip=True, scales=(0.5, 1.0))),
}


@pytest.mark.parametrize("case", list(CASES))
def test_evaluate_checkpoint_with_tta_scores_the_predictions_made_by_hand(case, trained, tmp_path, monkeypatch):
    """Every pixel the CLI scores agrees with the prediction made by hand (the predictions it passes to the
    evaluator are recorded), its scores equal the scores of those hand-made predictions written as PNGs,
    and the option changes the predictions, so a dropped or misapplied option is seen."""
    from cityseg.infer.predictor import Predictor

    root, path, _, _ = trained
    argv, options = CASES[case]
    scored = []
    predict = Predictor.predict
    monkeypatch.setattr(Predictor, "predict", lambda self, image, *a, **k: scored.append((image, predict(self, image, *a, **k))) or scored[-1][1])
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--data", str(root), "--checkpoint", str(path), "--json", str(out), "--no-confusion", "--workers", "1", *argv]) == 0
    samples = layout.find_samples(root, "val")
    assert len(scored) == len(samples)
    changed = 0
    for s in samples:
        image = references.decode(s.image)
        pred = by_hand(trained, image, **options)
        (cli_pred,) = [p for im, p in scored if np.array_equal(im, image)]
        np.testing.assert_array_equal(cli_pred, pred, err_msg=s.stem)
        write_png(tmp_path / "by_hand" / f"{s.stem}.png", pred)
        changed += int((pred != by_hand(trained, image)).sum())
    assert changed > 0
    assert json.loads(out.read_text()) == json.loads(json.dumps(evaluate_pred_dir(root, "val", tmp_path / "by_hand")))


# ---- predict ---------------------------------------------------------------------------------------
def test_predict_slide_into_vis_dir_with_alpha(trained, tmp_path):
    root, path, _, _ = trained
    samples = layout.find_samples(root, "val")
    out, vis = tmp_path / "labels", tmp_path / "pictures"
    argv = ["predict", "--checkpoint", str(path), *[str(s.image) for s in samples], "--out", str(out), "--vis-dir", str(vis), "--alpha", "0.25"]
    argv += ["--format", "labelIds,color,overlay", "--mode", "slide", "--window", "32x64", "--stride", "16x32", "--quiet"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s.stem}_labelIds.png" for s in samples)
    assert sorted(p.name for p in vis.iterdir()) == sorted(f"{s.stem}_{k}.png" for s in samples for k in ("color", "overlay"))
    assert not (tmp_path / "labels_vis").exists()  # --vis-dir replaces the default folder
    for s in samples:
        image = references.decode(s.image)
        pred = by_hand(trained, image, mode="slide", window=(32, 64), stride=(16, 32))
        assert (pred != by_hand(trained, image)).any()  # slide mode really differs from whole here
        np.testing.assert_array_equal(references.decode(out / f"{s.stem}_labelIds.png"), pred)
        np.testing.assert_array_equal(references.decode(vis / f"{s.stem}_color.png"), references.official_colors(pred))
        np.testing.assert_array_equal(references.decode(vis / f"{s.stem}_overlay.png"), references.overlay(image, pred, quarters=1))


def test_predict_bf16_runs_in_bfloat16_autocast_and_channels_last(trained, tmp_path):
    """--bf16: the first convolution sees a channels_last input under CPU bfloat16 autocast, and the labels
    stay close to the float32 ones made by hand."""
    root, path, _, _ = trained
    samples = layout.find_samples(root, "val")
    seen = []

    def record(module, args):
        if isinstance(module, torch.nn.Conv2d):
            seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), args[0].is_contiguous(memory_format=torch.channels_last)))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        assert main(["predict", "--checkpoint", str(path), *[str(s.image) for s in samples], "--out", str(tmp_path / "out"), "--bf16", "--quiet"]) == 0
    finally:
        handle.remove()
    assert seen and seen[0] == (True, torch.bfloat16, True), seen[:1]
    for s in samples:
        pred = references.decode(tmp_path / "out" / f"{s.stem}_labelIds.png")
        assert (pred == by_hand(trained, references.decode(s.image))).mean() > 0.97
