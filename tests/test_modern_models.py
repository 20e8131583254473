"""The seed's "future work" models: SegFormer-B0/B1, EfficientNet-B0 U-Net, Model A with bottleneck
self-attention. Parameter counts against the published figures, size rules, train/eval forward and
backward, bf16 autocast, channels_last, encoder weights in the public key layouts, MACs, ONNX."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cityseg.errors import CitysegError
from cityseg.models.base import FULL_RES_MODES
from cityseg.models.efficientnet_unet import EfficientNetUNet
from cityseg.models.residual_unet import ResidualUNet
from cityseg.models.residual_unet_attn import BottleneckAttention, ResidualUNetAttn, sinusoidal_2d
from cityseg.models.segformer import SegFormerB0, SegFormerB1

FAST = [SegFormerB0, EfficientNetUNet, ResidualUNetAttn]  # one per design for the heavier checks
TRAIN_STRIDE = {SegFormerB0: 4}  # in training SegFormer's logits leave at 1/4 (the loss resizes them)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def meta(cls, **kw):
    with torch.device("meta"):
        return cls(**kw)


def macs(cls, h: int, w: int) -> int:
    """Multiply-accumulates of one eval forward (FLOPs = 2 x MACs). Counted on the meta device, where
    ``scaled_dot_product_attention`` decomposes into matmuls the counter sees (on CPU tensors it runs a
    fused kernel the counter does not count)."""
    model = meta(cls).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.empty(1, 3, h, w, device="meta"))
    return counter.get_total_flops() // 2


# ---- parameter counts: exact measured values, and within 5 % of the published figures --------
@pytest.mark.parametrize(
    "cls, part, total, encoder, published, published_what",
    [
        # SegFormer paper Table 1 / official code: B0 3.8 M (mmseg model zoo 3.72 M), B1 13.7 M, 19 classes
        (SegFormerB0, "backbone", 3_719_027, 3_319_392, 3.8e6, "total"),
        (SegFormerB1, "backbone", 13_682_131, 13_151_424, 13.7e6, "total"),
        # EfficientNet paper Table 2 / torchvision: B0 5.3 M with its classifier, ~4.0 M without
        (EfficientNetUNet, "encoder", 8_453_167, 4_007_548, 4.0e6, "encoder"),
    ],
)
def test_parameter_counts(cls, part, total, encoder, published, published_what):
    model = meta(cls, num_classes=19)
    assert n_params(model) == total
    assert n_params(getattr(model, part)) == encoder
    measured = total if published_what == "total" else encoder
    assert abs(measured - published) / published < 0.05


def test_segformer_matches_the_official_layout():
    m = meta(SegFormerB0)
    keys = set(m.backbone.state_dict())
    for k in (
        "patch_embed1.proj.weight",
        "patch_embed1.norm.weight",
        "block1.0.attn.q.weight",
        "block1.0.attn.kv.weight",
        "block1.0.attn.sr.weight",
        "block1.0.attn.norm.bias",
        "block1.0.mlp.dwconv.dwconv.weight",
        "block4.1.mlp.fc2.bias",
        "norm4.weight",
    ):
        assert k in keys
    assert not any(k.startswith("block4.") and ".attn.sr." in k for k in keys)  # sr ratio 1 at 1/32
    assert m.backbone.block1[0].norm1.eps == 1e-6 and m.backbone.patch_embed1.norm.eps == 1e-5
    assert [len(getattr(m.backbone, f"block{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert m.backbone.block4[1].drop_path.p == pytest.approx(0.1)
    assert {k.split(".")[0] for k in m.decode_head.state_dict()} == {"linear_c1", "linear_c2", "linear_c3", "linear_c4", "linear_fuse", "linear_pred"}


def test_efficientnet_b0_with_its_classifier_is_the_published_size():
    encoder = meta(EfficientNetUNet).encoder
    with_classifier = n_params(encoder) + 1280 * 1000 + 1000  # torchvision's classifier.1 Linear
    assert with_classifier == 5_288_548 and abs(with_classifier - 5.3e6) / 5.3e6 < 0.05
    assert [len(s) for s in encoder.blocks] == [1, 2, 2, 3, 3, 4, 1]
    assert encoder.blocks[1][0].se.conv_reduce.out_channels == 4  # squeeze = block input (16) / 4
    assert encoder.blocks[6][0].drop_path.p == 0.0  # no shortcut, nothing to drop
    assert encoder.blocks[5][3].drop_path.p == pytest.approx(0.2 * 14 / 16)


def model_a_same(**kw):
    return ResidualUNet(num_classes=19, padding="same", **kw)


def test_attention_adds_to_model_a():
    """Model A (same padding) + one attention block: +124,512 params (+1.4 %), +0.79 GMACs at 128x256."""
    a, m = meta(model_a_same), meta(ResidualUNetAttn)
    assert (n_params(a), n_params(m), n_params(m.e6.attn)) == (8_901_919, 9_026_431, 124_512)
    assert n_params(meta(ResidualUNet, padding="same")) == 8_902_834  # the seed's count, 34 classes
    assert (macs(model_a_same, 128, 256), macs(ResidualUNetAttn, 128, 256)) == (46_586_265_600, 47_374_794_752)
    assert isinstance(m.e6, type(a.e6)) and m.name == "residual_unet_attn" and m.full_res_mode == "slide"


def test_attention_starts_as_model_a_and_loads_its_weights(tmp_path):
    torch.manual_seed(0)
    a = model_a_same().eval()
    for p in a.parameters():  # non-zero biases too, so a skipped tensor would show
        nn.init.normal_(p, std=0.05)
    path = tmp_path / "model_a.pt"
    torch.save({"model": a.state_dict(), "model_name": "residual_unet_same"}, path)  # a cityseg checkpoint
    m = ResidualUNetAttn(num_classes=19, encoder_weights=path).eval()
    m.head.load_state_dict(a.head.state_dict())  # the classifier is not loaded (class counts may differ)
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(m(x), a(x), rtol=0, atol=0)  # zero-initialised output projection
        nn.init.normal_(m.e6.attn.out.weight, std=0.05)
        assert not torch.allclose(m(x), a(x))
    torch.save({k: v for k, v in a.state_dict().items() if not k.startswith("d6.")}, path)
    with pytest.raises(CitysegError, match=r"model_a\.pt: incomplete cityseg residual_unet_same .*missing d6\."):
        ResidualUNetAttn(encoder_weights=path)


def test_position_encoding_is_relative_and_size_free():
    pe = sinusoidal_2d(6, 10, 480)
    assert pe.shape == (60, 480) and pe.abs().max() <= 1
    assert torch.equal(sinusoidal_2d(3, 4, 480).reshape(3, 4, 480), pe.reshape(6, 10, 480)[:3, :4])
    dots = pe @ pe.T  # the position term of q.k depends on the offset only
    grid = dots.reshape(6, 10, 6, 10)
    torch.testing.assert_close(grid[0, 0, 2, 3], grid[3, 5, 5, 8])
    torch.testing.assert_close(grid[1, 1, 1, 7], grid[4, 2, 4, 8])


@pytest.mark.parametrize("cls, expected", [(SegFormerB0, 866_025_472), (SegFormerB1, 1_688_535_040), (EfficientNetUNet, 1_511_468_544)])
def test_macs_at_128x256(cls, expected):
    assert macs(cls, 128, 256) == expected


# ---- size rule, forward and backward ----------------------------------------------------------
SIZES = {SegFormerB0: [(32, 64), (64, 32), (96, 160)], EfficientNetUNet: [(32, 64), (64, 32), (96, 160)], ResidualUNetAttn: [(8, 12), (36, 20), (32, 48)]}
BAD = {SegFormerB0: [(48, 64), (64, 40), (16, 32)], EfficientNetUNet: [(48, 64), (64, 40), (16, 32)], ResidualUNetAttn: [(30, 64), (64, 62), (2, 4)]}


@pytest.mark.parametrize("cls", FAST, ids=lambda c: c.name)
def test_forward_backward_at_several_sizes(cls):
    torch.manual_seed(0)
    model = cls(num_classes=5)
    s = TRAIN_STRIDE.get(cls, 1)
    for h, w in SIZES[cls]:
        model.train()
        x = torch.rand(2, 3, h, w, requires_grad=True)
        y = model(x)
        assert y.shape == (2, 5, h // s, w // s)
        y.square().mean().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        model.eval()
        with torch.no_grad():
            assert model(x[:1]).shape == (1, 5, h, w)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("cls", FAST, ids=lambda c: c.name)
def test_size_rule_errors(cls):
    model = meta(cls)
    for h, w in SIZES[cls]:
        model.check_input_shape(h, w)
    rule = re.escape(model.size_rule())
    for h, w in BAD[cls]:
        with pytest.raises(CitysegError, match=rf"{cls.name} needs {rule}; got {h}x{w}"):
            model.check_input_shape(h, w)
    with pytest.raises(CitysegError, match="expects a Bx3xHxW tensor"):
        cls()(torch.rand(1, 1, 64, 64))
    assert model.full_res_mode in FULL_RES_MODES


@pytest.mark.parametrize("cls", FAST, ids=lambda c: c.name)
def test_bf16_autocast_and_channels_last(cls):
    torch.manual_seed(0)
    model = cls(num_classes=4).train().to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 64, 96).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    s = TRAIN_STRIDE.get(cls, 1)
    assert y.dtype == torch.bfloat16 and y.shape == (2, 4, 64 // s, 96 // s) and torch.isfinite(y).all()
    y.float().logsumexp(1).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x.contiguous()), rtol=1e-4, atol=1e-4)


# ---- encoder weights in the public key layouts ------------------------------------------------
def _official_to_hf(state: dict, depths=(2, 2, 2, 2)) -> dict:
    """The Hugging Face conversion (``convert_segformer_original_to_pytorch.py``): renames, kv split."""
    out = {}
    for key, v in state.items():
        if key.startswith("head."):
            out["classifier." + key[5:]] = v
            continue
        key = "segformer.encoder." + key
        key = re.sub(r"patch_embed(\d)", lambda m: f"patch_embeddings.{int(m[1]) - 1}", key)
        key = key.replace("norm", "layer_norm")
        key = re.sub(r"encoder\.layer_norm(\d)", lambda m: f"encoder.layer_norm.{int(m[1]) - 1}", key)
        key = key.replace("layer_norm1", "layer_norm_1").replace("layer_norm2", "layer_norm_2")
        key = re.sub(r"block(\d)", lambda m: f"block.{int(m[1]) - 1}", key)
        key = key.replace("attn.q", "attention.self.query").replace("attn.proj", "attention.output.dense")
        key = key.replace("attn", "attention.self").replace("fc1", "dense1").replace("fc2", "dense2")
        if key.endswith(("kv.weight", "kv.bias")):
            k, v2 = v.chunk(2, 0)
            out[key.replace(".kv.", ".key.")], out[key.replace(".kv.", ".value.")] = k, v2
        else:
            out[key] = v
    return out


def _randomised(model: nn.Module) -> dict:
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn_like(t))
    return model.state_dict()


@pytest.mark.parametrize("layout", ["official", "hf"])
def test_segformer_encoder_weights_round_trip(layout, tmp_path):
    torch.manual_seed(0)
    src = SegFormerB0().backbone
    state = dict(_randomised(src))
    state["head.weight"], state["head.bias"] = torch.randn(1000, 256), torch.randn(1000)  # ImageNet head
    if layout == "hf":
        state = _official_to_hf(state)
        assert "segformer.encoder.block.0.0.attention.self.key.weight" in state
    path = tmp_path / "mit_b0.pth"
    torch.save(state, path)
    model = SegFormerB0(num_classes=19, encoder_weights=path)
    for k, v in src.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[k], v, rtol=0, atol=0)


# timm MBConv module -> torchvision ``block.i[.j]`` (expand, depthwise, SE, project; no expand in stage 1)
TV_EXPAND = {"conv_pw": "0.0", "bn1": "0.1", "conv_dw": "1.0", "bn2": "1.1", "se": "2", "conv_pwl": "3.0", "bn3": "3.1"}
TV_DW = {"conv_dw": "0.0", "bn1": "0.1", "se": "1", "conv_pw": "2.0", "bn2": "2.1"}
TV_TOP = {"conv_stem": "features.0.0", "bn1": "features.0.1", "conv_head": "features.8.0", "bn2": "features.8.1", "classifier": "classifier.1"}


def _timm_to_torchvision(state: dict) -> dict:
    """torchvision's ``efficientnet_b0`` layout, written from its module structure."""
    out = {}
    for key, v in state.items():
        head, _, rest = key.partition(".")
        if head in TV_TOP:
            out[f"{TV_TOP[head]}.{rest}"] = v
            continue
        s, b, name, tail = rest.split(".", 3)
        tail = tail.replace("conv_reduce.", "fc1.").replace("conv_expand.", "fc2.")
        out[f"features.{int(s) + 1}.{b}.block.{(TV_DW if s == '0' else TV_EXPAND)[name]}.{tail}"] = v
    return out


