"""cityseg.models: the seed's parameter counts (outside oracle), Keras details, size rules, fused path,
registry errors, VGG16 weight loading and the generic per-model tests (like smp's BaseModelTester)."""

from __future__ import annotations

import io
import json

import pytest
import torch
from torch import nn

from cityseg.errors import CitysegError
from cityseg.models import build_model, describe, list_models, model_options, set_fused
from cityseg.models.blocks import ConvBNAct, KerasPReLU, StackModule, fused_conv


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def meta_model(name, **options):
    """Built on the meta device: shapes and counts only, no memory or init cost."""
    with torch.device("meta"):
        return build_model(name, **options)


# ---- exact trainable parameter counts at 34 classes, 128x256 (printed by the seed notebooks) --------------
@pytest.mark.parametrize(
    "name, options, expected",
    [
        ("residual_unet", {}, 8_902_834),
        ("residual_unet", {"reduction": 60}, 9_486_154),
        ("segception", {}, 9_357_730),
        ("segception_deep", {}, 13_583_084),
        ("segception_base", {"input_size": (128, 256)}, 44_029_154),
        # variants whose counts the reference states: same weights / the restored BN (+896)
        ("residual_unet_same", {}, 8_902_834),
        ("segception_fixed", {}, 9_358_626),
        # Model B rebuilt for other sizes: alphas scale with H*W
        ("segception_base", {"input_size": (64, 128)}, 43_537_634),
    ],
)
def test_seed_parameter_counts(name, options, expected):
    assert n_params(meta_model(name, num_classes=34, **options)) == expected


def test_vgg16_encoder_matches_keras_and_torchvision_layout():
    features = meta_model("vgg16_unet").features
    assert n_params(features) == 14_714_688
    convs = [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)]
    assert convs == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision vgg16().features
    assert len(features) == 31 and isinstance(features[30], nn.MaxPool2d)


def test_model_a_per_block_counts():
    m = meta_model("residual_unet", reduction=30)
    table = {
        "e1": 11_250,
        "e2": 154_980,
        "r1": 3_630,
        "e3": 252_360,
        "e4": 1_109_160,
        "r2": 7_230,
        "e5": 763_920,
        "e6": 4_435_920,
        "r3": 14_430,
        "d1": 252_360,
        "d2": 1_109_160,
        "r4": 7_230,
        "d3": 93_780,
        "d4": 277_380,
        "d5": 277_380,
        "d6": 130_590,
        "head": 2_074,
    }
    assert {k: n_params(getattr(m, k)) for k in table} == table
    assert isinstance(m.d1.conv5.conv, nn.ConvTranspose2d) and not any(isinstance(x, nn.BatchNorm2d) for x in m.modules())


def test_model_c_and_d_block_counts():
    c = meta_model("segception")
    assert n_params(c.n) + n_params(c.n_red) == 4_798_848  # enc-256
    assert [n_params(s) for s in c.dec128] == [1_262_464, 1_262_464]
    assert all(m.conv3a.bn is None for m in c.dec128)  # the seed's dropped BN is not created
    d = meta_model("segception_deep")
    assert [n_params(level) for level in d.encoder] == [87_924, 123_760, 413_984, 492_592, 1_651_040]
    assert n_params(d.bottleneck) == 5_714_944
    assert n_params(d.up1_red) + n_params(d.up1) == 3_842_952
    assert [n_params(r) + n_params(b) for r, b in zip(d.dec_red, d.dec)] == [511_088, 492_592, 124_062, 123_488]
    assert n_params(d.head) == 4_658


