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
from cityseg.tools.demo import run as demo_run
from cityseg.tools.demo import train as train_phase
from cityseg.tools.demo.data import SynthRequest, prepare_data
from cityseg.tools.demo.evaluate import MemoPredictor
from cityseg.tools.demo.summary import format_summary
from cityseg.tools.demo.timer import Timer
from cityseg.train.run import Timing as TrainTiming

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
    s1 = demo_run.run_demo(out, minutes=5, progress=False, log=lines.append, **TINY)
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
    assert page["scores"]["mIoU"] == s1["mIoU"] and len(page["frames"]) == 2 and page["run"]["recipe"] == "cpu-fast-real"

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
    assert demo_run.next_run_dir(runs) == runs / "001"
    for name in ("001", "003", "notes", "12"):
        (runs / name).mkdir(parents=True)
    assert demo_run.next_run_dir(runs) == runs / "004"
    assert demo_run.claim_run_dir(runs) == runs / "004" and (runs / "004").is_dir()
    assert demo_run.claim_run_dir(runs) == runs / "005"


def test_seed_model_and_recipe_reproduce_the_seed_demo(tmp_path):
    """``--model residual_unet --config seed``: the seed recipe as shipped, except the demo's batch of 2."""
    from cityseg.train.config import load_recipe

    tiny = {**TINY, "batch_size": None}
    s = demo_run.run_demo(tmp_path / "demo", minutes=5, model="residual_unet", recipe="seed", progress=False, log=lambda _: None, **tiny)
    assert s["model"] == "residual_unet" and s["recipe"] == "seed" and s["batch_size"] == demo.DEMO_BATCH_SIZE == 2
    import tomllib
    from pathlib import Path

    ran = tomllib.loads((Path(s["run_dir"]) / "config.toml").read_text())
    seed, _ = load_recipe("seed")
    for section in ("optim", "schedule", "augment"):
        assert ran[section] == {k: v for k, v in seed[section].items() if k in ran[section]}, section
    assert ran["loss"] == seed["loss"] and ran["data"]["label_mode"] == "labelIds" and ran["train"]["grad_clip"] == 0.0


def test_plan_steps():
    cost = budget.StepCosts(per_step=0.5, per_val=0.0, restart=8.0)
    assert budget.PLAN_MARGIN == 0.05
    # 108 s left at 0.5 s a step after 40 steps: 8 s for the restart, then 5% of the rest stays free -> 190 more
    assert budget.plan_steps(108.0, cost, 40, 10_000, 1000) == 230
    # 4 s per validation, 50-step epochs: 190 more steps would cross 5 epoch ends (20 s) -> 150 more, in 4 epochs
    assert budget.plan_steps(108.0, budget.StepCosts(0.5, 4.0, 8.0), 40, 10_000, 50) == 190
    assert budget.plan_steps(100.0, cost, 40, 100, 1000) == 100  # an --epochs cap caps it
    assert budget.plan_steps(0.1, cost, 40, 100, 1000) == 41  # at least one more step
    assert budget.plan_steps(-5.0, cost, 40, 100, 1000) == 41
    assert budget.plan_steps(100.0, budget.StepCosts(0.0, 0.0, 0.0), 40, 100, 1000) == 100  # no speed measured: the cap


def test_trained_scores_the_newest_weights_when_training_stopped_inside_an_epoch(tmp_path):
    for name in ("best.pt", "last.pt"):
        (tmp_path / name).write_bytes(b"")
    base = {"steps_done": 250, "epoch": 2, "stopped": "time limit", "history": [{"miou_19": 0.3, "loss": 1.0}]}
    lines: list[str] = []
    cut = train_phase.trained({**base, "step": 50}, tmp_path, lines.append)
    assert cut.checkpoint == tmp_path / "last.pt" and cut.last_val == {"miou_19": 0.3} and cut.steps == 250
    assert lines == [f"training stopped (time limit) at step 50 of epoch 3: evaluating {tmp_path / 'last.pt'} (the newest weights, unvalidated)"]
    assert train_phase.trained({**base, "step": 0}, tmp_path, lines.append).checkpoint == tmp_path / "best.pt"  # at an epoch end
    (tmp_path / "best.pt").unlink()  # no epoch validated yet
    assert train_phase.trained({**base, "step": 0, "epoch": 0, "history": []}, tmp_path, lines.append).checkpoint == tmp_path / "last.pt"


