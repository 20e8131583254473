"""`cityseg benchmark`: a quick run at a tiny size (schema, sane numbers, markdown + plot written, the
markdown merge), every section at tiny sizes (slow: the frames stay full-size), and bad options. No
wall-clock assertions."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from cityseg.cli import main
from cityseg.tools import benchmark as B
from cityseg.tools.benchmark.model_speed import loss_specs, make_batch, train_step_fn

KEYS = {
    "params",
    "gflops",
    "train_img_s_fp32",
    "train_img_s_fast",
    "infer_img_s_fp32",
    "infer_img_s_fast",
    "infer_img_s_onnx",
    "fullres_s_per_img",
    "loader_img_s_cache",
    "loader_img_s_png",
    "peak_rss_mb",
}


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


MARKDOWN = "# Benchmarks\n\nHand-written notes above.\n\n<!-- cityseg-benchmark:begin -->\nold\n<!-- cityseg-benchmark:end -->\n\nHand-written notes below.\n"
#: the small sizes every run here uses: a multi-branch model at 32x64, batch 2, one timed repetition, a small
#: roof, one thread (on a loaded machine a second thread mostly waits for the first)
SMALL = ["--models", "residual_inception_unet", "--size", "32x64", "--batch", "2", "--iters", "1", "--warmup", "1", "--roof-size", "512", "--threads", "1"]


def run_cli(out, *extra: str) -> tuple[int, dict, str]:
    """``cityseg benchmark`` at the small sizes into ``out``; returns (exit code, the JSON, the markdown file)."""
    doc = out / "benchmarks.md"
    doc.write_text(MARKDOWN)
    files = ["--work-dir", str(out / "work"), "--json", str(out / "b.json"), "--markdown", str(doc), "--plot", str(out / "b.png")]
    threads = torch.get_num_threads()
    try:
        rc = main(["benchmark", *SMALL, "--no-isolate", "--quiet", *files, *extra])
    finally:
        torch.set_num_threads(threads)  # --threads sets this process's count: the tests after it keep theirs
    return rc, json.loads((out / "b.json").read_text()), doc.read_text()


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The machine, the training and the inference measurements only, of the cheapest model at 32x64 with no
    warm-up: the run every test session makes."""
    out = tmp_path_factory.mktemp("bench-quick")
    skip = "loader,fullres,onnx,int8,eval,augment,variants,fused"
    return (out, *run_cli(out, "--models", "segformer_b0", "--warmup", "0", "--skip", skip))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Every section at tiny sizes (the frames stay full-size: several minutes on two busy cores)."""
    out = tmp_path_factory.mktemp("bench")
    more = ["--loader-images", "2", "--eval-images", "2", "--roofline", "--roofline-size", "32x64"]
    more += ["--augment-crop", "32x32", "--augment-images", "2", "--augment-workers", "0,1"]
    rc, res, text = run_cli(out, *more)
    return rc, out, res, text


def test_quick_run_writes_json_markdown_and_plot(quick):
    out, rc, res, text = quick
    assert rc == 0
    assert set(res) == {"roof_gflops", "memory_bandwidth_gb_s", "device", "models", "eval_pred_dir", "int8_quality", "augment_loader"}
    assert all(_positive(v) for v in (*res["roof_gflops"].values(), *res["memory_bandwidth_gb_s"].values()))
    m = res["models"]["segformer_b0"]
    assert set(m) == set(B.ALL_KEYS)
    assert m["params"] == 3_719_027 + 15 * 257  # mmseg's B0 at 19 classes, plus 15 more 256-input classifier rows
    for key in ("gflops", "train_img_s_fp32", "train_img_s_fast", "infer_img_s_fp32", "infer_img_s_fast", "peak_rss_mb"):
        assert _positive(m[key]), (key, m[key])
    skipped = ("infer_img_s_onnx", "fullres_s_per_img", "loader_img_s_cache", "train_img_s_fast_fused", "infer_variants_img_s", "roofline")
    assert all(m[k] is None for k in skipped) and res["eval_pred_dir"] is None and res["augment_loader"] is None
    assert text.startswith("# Benchmarks\n\nHand-written notes above.") and text.rstrip().endswith("Hand-written notes below.")
    assert "\nold\n" not in text and text.count(B.BEGIN) == 1 == text.count(B.END)
    assert "| segformer_b0 | 3.72 M |" in text and "Not measured:" not in text
    png = (out / "b.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


class Heads(nn.Module):
    """A model with the three kinds of training output: the logits, an auxiliary head and a boundary head."""

    def __init__(self):
        super().__init__()
        self.out, self.aux, self.boundary = nn.Conv2d(3, 34, 1), nn.Conv2d(3, 34, 1), nn.Conv2d(3, 1, 1)

    def forward(self, x):
        out = self.out(x)
        return {"out": out, "aux": self.aux(x), "boundary": self.boundary(x)} if self.training else out


def test_train_step_trains_every_output(tmp_path):
    model = Heads()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = make_batch(2, (8, 16), torch.device("cpu"))
    y[:, :, :8] = 7  # two regions, so the boundary target has edges
    y[:, :, 8:] = 26
    assert loss_specs(model(x)) == [{"name": "ce", "output": "out"}, {"name": "ce", "output": "aux"}, {"name": "boundary", "output": "boundary"}]
    step = train_step_fn(model, x, y, fast=False, work=tmp_path)
    step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == set(before)  # each head got a gradient: the loss read every output


def test_the_phases_run_in_order():
    assert [p.__name__ for p in B.PHASES] == ["machine_phase", "data_phase", "augment_phase", "models_phase", "int8_phase", "evaluation_phase"]


@pytest.mark.slow
def test_json_schema_and_sane_numbers(smoke):
    rc, _, res, _ = smoke
    assert rc == 0
    assert set(res) >= {"roof_gflops", "device", "models"}
    assert set(res["roof_gflops"]) == {"fp32", "bf16"}
    assert all(_positive(v) for v in res["roof_gflops"].values())
    assert res["device"].startswith("cpu: ")
    m = res["models"]["residual_inception_unet"]
    assert set(m) >= KEYS
    for key in KEYS:
        assert _positive(m[key]), (key, m[key])
    # exact figures that do not depend on timing
    model = B.build("residual_inception_unet", (32, 64))
    assert m["params"] == B.count_params(model) == 9_581_062
    assert m["gflops"] == pytest.approx(B.forward_gflops(model, (32, 64)), rel=1e-3)
    assert _positive(m[B.ONNX_FULLRES_KEY])  # full-res prediction on onnxruntime too
    # multi-branch model: the fused alternative was measured too
    assert _positive(m["train_img_s_fast_fused"]) and _positive(m["infer_img_s_fast_fused"])
    # int8 onnxruntime next to fp32, and every inference variant with the one the measured fast path picks
    assert _positive(m["infer_img_s_onnx_int8"]) and 0 < m["int8_argmax_agreement"] <= 1
    assert m["infer_variant_pick"] in m["infer_variants_img_s"] and len(m["infer_variants_img_s"]) >= 4
    # the pick of its own trial against the fastest other variant
    assert m["infer_variant_best_alternative"] in m["infer_variants_img_s"] and m["infer_variant_best_alternative"] != m["infer_variant_pick"]
    rates = m["infer_variants_img_s"]
    assert m["infer_variant_pick_ratio"] == pytest.approx(rates[m["infer_variant_best_alternative"]] / rates[m["infer_variant_pick"]], rel=2e-3)
    # the roofline section, with the machine's memory bandwidth
    assert set(res["memory_bandwidth_gb_s"]) == {"copy", "add"} and all(_positive(v) for v in res["memory_bandwidth_gb_s"].values())
    r = m["roofline"]
    assert r["size"] == [32, 64] and r["batch"] == 1
    for key in ("gflops", "mbytes", "intensity", "seconds", "achieved_gflop_s", "attainable_gflop_s", "attainable_fraction", "layerwise_attainable_gflop_s"):
        assert _positive(r[key]), (key, r[key])
    assert r["attainable_gflop_s"] == pytest.approx(min(r["compute_roof_gflop_s"], r["intensity"] * r["bandwidth_gb_s"]), rel=2e-3)
    assert r["gflops"] == pytest.approx(m["gflops"] * 1.0, rel=1e-2) and "conv dense kxk" in r["layers"] and r["time_by_layer_s"]
    # the training data path per worker count and per step
    aug = res["augment_loader"]
    assert aug["crop"] == [32, 32] and set(aug["img_s_by_workers"]) == {"0", "1"} and all(_positive(v) for v in aug["img_s_by_workers"].values())
    assert {"read cache", "RandomScaleCrop", "PhotometricJitter", "to tensor + normalise"} <= set(aug["step_ms"])
    ev = res["eval_pred_dir"]
    assert ev["images"] == 2 and ev["same_miou"] is True and 0 < ev["miou_cityseg"] < 1
    assert _positive(ev["cityseg_s"]) and _positive(ev["official_s"])


@pytest.mark.slow
def test_markdown_and_plot_written(smoke):
    _, out, res, text = smoke
    assert text.startswith("# Benchmarks\n\nHand-written notes above.")
    assert text.rstrip().endswith("Hand-written notes below.")
    assert "\nold\n" not in text and text.count(B.BEGIN) == 1 == text.count(B.END)
    assert "| residual_inception_unet |" in text and "| target |" not in text  # the library judges nothing
    assert "Roofline, inference at 32x64" in text and "| best alternative |" in text and "Training data path:" in text
    assert "![throughput per model, baseline vs fast path](b.png)" in text
    png = (out / "b.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "no_such_model"], "unknown model 'no_such_model'"),
        (["--skip", "everything"], "cannot skip everything"),
        (["--iters", "0"], "--iters must be >= 1"),
        (["--plot", "chart.jpg"], "--plot writes a PNG file"),
        (["--device", "cuda"], "CUDA is not available"),
    ],
)
def test_bad_options_are_one_line_errors(argv, message, capsys, tmp_path):
    import torch

    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["benchmark", "--quiet", "--work-dir", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1