def test_model_b_keras_prelu_alphas():
    m = build_model("segception_base")
    alphas = [p for mod in m.modules() if isinstance(mod, KerasPReLU) for p in mod.parameters()]
    assert [tuple(a.shape) for a in alphas] == [(32, 64, 128), (32, 32, 64), (32, 32, 64), (32, 64, 128)]
    assert sum(a.numel() for a in alphas) == 655_360 and all((a == 0).all() for a in alphas)
    assert not any(isinstance(mod, nn.PReLU) for mod in m.modules())
    with pytest.raises(CitysegError, match=r"segception_base needs exactly the input_size .*128x256.*got 64x128"):
        m.check_input_shape(64, 128)
    with pytest.raises(CitysegError, match="multiples of 4"):
        build_model("segception_base", input_size=(130, 256))


def test_keras_prelu_is_elementwise():
    p = KerasPReLU((1, 2, 2))
    x = torch.tensor([[[[-1.0, 2.0], [-3.0, 4.0]]]])
    assert torch.equal(p(x), torch.tensor([[[[0.0, 2.0], [0.0, 4.0]]]]))  # alpha 0 = ReLU
    with torch.no_grad():
        p.alpha.copy_(torch.tensor([[[0.5, 9.0], [0.1, 9.0]]]))
    assert torch.allclose(p(x), torch.tensor([[[[-0.5, 2.0], [-0.3, 4.0]]]]))


@pytest.mark.parametrize("name", ["residual_unet", "segception", "segception_deep", "segception_base"])
def test_keras_defaults(name):
    m = build_model(name, **({"input_size": (32, 32)} if name == "segception_base" else {}))
    bns = [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]
    assert all(b.momentum == 0.01 and b.eps == 1e-3 for b in bns)
    convs = [x for x in m.modules() if isinstance(x, (nn.Conv2d, nn.ConvTranspose2d))]
    assert convs and all(c.bias is not None and (c.bias == 0).all() for c in convs)
    big = max(convs, key=lambda c: c.weight.numel())  # Glorot uniform: bound sqrt(6 / (fan_in + fan_out))
    # Keras fans: fan_in + fan_out = (in_channels + out_channels) * kernel area, for Conv2D and its transpose
    w = big.weight
    bound = (6 / ((w.shape[0] + w.shape[1]) * w[0, 0].numel())) ** 0.5
    assert big.weight.abs().max() <= bound and big.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)


# ---- input-size rules (the seed networks' own arithmetic), checked against the raw networks --------------------
@pytest.mark.parametrize(
    "name, accepted, rejected",
    [
        ("residual_unet", [(128, 256), (96, 192), (100, 200), (120, 240), (60, 60)], [(130, 258), (56, 112), (62, 64)]),
        ("segception", [(128, 256), (100, 200), (120, 240), (56, 112), (32, 64)], [(130, 258), (30, 32)]),
        ("segception_deep", [(128, 256), (64, 128), (32, 64)], [(100, 200), (120, 240), (130, 258)]),
    ],
)
def test_size_rules_match_the_seed_table(name, accepted, rejected):
    m = build_model(name)
    for h, w in accepted:
        m.check_input_shape(h, w)
    for h, w in rejected:
        with pytest.raises(CitysegError, match=rf"{name} needs H and W multiples of \d+.*; got {h}x{w}"):
            m.check_input_shape(h, w)


@pytest.mark.parametrize("name, good, bad", [("residual_unet", 60, 56), ("segception_deep", 32, 48)])
def test_size_rule_is_tight(name, good, bad, monkeypatch):
    """The rule is the network's own: at a rejected size the unchecked network really breaks."""
    m = build_model(name).eval()
    with torch.no_grad():
        assert m(torch.rand(1, 3, good, good)).shape[-2:] == (good, good)
        monkeypatch.setattr(m, "check_input_shape", lambda h, w: None)
        with pytest.raises(RuntimeError):
            m(torch.rand(1, 3, bad, bad))


def test_same_padding_model_a_runs_where_valid_cannot():
    m = build_model("residual_unet_same").eval()
    with torch.no_grad():
        assert m(torch.rand(1, 3, 8, 12)).shape == (1, 34, 8, 12)
    with pytest.raises(CitysegError, match=r"residual_unet needs H and W multiples of 4 and >= 60; got 8x12"):
        build_model("residual_unet").check_input_shape(8, 12)


