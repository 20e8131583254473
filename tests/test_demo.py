"""``cityseg demo``: the whole job end to end at a tiny size, reruns, dataset reuse, bad input."""

from __future__ import annotations

import json
import math
from functools import partial

import numpy as np
import pytest
import torch

from cityseg.cli import main
from cityseg.models.base import SegmentationModel
from cityseg.tools import demo
from cityseg.tools.demo import budget
from cityseg.tools.demo import train as train_phase
from cityseg.tools.demo.data import SynthRequest, prepare_data
from cityseg.tools.demo.timer import Timer

#: SynthCity at 128x256 (2 train, 2 val), trained at 64x128 for one epoch: seconds, not minutes
TINY = dict(train_frames=2, val_frames=2, frame_size=(128, 256), size=(64, 128), batch_size=2, epochs=1, figure_rows=2, workers=1)
TINY_ARGS = [
    "--train-frames",
    "2",
    "--val-frames",
    "2",
    "--frame-size",
    "128x256",
    "--size",
    "64x128",
    "--batch-size",
    "2",
    "--epochs",
    "1",
    "--figure-rows",
    "2",
    "--workers",
    "1",
    "--quiet",
]
SCORE_KEYS = ("mIoU", "mIoU_34", "pixel_acc", "iIoU", "mIoU_categories", "pixel_acc_34")


def _check_summary(s: dict) -> None:
    for key in SCORE_KEYS:
        assert 0.0 <= s[key] <= 1.0, (key, s[key])
    for key in ("run_dir", "figure", "predictions", "predictions_color", "checkpoint", "scores"):
        assert isinstance(s[key], str) and s[key]
    assert s["n_images"] == 2
    assert s["batch_size"] == 2 and s["grad_clip"] == 0.0
    assert s["elapsed_s"] >= sum(v for k, v in s["seconds"].items() if k != "other") - 1.0


