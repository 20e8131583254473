"""Performance 2: BatchNorm folding, the measured fast-path choice and its cache, int8 ONNX export."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from torch import nn

from cityseg import labels
from cityseg.checkpoint import save_checkpoint
from cityseg.cli import main
from cityseg.infer import fastpath
from cityseg.models import build_model, list_models, model_options
from cityseg.models.fold import count_batchnorm, fold_batchnorm

#: models in which every BatchNorm reads a convolution's output (no pre-activation BN)
ALL_BN_AFTER_CONV = {"segception", "segception_fixed", "segception_deep", "segception_deep_fixed", "segception_base", "vgg16_unet"}
ALL_BN_AFTER_CONV |= {"residual_inception_unet", "efficientnet_unet", "segformer_b0", "segformer_b1"}
ALL_BN_AFTER_CONV |= {"lite0_fpn", "lite0_unet", "lite0_lraspp", "lite1_fpn", "lite2_fpn"}


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """BN statistics and affine parameters away from the identity, so folding is really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
            if m.affine:
                m.weight.data.uniform_(0.5, 1.5, generator=g)
                m.bias.data.normal_(0, 0.2, generator=g)
    return model.eval()


def conv_bn_pairs(model: nn.Module) -> int:
    """Conv2d -> BatchNorm2d neighbours inside an ``nn.Sequential``: the conv's output reaches the BN and
    nothing else, so each pair is foldable whatever the fold's tracing finds (an independent count)."""
    n = 0
    for m in model.modules():
        if isinstance(m, nn.Sequential):
            layers = list(m)
            n += sum(isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d) for a, b in itertools.pairwise(layers))
    return n


#: registry models folded in the default suite; the larger ones run with ``-m slow``
QUICK_FOLD = ("ddrnet23_slim", "pidnet_s", "bisenetv2", "segformer_b0", "efficientnet_unet", "lite0_fpn")


# ---- BatchNorm folding ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n if n in QUICK_FOLD else pytest.param(n, marks=pytest.mark.slow) for n in list_models()])
def test_fold_every_registered_model(name):
    size = (64, 128)
    options = {"input_size": size} if "input_size" in model_options(name) else {}
    torch.manual_seed(0)
    model = randomize_bn(build_model(name, num_classes=5, **options))
    x = torch.rand(1, 3, *size)
    folded = fold_batchnorm(model, x)
    with torch.no_grad():
        ref, got = model(x), folded(x)
    assert float((got - ref).abs().max() / ref.abs().max()) <= 1e-4
    before, after = count_batchnorm(model), count_batchnorm(folded)
    if name in ALL_BN_AFTER_CONV:
        assert after == 0 < before
    # every Conv -> BN pair of a Sequential is folded, not just some BatchNorm
    assert conv_bn_pairs(folded) == 0 and after <= before - conv_bn_pairs(model)
    assert name not in QUICK_FOLD or name in ALL_BN_AFTER_CONV or conv_bn_pairs(model) >= 10  # the check has pairs to see
    assert count_batchnorm(model) == before  # the original is untouched


def test_fold_patterns_and_what_stays():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pre = nn.BatchNorm2d(3)  # reads the input: stays
            self.seq = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)  # depthwise, with bias
            self.dw_bn = nn.BatchNorm2d(8)
            self.shared = nn.Conv2d(8, 8, 1)  # its output also feeds the sum: its BN stays
            self.shared_bn = nn.BatchNorm2d(8)
            self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
            self.up_bn = nn.BatchNorm2d(4, affine=False)

        def forward(self, x):
            y = self.dw_bn(self.dw(self.seq(self.pre(x))))
            s = self.shared(y)
            return self.up_bn(self.up(self.shared_bn(s) + s))

    model = randomize_bn(Net())
    x = torch.rand(2, 3, 16, 20)
    folded = fold_batchnorm(model, x)
    kept = sorted(n for n, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d))
    assert kept == ["pre", "shared_bn"]
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)


# ---- the measured fast path and its cache -----------------------------------------------------------
def fake_timer(costs):
    """A ``process_time`` stand-in: each call pair around a run adds that variant's cost (by call order)."""
    clock = itertools.count()
    state = {"t": 0.0, "calls": 0}

    def timer():
        state["calls"] += 1
        if state["calls"] % 2 == 0:  # the second reading of a pair: the variant's cost has elapsed
            state["t"] += costs[(state["calls"] // 2 - 1) % len(costs)]
        next(clock)
        return state["t"]

    return timer


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "cityseg" / fastpath.CACHE_NAME


def small_model():
    torch.manual_seed(0)
    return randomize_bn(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)))


@pytest.fixture
def with_fused(monkeypatch):
    """The toy model counts as one with multi-branch blocks, so the fused/per-branch choice is offered."""
    monkeypatch.setattr(fastpath, "has_fused_path", lambda model: True)