# ---- registry ------------------------------------------------------------------------------------
def test_registry_errors():
    assert "residual_unet" in list_models() and "segception_base" in list_models()
    assert all(isinstance(describe(n), str) and "\n" not in describe(n) for n in list_models())
    with pytest.raises(CitysegError, match="unknown model 'unet9'; valid models: residual_unet, "):
        build_model("unet9")
    with pytest.raises(CitysegError, match="has no option 'depth'; valid options: reduction, padding"):
        build_model("residual_unet", depth=3)
    with pytest.raises(CitysegError, match="upsample must be one of nearest, bilinear"):
        build_model("segception", upsample="cubic")
    with pytest.raises(CitysegError, match="num_classes must be a positive integer"):
        build_model("segception", num_classes=0)
    with pytest.raises(CitysegError, match="valid options: input_size, se, upsample"):
        build_model("segception_base", fixed=True)


def test_options_change_the_network():
    base = build_model("segception", num_classes=19)
    assert base.head.out_channels == 19
    se = build_model("segception", se=True)
    assert n_params(se) > 9_357_730 and se.a1.se is not None
    d = build_model("segception_deep_fixed")
    assert d.dec[2][-1].out_channels == 136  # the 32-vs-34 typo fixed
    bil = build_model("residual_unet_same", upsample="bilinear").eval()
    near = build_model("residual_unet_same").eval()
    near.load_state_dict(bil.state_dict())
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(bil(x), near(x))


# ---- fused multi-branch path --------------------------------------------------------------------
@pytest.mark.parametrize("padding, transposed", [("same", False), ("valid", False), ("valid", True)])
def test_fused_conv_equals_separate_convs(padding, transposed):
    torch.manual_seed(0)
    blocks = [ConvBNAct(6, 4, k, padding=padding, transposed=transposed, bn=False, act=False) for k in (5, 3, 1)]
    if not transposed and padding == "same":
        blocks += [ConvBNAct(6, 3, (3, 1), bn=False, act=False), ConvBNAct(6, 2, (1, 3), bn=False, act=False)]
    for b in blocks:
        nn.init.normal_(b.conv.bias)
    x = torch.randn(2, 6, 11, 14)
    for got, b in zip(fused_conv([b.conv for b in blocks], x), blocks):
        want = b.conv(x)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


FUSED_CASES = [("residual_unet", 64), ("residual_unet_same", 16), ("segception", 16), ("segception_deep", 32), ("residual_inception_unet", 16)]


@pytest.mark.parametrize("name, size", FUSED_CASES)
def test_fused_forward_and_backward_equal_unfused(name, size):
    torch.manual_seed(0)
    m = build_model(name).double().train()  # float64: the two paths differ only by summation order
    x = torch.rand(2, 3, size, size, dtype=torch.float64)
    out = {}
    for fused in (False, True):
        set_fused(m, fused)
        calls = []
        hooks = [s.conv3a.conv.register_forward_hook(lambda *a: calls.append(1)) for s in m.modules() if hasattr(s, "conv3a")]
        m.zero_grad()
        y = m(x)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        for h in hooks:
            h.remove()
        assert bool(calls) != fused or name == "residual_inception_unet"  # fused: conv3a not called alone
        out[fused] = (y.detach(), [p.grad.clone() for p in m.parameters()])
    # train-mode BN over tiny deep feature maps amplifies rounding (gradients reach 1e8 in segception_deep),
    # so the tolerance is relative to the largest value of the output / of all gradients
    y1, y0 = out[True][0], out[False][0]
    torch.testing.assert_close(y1, y0, rtol=1e-7, atol=1e-7 * float(y0.abs().max()))
    scale = max(float(g.abs().max()) for g in out[False][1])
    for g1, g0 in zip(out[True][1], out[False][1]):
        torch.testing.assert_close(g1, g0, rtol=1e-7, atol=1e-7 * scale)


