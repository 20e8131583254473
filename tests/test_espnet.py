"""ESPNet, ESPNet-C and ESPNetv2: sizes against the authors' Cityscapes checkpoints, the void output,
the size rules and the structure the papers describe."""

from __future__ import annotations

import pytest
import torch

from cityseg.errors import CitysegError
from cityseg.models import build_model
from cityseg.models.registry import count_params

# Trainable parameters of the authors' files (sacmehta/ESPNet ``pretrained/``, sacmehta/EdgeNets
# ``model/segmentation/model_zoo/espnetv2/*_city_1024x512.pth``), summed over their tensors without
# the BN running statistics; all are Cityscapes models with 20 outputs (19 classes + void).
OFFICIAL = [
    ("espnet", {"p": 2, "q": 3}, 202_649),
    ("espnet", {"p": 2, "q": 5}, 267_417),
    ("espnet", {"p": 2, "q": 8}, 364_569),
    ("espnet_c", {"p": 2, "q": 3}, 187_529),
    ("espnet_c", {"p": 2, "q": 8}, 349_449),
]
# EdgeNets files hold three PReLUs their forward never reads (the strided EESP of each downsampler
# returns before its ``module_act``: c2 - c1, c3 - c2, c4 - c3 channels); the model omits them.
OFFICIAL_V2 = {0.5: (80_342, 16, 128), 1.0: (234_010, 32, 256), 1.5: (468_362, 32, 384), 2.0: (789_242, 32, 512)}


@pytest.mark.parametrize("name, options, expected", OFFICIAL, ids=lambda v: str(v))
def test_espnet_counts_match_the_official_checkpoints(name, options, expected):
    with torch.device("meta"):
        model = build_model(name, num_classes=19, void=True, **options)
    assert count_params(model) == expected


@pytest.mark.parametrize("s", list(OFFICIAL_V2))
def test_espnetv2_counts_match_the_official_checkpoints(s):
    in_file, c1, c4 = OFFICIAL_V2[s]
    with torch.device("meta"):
        model = build_model("espnetv2", num_classes=19, void=True, s=s)
    assert count_params(model) == in_file - (c4 - c1)


def test_espnetv2_s2_is_the_published_size():
    with torch.device("meta"):
        model = build_model("espnetv2", num_classes=19, void=True, s=2.0)
    assert abs(count_params(model) / 0.79e6 - 1) < 0.01  # model-zoo README: 0.79 M


@pytest.mark.parametrize("name, size", [("espnet", (24, 40)), ("espnet_c", (24, 40)), ("espnetv2", (32, 48))])
def test_void_adds_one_output_and_flags_the_model(name, size):
    torch.manual_seed(0)
    plain, void = build_model(name, num_classes=19).eval(), build_model(name, num_classes=19, void=True).eval()
    assert not plain.void_class and void.void_class
    with torch.no_grad():
        assert void(torch.rand(1, 3, *size)).shape == (1, 20, *size)
        assert plain(torch.rand(1, 3, *size)).shape == (1, 19, *size)


def test_size_rules():
    assert build_model("espnet").accepts(8, 16) and not build_model("espnet").accepts(12, 16)
    assert build_model("espnetv2").accepts(16, 32) and not build_model("espnetv2").accepts(24, 32)
    with pytest.raises(CitysegError, match="s must be one of"):
        build_model("espnetv2", s=0.75)
    with pytest.raises(CitysegError, match="at least 5 outputs"):
        build_model("espnet", num_classes=3)


def test_esp_module_sums_the_dilated_branches_hierarchically():
    """Paper, Fig. 1c: the branch of rate 2^k is the sum of the branches of rates 2 .. 2^k."""
    from cityseg.models.espnet import ESP

    torch.manual_seed(0)
    esp = ESP(10, 10, residual=False).eval()
    x = torch.rand(1, 10, 12, 12)
    with torch.no_grad():
        y = esp.c1(x)
        branches = [conv(y) for conv in esp.dilated]
        expected = torch.cat([esp.d1(y), *(sum(branches[: i + 1]) for i in range(4))], 1)
        torch.testing.assert_close(esp(x), esp.br(expected))
    assert [conv.dilation[0] for conv in esp.dilated] == [2, 4, 8, 16]


@pytest.mark.parametrize("s, published", [(0.5, 597.56), (1.0, 1086.59), (1.5, 1714.57), (2.0, 2699.05)])
def test_espnetv2_macs_match_the_model_zoo(s, published):
    """EdgeNets model-zoo README, Cityscapes at 1024x512: "FLOPs (in million)", which are multiply-adds."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build_model("espnetv2", num_classes=19, void=True, s=s).eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, 3, 512, 1024))
    assert counter.get_total_flops() / 2e6 == pytest.approx(published, rel=0.01)


def test_espnet_trains_on_the_bf16_fast_path_with_finite_gradients():
    """The fast path's training layout for ESPNet (``runtime.train_channels_last``) gives finite gradients
    under bf16 autocast at the demo's 256x512 crop: in channels_last, oneDNN's bf16 weight gradient of its
    25-channel dilated convs at 32x64 is non-finite on CPUs with native bf16, and training stopped at its
    first step."""
    import torch.nn.functional as F

    from cityseg.runtime import train_channels_last

    torch.manual_seed(0)
    model = build_model("espnet", num_classes=19).train()
    x, y = torch.randn(2, 3, 256, 512), torch.randint(0, 19, (2, 256, 512))
    assert train_channels_last(build_model("espnetv2", num_classes=19), True)  # the others keep the fast layout
    if train_channels_last(model, True):
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    F.cross_entropy(out.float(), y).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