def test_trial_picks_the_fastest_and_the_cache_remembers_it(cache_home, monkeypatch, with_fused):
    model, device = small_model(), torch.device("cpu")
    choices = fastpath.candidates(model, device)
    assert len(choices) >= 4 and any(c.fused for c in choices)  # layouts x fused (x bf16 where native)
    costs = [1.0] * len(choices)
    costs[2] = 0.1
    shape = (1, 3, 16, 32)
    got = fastpath.choose(model, shape, device, timer=fake_timer(costs))
    assert got == choices[2]
    data = json.loads(cache_home.read_text())
    (key,) = data
    assert "|1x3x16x32|" in key and torch.__version__ in key and data[key]["choice"]["channels_last"] == choices[2].channels_last

    def no_trial(*a, **k):
        raise AssertionError("the cached choice must be used")

    monkeypatch.setattr(fastpath, "trial", no_trial)
    assert fastpath.choose(model, shape, device) == choices[2]


def test_broken_cache_is_ignored_and_rewritten(cache_home, with_fused):
    model, device = small_model(), torch.device("cpu")
    cache_home.parent.mkdir(parents=True)
    cache_home.write_text("{not json")
    n = len(fastpath.candidates(model, device))
    got = fastpath.choose(model, (1, 3, 16, 32), device, timer=fake_timer([0.5] * (n - 1) + [0.1]))
    assert got == fastpath.candidates(model, device)[-1]
    assert len(json.loads(cache_home.read_text())) == 1
    cache_home.write_text(json.dumps({fastpath.cache_key(model, (1, 3, 16, 32), device): {"choice": {"channels_last": "yes"}}}))
    assert fastpath.choose(model, (1, 3, 16, 32), device, timer=fake_timer([0.1] + [0.5] * (n - 1))) == fastpath.candidates(model, device)[0]


def test_predictor_fast_auto_uses_the_choice(cache_home, monkeypatch):
    from cityseg.infer.predictor import Predictor

    model = small_model()
    pick = fastpath.Choice(channels_last=True, bf16=False, fused=None)
    monkeypatch.setattr(fastpath, "trial", lambda *a, **k: (pick, {pick.label(): 0.1}))
    p = Predictor(model, "labelIds", (16, 32), num_classes=4, fast="auto")
    assert p.fast_choice == pick and p.channels_last and count_batchnorm(p.model) == 0
    image = np.random.default_rng(0).integers(0, 256, (20, 40, 3), dtype=np.uint8)
    ref = Predictor(model, "labelIds", (16, 32), num_classes=4).logits(image)
    torch.testing.assert_close(p.logits(image), ref, rtol=1e-3, atol=1e-4)


# ---- int8 ONNX --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def int8_setup(tmp_path_factory):
    """A tiny SynthCity dataset and a bisenetv2 checkpoint with BN statistics of real activations."""
    from cityseg.data.synth import generate

    pytest.importorskip("onnxruntime")
    work = tmp_path_factory.mktemp("int8")
    generate(work / "synth", train=3, val=1, test=0, size=(64, 128), seed=0)
    torch.manual_seed(0)
    model = build_model("bisenetv2", num_classes=34)
    model.train()
    with torch.no_grad():  # BN statistics of real activations, so logits have realistic margins
        for _ in range(2):
            model(torch.rand(2, 3, 64, 128))
    save_tiny_checkpoint(work / "m.pt", model.eval(), "bisenetv2", (64, 128))
    return work


def save_tiny_checkpoint(path, model, name, size):
    meta = {"model_options": {}, "label_mode": "labelIds", "num_classes": 34, "class_names": list(labels.class_names("labelIds"))}
    save_checkpoint(path, {"model": model.state_dict(), "model_name": name, **meta, "input_size": list(size), "interpolation": "area", "epoch": 1})
    return path


@pytest.mark.slow
def test_int8_export_runs_agrees_and_holds_qdq(int8_setup, capsys):
    from cityseg import io
    from cityseg.data import layout
    from cityseg.infer.predictor import Predictor
    from cityseg.infer.quantize import count_qdq

    work = int8_setup
    args = ["export", "--checkpoint", str(work / "m.pt"), "--exporter", "torchscript", "--no-check"]
    assert main([*args, "--out", str(work / "fp32.onnx")]) == 0
    assert main([*args, "--out", str(work / "int8.onnx"), "--int8", "--calib-data", str(work / "synth"), "--calib-frames", "3"]) == 0
    assert "int8 calibrated on 3 train frame(s)" in capsys.readouterr().out
    q, dq = count_qdq(work / "int8.onnx")
    assert q > 10 and dq > 10
    image = io.read_image(layout.find_samples(work / "synth", "val")[0].image)
    fp32 = Predictor.from_checkpoint(work / "fp32.onnx")
    int8 = Predictor.from_checkpoint(work / "int8.onnx")
    # an untrained model has small class margins, so a loose bound: most pixels keep their class
    assert (fp32.predict(image) == int8.predict(image)).mean() > 0.7


def test_int8_bad_calibration_folder_is_one_line(tmp_path, capsys):
    ckpt = save_tiny_checkpoint(tmp_path / "m.pt", build_model("residual_unet_same", num_classes=34), "residual_unet_same", (32, 64))
    (tmp_path / "empty" / "leftImg8bit" / "train").mkdir(parents=True)
    for bad in (tmp_path / "missing", tmp_path / "empty"):
        code = main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "x.onnx"), "--int8", "--calib-data", str(bad)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and str(bad) in err
    assert not (tmp_path / "x.onnx").exists()