# ---- generic tests over every registered model (smp BaseModelTester style) -----------------------
SMALL = {
    "residual_unet": (60, 64),
    "segception_deep": (32, 64),
    "segception_deep_fixed": (32, 64),
    "vgg16_unet": (32, 64),
    "residual_inception_unet": (16, 32),
    "segception_base": (16, 32),
}
BAD = {"residual_unet": (62, 64), "segception_base": (20, 32)}
SLOW_EXPORT = {"segception_base"}


def small_model(name):
    """The model and the smallest size of its rule at or above 16x32 (or the size it is built for)."""
    torch.manual_seed(0)
    options = {"input_size": SMALL[name]} if name == "segception_base" else {}
    model = build_model(name, **options)
    return model, model.valid_size(*SMALL.get(name, (16, 32)))


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_every_parameter_used(name):
    m, (h, w) = small_model(name)
    m.train()
    out = m(torch.rand(2, 3, h, w))
    outputs = out if isinstance(out, dict) else {"out": out}  # training-only heads return a dict
    y = outputs["out"]
    assert y.shape[:2] == (2, 34) and torch.isfinite(y).all()
    assert not torch.allclose(y.softmax(1).sum(1), y.sum(1))  # logits, not probabilities
    for key, v in outputs.items():  # at the input size, or at the head's own stride (the loss resizes)
        stride = h // v.shape[2]
        assert v.shape[0] == 2 and (v.shape[2] * stride, v.shape[3] * stride) == (h, w) and torch.isfinite(v).all(), key
    sum(v.square().mean() for v in outputs.values()).backward()
    dead = [k for k, p in m.named_parameters() if p.grad is None]
    assert not dead, f"parameters outside the forward graph: {dead[:3]}"


@pytest.mark.parametrize("name", list_models())
def test_batch_one_eval_and_bad_size(name):
    m, (h, w) = small_model(name)
    m.eval()
    with torch.no_grad():
        assert m(torch.rand(1, 3, h, w)).shape == (1, 34, h, w)
    bh, bw = BAD.get(name, (h + 2, w))
    with pytest.raises(CitysegError, match=rf"^{m.name} needs .*got {bh}x{bw}$"):
        m(torch.rand(1, 3, bh, bw))
    with pytest.raises(CitysegError, match="expects a Bx3xHxW tensor"):
        m(torch.rand(1, 1, h, w))


@pytest.mark.parametrize("name", list_models())
def test_channels_last_bf16_autocast(name):
    m, (h, w) = small_model(name)
    m = m.eval().to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, h, w).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(x)
    assert y.shape == (2, 34, h, w) and torch.isfinite(y).all()
    assert (y.float() - ref).abs().mean() < 0.1 * ref.abs().mean() + 1e-2


@pytest.mark.parametrize("name", list_models())
def test_state_dict_round_trip(name):
    m, (h, w) = small_model(name)
    m.train()
    with torch.no_grad():
        m(torch.rand(2, 3, h, w))  # move BN running stats away from their init
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    other, _ = small_model(name)
    other.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.rand(1, 3, h, w)
    with torch.no_grad():
        assert torch.equal(m.eval()(x), other.eval()(x))


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_EXPORT else n for n in list_models()])
def test_torch_export(name):
    m, (h, w) = small_model(name)
    m.eval()
    x = torch.rand(2, 3, h, w)
    exported = torch.export.export(m, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), m(x), rtol=1e-4, atol=1e-4)


# ---- VGG16 encoder weights from a local torchvision-style state_dict ----------------------------
# torchvision.models.vgg16().features, written out by hand (torchvision is not a dependency):
# conv index in the Sequential -> (out_channels, in_channels); every conv is 3x3 with a bias.
TORCHVISION_VGG16_CONVS = {
    0: (64, 3),
    2: (64, 64),
    5: (128, 64),
    7: (128, 128),
    10: (256, 128),
    12: (256, 256),
    14: (256, 256),
    17: (512, 256),
    19: (512, 512),
    21: (512, 512),
    24: (512, 512),
    26: (512, 512),
    28: (512, 512),
}