@pytest.mark.parametrize("layout", ["timm", "torchvision"])
def test_efficientnet_encoder_weights_round_trip(layout, tmp_path):
    torch.manual_seed(0)
    src = EfficientNetUNet().encoder
    state = dict(_randomised(src))
    state["classifier.weight"], state["classifier.bias"] = torch.randn(1000, 1280), torch.randn(1000)
    if layout == "torchvision":
        state = _timm_to_torchvision(state)
        for k in (
            "features.0.0.weight",
            "features.1.0.block.0.0.weight",
            "features.1.0.block.1.fc1.weight",
            "features.1.0.block.2.1.running_var",
            "features.2.0.block.0.0.weight",
            "features.2.0.block.1.0.weight",
            "features.2.0.block.2.fc2.bias",
            "features.7.0.block.3.1.weight",
            "features.8.1.running_mean",
            "classifier.1.weight",
        ):
            assert k in state, k
    path = tmp_path / "efficientnet_b0.pth"
    torch.save(state, path)
    model = EfficientNetUNet(encoder_weights=path)
    for k, v in src.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[k], v, rtol=0, atol=0)


def test_encoder_weights_errors(tmp_path):
    with pytest.raises(CitysegError, match=r"nope\.pth: encoder weights file not found"):
        SegFormerB0(encoder_weights=tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CitysegError, match=r"bad\.pth: cannot read encoder weights"):
        SegFormerB0(encoder_weights=bad)
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3)}, other)
    with pytest.raises(CitysegError, match=r"other\.pth: not a .*state_dict \(no encoder key matches"):
        SegFormerB0(encoder_weights=other)
    b1 = tmp_path / "mit_b1.pth"
    torch.save(SegFormerB1().backbone.state_dict(), b1)
    with pytest.raises(CitysegError, match=r"mit_b1\.pth: patch_embed1\.proj\.weight has shape \(64, 3, 7, 7\)"):
        SegFormerB0(encoder_weights=b1)
    part = tmp_path / "part.pth"
    torch.save({k: v for k, v in SegFormerB0().backbone.state_dict().items() if not k.startswith("norm4")}, part)
    with pytest.raises(CitysegError, match=r"part\.pth: incomplete .*missing norm4\.weight"):
        SegFormerB0(encoder_weights=part)


# ---- ONNX ---------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("cls", FAST, ids=lambda c: c.name)
def test_onnx_export_matches_pytorch(cls, tmp_path):
    from conftest import check_onnx_parity

    torch.manual_seed(0)
    model = cls(num_classes=19)
    for m in model.modules():  # the attention's zero-initialised output would hide it from the comparison
        if isinstance(m, BottleneckAttention):
            nn.init.normal_(m.out.weight, std=0.05)
    check_onnx_parity(model, tmp_path / "model.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lite0_fpn", "lite0_unet", "lite0_lraspp"])
def test_lite_onnx_export_matches_pytorch(name, tmp_path):
    """The pretrained Lite models (TF "SAME" padding, the input map) export and run as in PyTorch."""
    from cityseg.models import build_model
    from conftest import check_onnx_parity

    graph = check_onnx_parity(build_model(name, num_classes=19), tmp_path / "model.onnx")
    assert len(graph.output) == 1
