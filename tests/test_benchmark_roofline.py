"""The benchmark's roofline figures (bytes, FLOPs, attainable rate, layer types), the memory bandwidth, the
training data-path section and the fast-path choice table: hand-computed cases, no wall-clock assertions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cityseg.tools.benchmark import report
from cityseg.tools.benchmark.machine import memory_bandwidth
from cityseg.tools.benchmark.profile import layer_category
from cityseg.tools.benchmark.roofline import attainable_gflops, by_category, count_traffic, layerwise_seconds, roofline_position


def tiny_net() -> nn.Module:
    """3x3 conv 2->4 (no bias), ReLU, identity, depthwise 3x3 conv on 4 channels (bias), 1x1 conv 4->3."""
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Identity(), nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(4, 3, 1, bias=False)
    )


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_traffic_of_a_hand_computed_net(device):
    net = tiny_net().to(device)
    x = torch.zeros(1, 2, 5, 6, device=device)
    t = count_traffic(net, x, itemsize=4)
    hw = 5 * 6
    # elements read + written per leaf (the identity moves nothing), then the weights (and the bias)
    acts = (2 * hw + 4 * hw) + (4 * hw + 4 * hw) + (4 * hw + 4 * hw) + (4 * hw + 3 * hw)
    weights = 4 * 2 * 9 + (4 * 9 + 4) + 3 * 4
    assert t["activation_bytes"] == 4 * acts and t["weight_bytes"] == 4 * weights
    assert t["bytes"] == 4 * (acts + weights)
    # FLOPs: 2 per multiply-add of each conv (the bias and the ReLU are not counted)
    flops = {"conv dense kxk": 2 * 4 * hw * 2 * 9, "conv depthwise": 2 * 4 * hw * 9, "conv 1x1": 2 * 3 * hw * 4}
    assert t["flops"] == sum(flops.values()) and t["unattributed_flops"] == 0
    cats = [c for c, _, _ in t["layers"]]
    assert cats == ["conv dense kxk", "norm / activation / element-wise", "conv depthwise", "conv 1x1"]
    assert {c: f for c, f, _ in t["layers"] if f} == flops
    half = count_traffic(net, x, itemsize=2)  # bf16: every element counts 2 bytes
    assert half["bytes"] == t["bytes"] / 2 and half["flops"] == t["flops"]


def test_attainable_rate_is_the_roofline():
    assert attainable_gflops(2.0, 100.0, 30.0) == 60.0  # left of the ridge: bandwidth-bound
    assert attainable_gflops(10.0, 100.0, 30.0) == 100.0  # right of it: the compute roof
    pos = roofline_position(flops=2e9, nbytes=1e9, seconds=0.1, compute_gflops=100.0, bandwidth_gb_s=30.0)
    assert pos["intensity"] == 2.0 and pos["bytes_per_flop"] == 0.5 and pos["achieved_gflop_s"] == pytest.approx(20.0)
    assert pos["attainable_gflop_s"] == 60.0 and pos["bound"] == "memory"
    assert pos["compute_fraction"] == pytest.approx(0.2) and pos["attainable_fraction"] == pytest.approx(20 / 60)
    assert pos["ridge_intensity"] == pytest.approx(100 / 30)


def test_layerwise_bound_sums_each_layers_own_roof():
    # a compute-bound layer (1 GFLOP, 1 MB) and a memory-bound one (1 MFLOP, 300 MB) on 100 GFLOP/s, 30 GB/s
    layers = [("conv dense kxk", 1e9, 1e6), ("conv depthwise", 1e6, 3e8)]
    assert layerwise_seconds(layers, 0.0, 100.0, 30.0) == pytest.approx(0.01 + 0.01)
    assert layerwise_seconds(layers, 2e9, 100.0, 30.0) == pytest.approx(0.02 + 0.02)  # glue FLOPs at the roof
    cats = by_category(layers, 100.0, 30.0)
    assert cats["conv depthwise"]["memory_bound_share"] == 1.0 and cats["conv dense kxk"]["memory_bound_share"] == 0.0
    assert cats["conv depthwise"]["intensity"] == pytest.approx(1e6 / 3e8)


@pytest.mark.parametrize(
    "name, shapes, category",
    [
        ("aten::mkldnn_convolution", [[1, 32, 8, 8], [32, 1, 3, 3], [32]], "conv depthwise"),
        ("aten::convolution", [[1, 32, 8, 8], [32, 8, 3, 3], []], "conv grouped"),
        ("aten::conv2d", [[1, 32, 8, 8], [64, 32, 1, 1]], "conv 1x1"),
        ("aten::mkldnn_convolution", [[1, 32, 8, 8], [64, 32, 3, 3], [64]], "conv dense kxk"),
        ("aten::upsample_bilinear2d", [[1, 32, 8, 8]], "resize"),
        ("aten::relu_", [[1, 32, 8, 8]], "norm / activation / element-wise"),
        ("aten::native_layer_norm", [[1, 64, 32]], "norm / activation / element-wise"),
        ("aten::bmm", [[1, 64, 32], [1, 32, 64]], "matmul / attention"),
    ],
)
def test_profiler_ops_fall_into_layer_types(name, shapes, category):
    assert layer_category(name, shapes) == category


def test_memory_bandwidth_is_measured():
    bw = memory_bandwidth(torch.device("cpu"), mib=8, iters=1)
    assert set(bw) == {"copy", "add"} and all(v > 0 for v in bw.values())


def test_augment_loader_reports_every_step(tiny_root):
    from cityseg.tools.benchmark.augment import augment_loader

    got = augment_loader(tiny_root, "train", (16, 16), workers=(0,), images=4, batch=2, recipe="standard")
    assert got["crop"] == [16, 16] and got["frames"] == 3 and got["img_s_by_workers"]["0"] > 0
    assert list(got["step_ms"]) == ["read cache", "RandomScaleCrop", "RandomHorizontalFlip", "PhotometricJitter", "to tensor + normalise"]
    assert all(v >= 0 for v in got["step_ms"].values())


def _result(models: dict) -> dict:
    return {"roof_gflops": {"fp32": 100.0, "bf16": 400.0}, "memory_bandwidth_gb_s": {"copy": 30.0, "add": 32.0}, "device": "cpu: test", "models": models}


def test_markdown_shows_the_pick_next_to_the_best_alternative():
    m = {
        "infer_variants_img_s": {"NCHW + fp32": 10.0, "channels_last + fp32": 20.0, "channels_last + bf16": 19.0},
        "infer_variant_pick": "channels_last + bf16",
        "infer_variant_best_alternative": "channels_last + fp32",
        "infer_variant_pick_ratio": 20.0 / 19.0,
    }
    text = "\n".join(report.perf_lines(_result({"net": m})))
    assert "| net | channels_last + bf16 | 52.6 | channels_last + fp32 | 50.0 | 1.05 |" in text


def test_markdown_roofline_and_data_path_tables():
    pos = roofline_position(2e9, 1e9, 0.1, 400.0, 32.0)
    pos.update(
        size=[64, 128],
        variant="channels_last + bf16",
        layerwise_attainable_gflop_s=50.0,
        layerwise_attainable_fraction=0.4,
        layers=by_category([("conv depthwise", 1e6, 3e8)], 400.0, 32.0),
        time_by_layer_s={"conv depthwise": 0.05, "resize": 0.05},
    )
    result = _result({"net": {"roofline": pos}})
    result["augment_loader"] = {
        "recipe": "r",
        "crop": [8, 8],
        "frames": 2,
        "batch": 2,
        "images": 4,
        "img_s_by_workers": {"0": 5.0, "2": 9.0},
        "step_ms": {"read cache": 1.0, "RandomScaleCrop": 3.0},
    }
    text = "\n".join(report.roofline_lines(result) + report.augment_lines(result))
    assert "| net | channels_last + bf16 | 2.0 | 1000 | 2.0 | 0.100 | 20 | 5% | 64 | 31% | 50 | 40% |" in text
    assert "| net | conv depthwise | 50.0 | 50% | 0.00 | 300 | 0.0 | 100% |" in text and "| net | resize | 50.0 | 50% |" in text
    assert "| img/s | 5.0 | 9.0 |" in text and "| RandomScaleCrop | 3.0 | 75% |" in text
    assert set(report.result_json(result)) >= {"memory_bandwidth_gb_s", "augment_loader"}