def _vgg_state(classifier=True):
    """A torchvision vgg16 state_dict as ``torch.save(vgg16().state_dict())`` writes it (random values;
    the classifier keys are torchvision's, shrunk: the loader must ignore them)."""
    g = torch.Generator().manual_seed(1)
    state = {}
    for i, (cout, cin) in TORCHVISION_VGG16_CONVS.items():
        state[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g)
        state[f"features.{i}.bias"] = torch.randn(cout, generator=g)
    if classifier:
        for i in (0, 3, 6):
            state[f"classifier.{i}.weight"] = torch.randn(8, 4, generator=g)
            state[f"classifier.{i}.bias"] = torch.randn(8, generator=g)
    return state


def test_vgg16_hand_written_torchvision_layout():
    state = _vgg_state(classifier=False)
    assert sum(v.numel() for v in state.values()) == 14_714_688  # the seed's printed Keras VGG16 count
    own = meta_model("vgg16_unet").features.state_dict()
    assert {f"features.{k}": tuple(v.shape) for k, v in own.items()} == {k: tuple(v.shape) for k, v in state.items()}


def test_vgg16_encoder_weights(tmp_path):
    for classifier in (True, False):
        path = tmp_path / f"vgg16_{classifier}.pth"
        state = _vgg_state(classifier)
        torch.save(state, path)
        m = build_model("vgg16_unet", encoder_weights=str(path))
        for k, v in m.features.state_dict().items():
            assert torch.equal(v, state[f"features.{k}"])
    bad = dict(state)
    bad["features.28.weight"] = torch.randn(512, 256, 3, 3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CitysegError, match=r"bad.pth: features.28.weight has shape \(512, 256, 3, 3\)"):
        build_model("vgg16_unet", encoder_weights=tmp_path / "bad.pth")
    del bad["features.28.weight"]
    torch.save(bad, tmp_path / "missing.pth")
    with pytest.raises(CitysegError, match="missing.pth: incomplete torchvision vgg16 state_dict: missing features.28.weight"):
        build_model("vgg16_unet", encoder_weights=tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CitysegError, match="junk.pth: cannot read encoder weights"):
        build_model("vgg16_unet", encoder_weights=tmp_path / "junk.pth")
    with pytest.raises(CitysegError, match="nope.pth: encoder weights file not found"):
        build_model("vgg16_unet", encoder_weights=tmp_path / "nope.pth")