def test_validations_count_the_epoch_ends_ahead():
    assert budget.validations(29, 60, 30) == 2  # epochs 1 and 2 end ahead
    assert budget.validations(30, 60, 30) == 1  # epoch 1 is validated already
    assert budget.validations(30, 65, 30) == 2  # the partial third epoch is validated too
    assert budget.validations(60, 60, 30) == 0


def test_stretch_costs_set_setup_and_validation_apart_from_steps():
    before = budget.StepCosts(per_step=1.5, per_val=3.0, restart=0.0)
    # 20 steps in 30 s and 2 validations in 8 s of a 45 s stretch: 1.5 s/step, 4 s/validation, 7 s to restart
    assert train_phase.stretch_costs(TrainTiming(20, 30.0, 2, 8.0), 45.0, before) == budget.StepCosts(1.5, 4.0, 7.0)
    # 5 steps measure the loader's start more than the network, and no validation ran: both kept
    assert train_phase.stretch_costs(TrainTiming(5, 15.0, 0, 0.0), 20.0, before) == budget.StepCosts(1.5, 3.0, 5.0)
    # ...unless nothing was measured before: the first stretch's speed, however short
    first = budget.StepCosts(0.0, 3.0, 0.0)
    assert train_phase.stretch_costs(TrainTiming(5, 15.0, 0, 0.0), 20.0, first).per_step == 3.0


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
    """A 30 s training budget on a fake clock (3 steps per epoch; 1 s a step, then 2 s; setup and
    validation take no time), no margin, every stretch measured: the 5 s probe stops in step 5 (7 s: 1.4 s/step), which plans 21 steps; the time limit at 60%
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
    for name, value in (("PROBE_S", 5.0), ("REPLAN_AT", 0.6), ("MIN_MEASURED_STEPS", 1), ("PLAN_MARGIN", 0.0)):
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
    assert "5 steps in 7 s (1.40 s/step, 0 s/validation): 21 steps planned in all" in lines
    assert "11 steps in 19 s (2.00 s/step, 0 s/validation): 16 steps planned in all" in lines
    assert [line.split(":")[1] for line in lines if line.startswith("resuming")] == [" epoch 2, step 2/3", " epoch 4, step 2/3"]
    train(apply_overrides(cfg, {"train.iters": 16}), root, tmp_path / "ref", progress=False, log=lambda _: None)
    a, b = (load_checkpoint(tmp_path / name / "last.pt")["model"] for name in ("ref", "run"))
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- the phases one by one ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("minutes", 0, "--minutes must be a positive number, got 0"),
        ("minutes", float("inf"), "--minutes must be a positive number, got inf"),
        ("train_minutes", -1.0, "--train-minutes must be a positive number, got -1.0"),
        ("train_frames", 0, "--train-frames must be a positive integer, got 0"),
        ("val_frames", 2.5, "--val-frames must be a positive integer, got 2.5"),
        ("batch_size", -2, "--batch-size must be a positive integer, got -2"),
        ("figure_rows", 0, "--figure-rows must be a positive integer, got 0"),
        ("report_frames", 0, "--report-frames must be a positive integer, got 0"),
        ("epochs", 0, "--epochs must be a positive integer, got 0"),
        ("frame_size", (0, 64), "--frame-size must be HxW with positive values, got (0, 64)"),
        ("grad_clip", float("nan"), "--grad-clip must be >= 0 (0 = off), got nan"),
    ],
)
def test_options_refuse_each_bad_value_in_one_line(tmp_path, field, value, message):
    from cityseg.errors import CitysegError

    with pytest.raises(CitysegError) as err:
        demo.DemoOptions(out=tmp_path / "demo", **{field: value})
    assert str(err.value) == message


def test_options_normalise_paths_and_sizes(tmp_path):
    opts = demo.DemoOptions(out=str(tmp_path / "d"), json_path=str(tmp_path / "s.json"), frame_size=[128, 256], size=[64, 128])
    assert opts.out == tmp_path / "d" and opts.json_path == tmp_path / "s.json"
    assert opts.frame_size == (128, 256) and opts.size == (64, 128) and opts.train_frames is None


def test_train_frames_scale_with_the_budget_above_a_floor():
    # 80 frames a minute: the 10-minute default keeps its 800; 3 minutes get 240; short runs the floor of 120
    assert [budget.train_frames_for(m) for m in (0.5, 1, 1.5, 3, 10, 20)] == [120, 120, 120, 240, 800, 1600]
    # 10 val frames a minute, 20 to 50: 3 minutes get 30, 10 minutes and more the full 50
    assert [budget.val_frames_for(m) for m in (0.5, 2, 3, 4.5, 10, 20)] == [20, 20, 30, 45, 50, 50]


def test_train_frames_are_drawn_at_twice_the_training_size():
    assert budget.train_frame_size((1024, 2048), (256, 512)) == (512, 1024)
    assert budget.train_frame_size((1024, 2048), (128, 256)) == (256, 512)
    assert budget.train_frame_size((1024, 2048), (512, 1024)) == (1024, 2048)  # no halving leaves 2x
    assert budget.train_frame_size((128, 256), (64, 128)) == (128, 256)
    assert budget.train_frame_size((1000, 2000), (256, 512)) == (1000, 2000)  # 500x1000 is under 2x
    assert budget.train_frame_size((1026, 2048), (64, 128)) == (513, 1024)  # halved while both sides are even
    assert budget.train_frame_size((1024, 2048), None) == (1024, 2048)  # training at full size


def test_eval_costs_and_training_time_by_hand():
    # 50 frames x (0.02 s forward + 0.25 s at 2.1 MP) + 4 s + 8 rows x 0.4 s + 48 gallery frames x 0.15 s
    assert math.isclose(budget.EvalCosts().seconds(50, 2.1, 0.02, 8, 48), 13.5 + 4.0 + 3.2 + 7.2)
    # a quarter of the pixels: a quarter of the per-frame cost at full size; the gallery is at most n_val
    assert math.isclose(budget.EvalCosts().seconds(2, 0.525, 0.0, 2, 48), 2 * 0.0625 + 4.0 + 0.8 + 0.3)
    assert budget.training_seconds(600.0, 100.0, 30.0) == 600.0 - 100.0 - 30.0 - 10.0
    assert budget.training_seconds(60.0, 50.0, 30.0) == 20.0  # the floor


def test_steps_per_epoch_is_the_samplers_count():
    assert train_phase.steps_per_epoch({"batch_size": 4, "drop_last": True}, 10) == 2
    assert train_phase.steps_per_epoch({"batch_size": 4, "drop_last": False}, 10) == 3
    assert train_phase.steps_per_epoch({"batch_size": 8, "drop_last": True}, 800) == 100


def test_synth_request_follows_the_budget_and_the_recipe(tmp_path):
    opts = demo.DemoOptions(out=tmp_path / "d", minutes=3, seed=4)
    want = demo_run.synth_request(opts, train_phase.recipe(opts))  # cpu-fast trains at 256x512
    assert want == SynthRequest(train=240, val=30, train_size=(512, 1024), val_size=(1024, 2048), seed=4)
    opts = demo.DemoOptions(out=tmp_path / "d", train_frames=7, val_frames=3, frame_size=(128, 256), size=(64, 128))
    assert demo_run.synth_request(opts, train_phase.recipe(opts)) == SynthRequest(7, 3, (128, 256), (128, 256), 0)


def test_data_phase_draws_train_and_val_frames_at_their_sizes(tmp_path):
    from cityseg.data.layout import find_samples
    from cityseg.data.synth import MARKER
    from cityseg.io import read_image, read_label

    want = SynthRequest(train=2, val=1, train_size=(32, 64), val_size=(64, 128))
    got = prepare_data(tmp_path / "demo", None, want, 1, Timer(), lambda _: None)
    assert got.source == "generated" and got.frames == {"train": 2, "val": 1}
    for split, shape in (("train", (32, 64)), ("val", (64, 128))):
        for s in find_samples(got.root, split):
            assert read_image(s.image).shape[:2] == shape and read_label(s.label).shape == shape
    marker = json.loads((got.root / MARKER).read_text())
    assert marker["size"] == [64, 128] and marker["sizes"] == {"train": [32, 64], "val": [64, 128], "test": [64, 128]}


def test_data_phase_checks_a_given_dataset(synth_small):
    lines: list[str] = []
    got = prepare_data(synth_small.parent / "unused", synth_small, SynthRequest(1, 1, (64, 128), (64, 128)), 1, Timer(), lines.append)
    assert (got.root, got.source, got.frames) == (synth_small, "given", {"train": 8, "val": 4})
    assert lines[-1].startswith("dataset: train 8 pairs (256x512); val 4 pairs (256x512); evaluated classes present ")


def test_timer_adds_up_phases_and_names_the_rest(monkeypatch):
    from types import SimpleNamespace

    from cityseg.tools.demo import timer as timer_module

    now = [0.0]
    monkeypatch.setattr(timer_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    t = Timer()
    for name, seconds in (("a", 2.0), ("b", 3.0), ("a", 1.0)):
        with t.phase(name):
            now[0] += seconds
        now[0] += 1.0  # between phases
    assert t.rounded() == {"a": 3.0, "b": 3.0, "other": 3.0} and t.elapsed() == 9.0


def test_timer_counts_the_time_before_it_as_setup(monkeypatch):
    from types import SimpleNamespace

    from cityseg.tools.demo import timer as timer_module

    monkeypatch.setattr(timer_module, "time", SimpleNamespace(monotonic=lambda: 100.0, time=lambda: 1000.0))
    t = Timer(started_at=940.0)  # `make demo` began 60 s ago, setting up the venv
    assert t.elapsed() == 60.0 and t.rounded() == {"setup": 60.0, "other": 0.0}


@pytest.mark.parametrize("ago", [-3600.0, 2 * 86400.0, math.nan], ids=["future", "two-days-ago", "nan"])
def test_options_refuse_a_budget_start_that_is_not_recent(tmp_path, ago):
    import time

    from cityseg.errors import CitysegError

    with pytest.raises(CitysegError, match=r"^--since must be a recent time in seconds since the epoch \(as `date \+%s` prints\), got "):
        demo.DemoOptions(out=tmp_path / "demo", started_at=time.time() - ago)
    assert demo.DemoOptions(out=tmp_path / "demo", started_at=time.time() - 61.0).started_at is not None


def test_memo_predictor_runs_the_model_once_per_frame():
    class Base:
        size = (4, 8)

        def __init__(self):
            self.calls = 0

        def predict(self, image):
            self.calls += 1
            return image[..., 0] // 2

    base = Base()
    memo = MemoPredictor(base)
    a, b = np.zeros((4, 8, 3), np.uint8), np.full((4, 8, 3), 6, np.uint8)
    assert (memo.predict(a) == 0).all() and (memo.predict(b) == 3).all() and (memo.predict(a.copy()) == 0).all()
    assert base.calls == memo.runs == 2 and memo.size == (4, 8)


def test_format_summary_lines():
    s = {
        "model": "m", "recipe": "r", "batch_size": 8, "grad_clip": 0.0, "train_size": [256, 512], "epochs": 3, "images_seen": 240,
        "stopped": "time limit", "n_images": 50, "mIoU": 0.5, "mIoU_34": 0.25, "pixel_acc": 0.75, "data": {"root": "D", "source": "reused"},
        "run_dir": "R", "checkpoint": "R/best.pt", "scores": "S", "predictions": "P", "predictions_color": "C", "figure": "F",
        "elapsed_s": 170.0, "minutes": 3.0, "seconds": {"train": 120.0, "other": 50.0}, "report": "R/report/index.html",
    }  # fmt: skip
    lines = format_summary(s)
    assert lines[1] == "cityseg demo: m (r recipe, batch 8, grad clip 0, 256x512), 3 epoch(s), 240 training images seen (time limit)"
    assert "mIoU (19 classes) 0.5000, mIoU_34 0.2500, pixel accuracy 0.7500" in lines[2]
    assert lines[-2] == "  time         170 s of a 3 min budget: train 120 s, other 50 s" and lines[-1] == "  report       R/report/index.html"
    assert not any("summary JSON" in line for line in lines)


def test_data_phase_reuses_an_unchanged_cached_synthcity_without_the_check(tmp_path):
    from cityseg.data import cache
    from cityseg.data.layout import find_samples
    from cityseg.tools.demo.data import CacheSpec

    want, spec = SynthRequest(2, 1, (64, 128), (64, 128)), CacheSpec((32, 64), "area")
    prepare_data(tmp_path / "demo", None, want, 1, Timer(), lambda _: None, spec)
    root = tmp_path / "demo" / "data"
    timer, lines = Timer(), []
    got = prepare_data(tmp_path / "demo", None, want, 1, timer, lines.append, spec)  # no cache yet: checked
    assert got.source == "reused" and "check" in timer.phases
    for split in ("train", "val"):
        cache.prepare(root, split, (32, 64), "area", workers=1)
    timer = Timer()
    got = prepare_data(tmp_path / "demo", None, want, 1, timer, lines.append, spec)
    assert (got.source, got.frames) == ("reused", {"train": 2, "val": 1}) and "check" not in timer.phases
    assert "unchanged since its cache was built" in lines[-2]
    # a file changed since the cache read it: checked again, and this one, truncated, is regenerated
    label = find_samples(root, "val")[0].label
    label.write_bytes(label.read_bytes()[:100])
    timer, lines = Timer(), []
    got = prepare_data(tmp_path / "demo", None, want, 1, timer, lines.append, spec)
    assert got.source == "generated" and "check" in timer.phases and any("damaged" in line for line in lines)