def test_demo_end_to_end_then_rerun_reuses_data(tmp_path, capsys):
    from pathlib import Path

    from cityseg.data.synth import MARKER
    from cityseg.eval.evaluate import evaluate_pred_dir
    from cityseg.io import read_image, read_label

    out = tmp_path / "demo"
    lines: list[str] = []
    s1 = demo.run_demo(out, minutes=5, progress=False, log=lines.append, **TINY)
    _check_summary(s1)
    run1 = Path(s1["run_dir"])
    assert run1 == out / "runs" / "001"
    assert (run1 / "best.pt").is_file() and (run1 / "metrics.csv").is_file()
    assert s1["data"]["source"] == "generated" and s1["data"]["frames"] == {"train": 2, "val": 2}
    assert s1["epochs"] == 1 and s1["steps"] == 1 and s1["images_seen"] == 2
    assert json.loads((run1 / "summary.json").read_text()) == json.loads(json.dumps(s1))
    assert json.loads(Path(s1["scores"]).read_text())["mIoU"] == s1["mIoU"]
    assert Path(s1["figure"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    preds = sorted(Path(s1["predictions"]).iterdir())
    colors = sorted(Path(s1["predictions_color"]).iterdir())
    assert len(preds) == 2 and all(p.name.endswith("_labelIds.png") for p in preds)
    assert len(colors) == 2
    for p in preds:
        ids = read_label(p)
        assert ids.shape == (128, 256) and ids.dtype == np.uint8 and ids.max() <= 33
    assert read_image(colors[0]).shape == (128, 256, 3)
    # the written files, scored by the drop-in for the official script, give the demo's own figures
    again = evaluate_pred_dir(out / "data", "val", s1["predictions"])
    assert math.isclose(again["mIoU"], s1["mIoU"], abs_tol=1e-12)
    assert math.isclose(again["pixel_acc"], s1["pixel_acc"], abs_tol=1e-12)
    text = "\n".join(lines)
    assert "mIoU (19 classes)" in text and s1["figure"] in text and "dataset:" in text
    # the run report, from the demo's own evaluation, printed last
    assert lines[-1].split()[-1] == s1["report"] == str(run1 / "report" / "index.html")
    page = json.loads((run1 / "report" / "index.json").read_text())
    assert page["scores"]["mIoU"] == s1["mIoU"] and len(page["frames"]) == 2 and page["run"]["recipe"] == "cpu-fast"

    # second run, same --out, through the CLI: data reused (not rewritten), a fresh run folder, JSON written
    marker_mtime = (out / "data" / MARKER).stat().st_mtime_ns
    summary = tmp_path / "sub" / "summary.json"
    summary.parent.mkdir()
    capsys.readouterr()
    assert main(["demo", "--out", str(out), "--minutes", "5", "--json", str(summary), *TINY_ARGS]) == 0
    printed = capsys.readouterr().out
    assert "reusing SynthCity" in printed and "generating" not in printed
    assert printed.strip().splitlines()[-1].split()[-1] == str(out / "runs" / "002" / "report" / "index.html")
    s2 = json.loads(summary.read_text())
    _check_summary(s2)
    assert s2["run_dir"] == str(out / "runs" / "002") and s2["data"]["source"] == "reused"
    assert (out / "data" / MARKER).stat().st_mtime_ns == marker_mtime
    assert (run1 / "best.pt").is_file()  # the first run is kept
    # same data, same seed: the training is repeatable, so the scores agree
    assert math.isclose(s2["mIoU"], s1["mIoU"], abs_tol=1e-6)


def test_damaged_or_incomplete_synthcity_is_regenerated(tmp_path):
    from cityseg.data.layout import find_samples
    from cityseg.data.synth import MARKER, generate

    root = tmp_path / "demo" / "data"
    generate(root, train=1, val=1, test=0, size=(64, 128), seed=0)
    label = find_samples(root, "val")[0].label
    good = label.read_bytes()
    label.write_bytes(good[: len(good) // 2])  # truncated PNG
    lines: list[str] = []
    timer = Timer()
    want = SynthRequest(train=1, val=1, train_size=(64, 128), val_size=(64, 128))
    got = prepare_data(tmp_path / "demo", None, want, 1, timer, lines.append)
    assert got.root == root and got.source == "generated"
    assert any("damaged" in line for line in lines)
    assert label.read_bytes() == good

    marker = json.loads((root / MARKER).read_text())
    (root / MARKER).write_text(json.dumps({**marker, "complete": False}))  # a generation killed half-way
    lines.clear()
    got = prepare_data(tmp_path / "demo", None, want, 1, timer, lines.append)
    assert got.source == "generated" and json.loads((root / MARKER).read_text())["complete"] is True

    got = prepare_data(tmp_path / "demo", None, want, 1, timer, lines.append)
    assert got.source == "reused" and got.frames == {"train": 1, "val": 1}

    from cityseg.data.synth import VERSION

    (root / MARKER).write_text(json.dumps({**marker, "complete": True, "version": VERSION - 1}))  # an older generator's frames
    lines.clear()
    got = prepare_data(tmp_path / "demo", None, want, 1, timer, lines.append)
    assert got.source == "generated" and json.loads((root / MARKER).read_text())["version"] == VERSION
    assert any(f"generator version {VERSION - 1}, this is version {VERSION}; regenerating" in line for line in lines)

    # a run that wants more train frames than the folder holds generates them; one that wants fewer reuses it
    lines.clear()
    got = prepare_data(tmp_path / "demo", None, SynthRequest(3, 1, (64, 128), (64, 128)), 1, timer, lines.append)
    assert got.source == "generated" and got.frames == {"train": 3, "val": 1} and len(find_samples(root, "train")) == 3
    assert any("holds 1 train frames, this run uses 3; regenerating" in line for line in lines)
    got = prepare_data(tmp_path / "demo", None, want, 1, timer, lines.append)
    assert got.source == "reused" and got.frames == {"train": 3, "val": 1}


@pytest.mark.parametrize(
    "case",
    [
        "out_is_file",
        "minutes_zero",
        "minutes_negative",
        "minutes_nan",
        "json_is_dir",
        "missing_data",
        "unknown_model",
        "foreign_data_folder",
        "zero_frames",
        "negative_grad_clip",
    ],
)
def test_bad_input_is_one_line_exit_2(case, tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), *TINY_ARGS]
    if case == "out_is_file":
        out.write_text("not a folder")
    elif case == "minutes_zero":
        args += ["--minutes", "0"]
    elif case == "minutes_negative":
        args += ["--minutes", "-3"]
    elif case == "minutes_nan":
        args += ["--minutes", "nan"]
    elif case == "json_is_dir":
        args += ["--json", str(tmp_path)]
    elif case == "missing_data":
        args += ["--data", str(tmp_path / "nowhere")]
    elif case == "unknown_model":
        args += ["--model", "no_such_net"]
    elif case == "foreign_data_folder":
        (out / "data").mkdir(parents=True)
        (out / "data" / "notes.txt").write_text("mine")
    elif case == "zero_frames":
        args += ["--train-frames", "0"]
    elif case == "negative_grad_clip":
        args += ["--grad-clip", "-1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cityseg demo: error: ") and "Traceback" not in err[0]
    if case == "out_is_file":
        assert out.read_text() == "not a folder"
    elif case == "foreign_data_folder":
        assert sorted(p.name for p in (out / "data").iterdir()) == ["notes.txt"]
    elif case != "missing_data":
        assert not (out / "runs").exists()


def test_next_run_dir(tmp_path):
    runs = tmp_path / "runs"
    assert demo.next_run_dir(runs) == runs / "001"
    for name in ("001", "003", "notes", "12"):
        (runs / name).mkdir(parents=True)
    assert demo.next_run_dir(runs) == runs / "004"
    assert demo.claim_run_dir(runs) == runs / "004" and (runs / "004").is_dir()
    assert demo.claim_run_dir(runs) == runs / "005"


def test_seed_model_and_recipe_reproduce_the_seed_demo(tmp_path):
    """``--model residual_unet --config seed``: the seed recipe as shipped, except the demo's batch of 2."""
    from cityseg.train.config import load_recipe

    tiny = {**TINY, "batch_size": None}
    s = demo.run_demo(tmp_path / "demo", minutes=5, model="residual_unet", recipe="seed", progress=False, log=lambda _: None, **tiny)
    assert s["model"] == "residual_unet" and s["recipe"] == "seed" and s["batch_size"] == demo.DEMO_BATCH_SIZE == 2
    import tomllib
    from pathlib import Path

    ran = tomllib.loads((Path(s["run_dir"]) / "config.toml").read_text())
    seed, _ = load_recipe("seed")
    for section in ("optim", "schedule", "augment"):
        assert ran[section] == {k: v for k, v in seed[section].items() if k in ran[section]}, section
    assert ran["loss"] == seed["loss"] and ran["data"]["label_mode"] == "labelIds" and ran["train"]["grad_clip"] == 0.0


def test_plan_steps():
    # 108 s left at 0.5 s a step after 40 steps: 8 s for the restart, then 3% of the rest stays free -> 194 more
    assert budget.plan_steps(108.0, 0.5, 40, 10_000) == 234
    assert budget.plan_steps(100.0, 0.5, 40, 100) == 100  # an --epochs cap caps it
    assert budget.plan_steps(0.1, 0.5, 40, 100) == 41  # at least one more step
    assert budget.plan_steps(-5.0, 0.5, 40, 100) == 41
    assert budget.plan_steps(100.0, 0.0, 40, 100) == 100  # no speed measured: the cap


class ClockNet(SegmentationModel):
    """A two-conv net; each training forward advances the fake clock by 1 s for the first ``fast_steps``,
    then by 2 s (a machine that slows down), so the demo's planning sees a known, changing speed."""

    name = "clock"
    size_multiple = 4
    min_size = 8
    now = 0.0
    steps = 0
    fast_steps = 3

    def __init__(self, num_classes: int = 34):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, num_classes, 1))

    def forward(self, x):
        if self.training:
            ClockNet.steps += 1
            ClockNet.now += 1.0 if ClockNet.steps <= ClockNet.fast_steps else 2.0
        return self.net(x)


@pytest.mark.parametrize("epochs_cap", [8, None], ids=["capped", "budget-only"])
def test_demo_training_stretches_plan_from_the_probe_and_resume_exactly(tmp_path, monkeypatch, epochs_cap):
    """A 30 s training budget on a fake clock (3 steps per epoch; 1 s a step, then 2 s), no restart time or
    margin: the 5 s probe stops in step 5 (7 s: 1.4 s/step), which plans 21 steps; the time limit at 60%
    of the budget cuts that stretch after step 11 (19 s), whose 2 s/step plan 16 steps for the 11 s
    left. Three stretches, resumed exactly, mid-epoch: the weights of one uninterrupted 16-step run."""
    from types import SimpleNamespace

    import cityseg.train.loop as loop_module
    import cityseg.train.run as run_module
    from cityseg import models
    from cityseg.checkpoint import load_checkpoint
    from cityseg.data.synth import generate
    from cityseg.train.config import apply_overrides, load_recipe
    from cityseg.train.run import train

    root = tmp_path / "data"
    generate(root, train=10, val=2, test=0, size=(64, 128), seed=3)
    monkeypatch.setitem(models.MODELS, "clock", models.Entry(partial(ClockNet), "fake-clock test net"))
    clock = SimpleNamespace(monotonic=lambda: ClockNet.now)
    for module in (train_phase, run_module, loop_module):
        monkeypatch.setattr(module, "time", clock)
    for name, value in (("PROBE_S", 5.0), ("REPLAN_AT", 0.6), ("RESTART_S", 0.0), ("PLAN_MARGIN", 0.0)):
        monkeypatch.setattr(budget, name, value)
    monkeypatch.setattr(run_module, "plot_curves", lambda *a: None)  # time the test does not need
    cfg, _ = load_recipe("seed")
    over = {"model.name": "clock", "data.size": [64, 128], "train.batch_size": 4, "train.eval_batch_size": 2, "train.fast": False, "data.workers": 0}
    cfg = apply_overrides(cfg, over)
    lines: list[str] = []
    ClockNet.now, ClockNet.steps = 0.0, 0
    plan = train_phase.Plan(tmp_path / "run", budget_s=30.0, after_s=0.0, figure_rows=0)
    run = train_phase.train_in_budget(train_phase.Recipe(cfg), root, plan, epochs_cap=epochs_cap, train_images=10, progress=False, log=lines.append)
    assert (run.steps, run.stopped) == (16, "epochs done") and ClockNet.steps == 16
    assert run.checkpoint == tmp_path / "run" / "best.pt" and run.run_dir == tmp_path / "run"
    assert "5 steps in 7 s (1.40 s/step): 21 steps planned in all" in lines
    assert "11 steps in 19 s (2.00 s/step): 16 steps planned in all" in lines
    assert [line.split(":")[1] for line in lines if line.startswith("resuming")] == [" epoch 2, step 2/3", " epoch 4, step 2/3"]
    train(apply_overrides(cfg, {"train.iters": 16}), root, tmp_path / "ref", progress=False, log=lambda _: None)
    a, b = (load_checkpoint(tmp_path / name / "last.pt")["model"] for name in ("ref", "run"))
    assert all(torch.equal(a[k], b[k]) for k in a)