# ---- `cityseg models` --------------------------------------------------------------------------
def test_models_command_flops_and_json(tmp_path, capsys):
    from cityseg.cli import main
    from cityseg.models import model_info

    out = tmp_path / "models.json"
    assert main(["models", "residual_unet", "segception", "segception_base", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "8,902,834" in text and "9,357,730" in text and "44,029,154" in text
    rows = {r["name"]: r for r in json.loads(out.read_text())["models"]}
    # oracle: 2 * MACs of every conv, summed from the layer shapes with forward hooks
    m = build_model("segception").eval()
    set_fused(m, False)
    macs = []

    def hook(mod, inp, outp):
        macs.append(outp.numel() * mod.in_channels * mod.weight[0, 0].numel() // mod.groups)

    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            mod.register_forward_hook(hook)
    with torch.no_grad():
        m(torch.rand(1, 3, 128, 256))
    assert rows["segception"]["gflops"] == pytest.approx(2 * sum(macs) / 1e9, rel=1e-6)
    assert rows["residual_unet"]["params"] == 8_902_834 and rows["segception_base"]["note"] == ""
    assert model_info("segception_base", (64, 128))["note"] == "built with input_size=64x128"
    assert model_info("segception_deep", (100, 200))["size"] == [128, 224]
    assert main(["models", "nonet"]) == 2
    assert "unknown model 'nonet'" in capsys.readouterr().err


def test_stack_module_concat_order():
    s = StackModule(3, 2, bn=False, padding="same")
    x = torch.rand(1, 3, 8, 8)
    y = s(x)
    torch.testing.assert_close(y[:, :2], s.conv5(x))  # [5x5 branch, 3x3 chain]
    torch.testing.assert_close(y[:, 2:], s.conv3b(s.conv3a(x)))


# ---- Keras upsampling / pooling, the fixed variants, option variants, the designed networks ------
def test_keras_nearest_upsampling_and_floor_pooling():
    from cityseg.models.blocks import max_pool, upsample

    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).view(2, 3, 5, 7)
    # UpSampling2D(): every value repeated into a 2x2 block
    torch.testing.assert_close(upsample(x), x.repeat_interleave(2, -2).repeat_interleave(2, -1), rtol=0, atol=0)
    # MaxPool2D(): 2x2 stride 2, the odd last row/column dropped (floor)
    want = x[..., :4, :6].reshape(2, 3, 2, 2, 3, 2).amax((3, 5))
    torch.testing.assert_close(max_pool(x), want, rtol=0, atol=0)
    # every model with the seed's upsample option defaults to nearest; 'bilinear' is the opt-in improvement
    for name in list_models():
        m = meta_model(name, **({"input_size": (32, 32)} if name == "segception_base" else {}))
        if "upsample" in model_options(name):
            assert m.upsample_mode == "nearest", name


def test_segception_deep_fixed_count_and_level5_skip():
    # the seed's formulas: block 4's last deep stack 32 -> 34 filters
    # (34*cin*f + 15*f^2 + 15*f with cin 34: +4,322) and block 5's reduction reads 136, not 128 channels (+8*34)
    assert n_params(meta_model("segception_deep_fixed")) == 13_583_084 + 4_322 + 8 * 34
    for name, uses_skip in (("segception_deep", False), ("segception_deep_fixed", True)):
        torch.manual_seed(0)
        m = build_model(name).eval()
        seen = {}
        m.encoder[4].register_forward_hook(lambda mod, i, o: seen.__setitem__("skip5", o))
        m.up1_red.register_forward_hook(lambda mod, i, o: seen.__setitem__("red", o))
        m.up1.register_forward_pre_hook(lambda mod, i: seen.__setitem__("into", i[0]))
        with torch.no_grad():
            m(torch.rand(1, 3, 64, 64))
        expect = seen["red"] + seen["skip5"] if uses_skip else seen["red"]
        torch.testing.assert_close(seen["into"], expect, rtol=0, atol=0)


def test_segception_fixed_restores_the_inverse_bn():
    fixed = meta_model("segception_fixed")
    inverse = [*fixed.dec128, fixed.dec64[1], fixed.dec64[3], fixed.d32a, fixed.d32b]
    assert len(inverse) == 6 and all(isinstance(s.conv3a.bn, nn.BatchNorm2d) for s in inverse)


OPTION_VARIANTS = [
    ("residual_unet", {"se": True, "upsample": "bilinear"}, (60, 64)),
    ("residual_unet_same", {"se": True}, (12, 20)),
    ("segception", {"se": True, "upsample": "bilinear"}, (16, 32)),
    ("segception_fixed", {"se": True}, (16, 32)),
    ("segception_deep_fixed", {"se": True, "upsample": "bilinear"}, (32, 64)),
    ("segception_base", {"se": True, "upsample": "bilinear", "input_size": (16, 32)}, (16, 32)),
    ("vgg16_unet", {"upsample": "bilinear"}, (32, 64)),
    ("residual_inception_unet", {"upsample": "bilinear", "base": 8}, (16, 48)),
]


@pytest.mark.parametrize("name, options, size", OPTION_VARIANTS, ids=[f"{n}-{'-'.join(o)}" for n, o, _ in OPTION_VARIANTS])
def test_option_variants_forward_backward(name, options, size):
    from cityseg.models.blocks import SqueezeExciteReLU

    torch.manual_seed(0)
    m = build_model(name, num_classes=19, **options).train()
    h, w = size
    y = m(torch.rand(3, 3, h, w))
    assert y.shape == (3, 19, h, w) and torch.isfinite(y).all()
    y.square().mean().backward()
    assert not [k for k, p in m.named_parameters() if p.grad is None]
    n_se = sum(isinstance(x, SqueezeExciteReLU) for x in m.modules())
    stacks = [x for x in m.modules() if hasattr(x, "se") and hasattr(x, "out_channels")]
    assert n_se == (len(stacks) if options.get("se") else 0) and (n_se > 0) == bool(options.get("se"))


@pytest.mark.parametrize("size", [(4, 4), (12, 20), (36, 100), (8, 1028)])
def test_same_padding_model_a_any_multiple_of_its_stride(size):
    m = build_model("residual_unet_same").eval()
    with torch.no_grad():
        assert m(torch.rand(1, 3, *size)).shape == (1, 34, *size)
    for bad in ((size[0] + 2, size[1]), (size[0], size[1] + 1)):
        with pytest.raises(CitysegError, match=r"residual_unet_same needs H and W multiples of 4; got"):
            m.check_input_shape(*bad)


def test_residual_inception_block_is_inception_plus_true_residual():
    from cityseg.models.residual_inception_unet import InceptionResBlock

    torch.manual_seed(0)
    for cin, cout in ((8, 8), (5, 8)):
        b = InceptionResBlock(cin, cout).eval()
        for bn in (m for m in b.modules() if isinstance(m, nn.BatchNorm2d)):  # non-trivial BN statistics
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
        x = torch.randn(2, cin, 9, 11)
        with torch.no_grad():
            branches = [b.branch1(x), b.branch3(x), b.branch5(x)]  # 1x1, 3x3, 5x5 of the block input
            assert [br.conv.kernel_size for br in (b.branch1, b.branch3, b.branch5)] == [(1, 1), (3, 3), (5, 5)]
            inner = b.reduce(torch.cat(branches, 1))  # concatenated, then a 1x1 reduction
            shortcut = x if cin == cout else b.shortcut(x)  # identity, or a 1x1 projection when widths differ
            torch.testing.assert_close(b(x), torch.relu(inner + shortcut), rtol=1e-5, atol=1e-5)
        assert (b.shortcut is None) == (cin == cout) and b.reduce.conv.kernel_size == (1, 1)
    m = meta_model("residual_inception_unet")
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert all(c.padding == (c.kernel_size[0] // 2, c.kernel_size[1] // 2) for c in convs)  # same padding
    assert sum(isinstance(x, nn.BatchNorm2d) for x in m.modules()) == len(convs) - 1  # BN after all but the head
    # decoder: upsampled features concatenated with the encoder skip (base 24: 384 + 192 channels)
    assert m.decoder[0][0].branch1.conv.in_channels == 24 * 16 + 24 * 8


def test_vgg16_unet_decoder_concatenates_skips():
    m = meta_model("vgg16_unet")
    widths = [(blk.conv1.conv.in_channels, blk.conv1.conv.out_channels) for blk in m.decoder]
    assert widths == [(512 + 512, 256), (256 + 512, 128), (128 + 256, 64), (64 + 128, 32), (32 + 64, 16)]
    assert not any(isinstance(x, nn.BatchNorm2d) for x in m.features)  # plain vgg16, not vgg16_bn


@pytest.mark.parametrize("name", [n for n, _ in FUSED_CASES])
def test_multi_branch_blocks_run_per_branch_by_default(name):
    """The fused path is opt-in: it was measured slower (zero-padded kernels cost more MACs than it saves)."""
    from cityseg.models.blocks import ParallelBlock

    blocks = [m for m in build_model(name).modules() if isinstance(m, ParallelBlock)]
    assert blocks and not any(b.fused for b in blocks)
    assert all(b.fused for b in set_fused(build_model(name), True).modules() if isinstance(b, ParallelBlock))
