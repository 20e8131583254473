"""Faults: SIGKILL at random points (mid-step, mid-checkpoint-write) then --resume, Ctrl-C, full or
unwritable disks, concurrent ``cityseg prepare``, NaN batches. Nothing already saved may be lost.

Training runs in real ``cityseg train`` subprocesses through a small wrapper (``python tests/test_faults.py
ARGS``) that registers a tiny conv net (with dropout, so RNG restoration matters) and, driven by
environment variables, logs events to a file, or injects NaN into one input batch. Kills land where a
test means them to by a handshake, not by timing: ``FAULT_HOLD`` names a point ("step 5": inside the
5th training forward; "save 2": halfway through writing the 2nd checkpoint; "saved 2": just after it),
where the child logs ``holding POINT`` and blocks until the parent creates the ``FAULT_RELEASE`` file
(or kills it). The child logs every SIGINT/SIGTERM it receives before its handler acts, so a second
signal is sent only once the first has been handled.
"""

from __future__ import annotations

import csv
import errno
import io as _io
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

from cityseg.models.base import SegmentationModel

HERE = Path(__file__).resolve().parent
TOTAL_EPOCHS = 5  # 10 train images, batch 4 -> 3 steps per epoch (last partial): 15 steps
#: a hang guard for every subprocess wait (a healthy run of the tiny net takes a small fraction of it)
WAIT_S = 300


# ---- the tiny model and fault hooks (used in-process and by the subprocess wrapper) --------------------------
class TinyNet(SegmentationModel):
    """3 convs + dropout. Training forwards log ``step N``, may sleep, and may get a NaN input batch."""

    name = "tiny"
    size_multiple = 4
    min_size = 8
    calls = 0
    nan_at = 0

    def __init__(self, num_classes: int = 34, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.2), nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x):
        if self.training:
            TinyNet.calls += 1
            if TinyNet.calls == TinyNet.nan_at:
                x = x.clone()
                x[0, :, :4, :4] = float("nan")  # a NaN in the batch
            _event(f"step {TinyNet.calls}")
            hold(f"step {TinyNet.calls}")
        return self.head(self.body(x))


def _event(text: str) -> None:
    path = os.environ.get("FAULT_EVENTS")
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


def hold(point: str) -> None:
    """Block at ``point`` when ``FAULT_HOLD`` names it, until the ``FAULT_RELEASE`` file exists: the parent
    kills or signals the child while it waits here, then releases it (or not)."""
    if os.environ.get("FAULT_HOLD") != point:
        return
    _event(f"holding {point}")
    release, parent = Path(os.environ["FAULT_RELEASE"]), os.getppid()
    while not release.exists():  # a wait for the parent's file, however long it takes
        if os.getppid() != parent:  # the test process is gone: never outlive it
            os._exit(1)
        time.sleep(0.001)


def _log_signals() -> None:
    """Every SIGINT/SIGTERM handler the trainer installs logs ``signal NAME`` before it acts."""
    real_signal = signal.signal

    def logged(signum, handler):
        if callable(handler) and signum in (signal.SIGINT, signal.SIGTERM):
            inner = handler

            def handler(sig, frame):
                _event(f"signal {signal.Signals(sig).name}")
                return inner(sig, frame)

        return real_signal(signum, handler)

    signal.signal = logged


def install() -> None:
    """Register ``tiny``, log signals, and make torch.save write in two halves with a ``hold`` between them."""
    from cityseg import models

    models.MODELS["tiny"] = models.Entry(partial(TinyNet), "tiny test net")
    TinyNet.calls, TinyNet.nan_at = 0, int(os.environ.get("FAULT_NAN_AT", "0"))
    _log_signals()
    real_save = torch.save
    saves = 0

    def halting_save(obj, f, *args, **kwargs):
        nonlocal saves
        saves += 1
        buf = _io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        fh = f if hasattr(f, "write") else open(f, "wb")
        fh.write(data[: len(data) // 2])
        fh.flush()
        _event(f"saving {Path(getattr(f, 'name', f)).name}")
        hold(f"save {saves}")
        fh.write(data[len(data) // 2 :])
        if fh is not f:
            fh.close()
        hold(f"saved {saves}")

    torch.save = halting_save


if __name__ == "__main__":  # the subprocess wrapper: python tests/test_faults.py train ...
    install()
    from cityseg.cli import main

    raise SystemExit(main(sys.argv[1:]))


# ---- helpers ---------------------------------------------------------------------------------------------------
from cityseg.checkpoint import load_checkpoint  # noqa: E402
from cityseg.cli import main  # noqa: E402

RUN_FILES = {"last.pt", "best.pt", "metrics.csv", "curves.png", "config.toml", "environment.json"}


def train_args(data, out, *extra):
    return [
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--model",
        "tiny",
        "--size",
        "64x128",
        "--epochs",
        str(TOTAL_EPOCHS),
        "--batch-size",
        "4",
        "--seed",
        "11",
        "--workers",
        "0",
        "--quiet",
        "--set",
        "train.fast=false",
        "--set",
        "train.eval_batch_size=2",
        "--set",
        "train.checkpoint_every=1",
        *extra,
    ]


def env(events: Path | None = None, **faults) -> dict[str, str]:
    """The child's environment: ``events`` is its event log; ``hold="step 5"`` makes it block there until
    the file ``release`` (next to the log) exists."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(HERE), e.get("PYTHONPATH", "")])
    e["OMP_NUM_THREADS"] = "2"
    for k in ("FAULT_EVENTS", "FAULT_HOLD", "FAULT_RELEASE", "FAULT_NAN_AT"):
        e.pop(k, None)
    if events is not None:
        e["FAULT_EVENTS"] = str(events)
        e["FAULT_RELEASE"] = str(release_file(events))
    e.update({f"FAULT_{k.upper()}": str(v) for k, v in faults.items()})
    return e


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    """The child's output once it exits; a child still running after the hang guard is killed, failing the test."""
    try:
        return proc.communicate(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=WAIT_S)
        pytest.fail(f"the run did not exit within {WAIT_S} s (still held?)")


def release_file(events: Path) -> Path:
    return events.with_suffix(".release")


def held(events: Path, point: str, proc: subprocess.Popen) -> None:
    """Wait until the child blocks at ``point``; fail if it exits first."""
    if not wait_for(events, lambda ls: f"holding {point}" in ls, proc):
        _, err = proc.communicate(timeout=WAIT_S)
        pytest.fail(f"the run ended before {point}: {err[-500:]}")


def start(argv, environ) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE / "test_faults.py"), *argv], env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(argv, environ, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", WAIT_S)
    return subprocess.run([sys.executable, str(HERE / "test_faults.py"), *argv], env=environ, capture_output=True, text=True, **kw)


def wait_for(events: Path, want, proc: subprocess.Popen, guard_s: float = 300) -> bool:
    """Poll the event log until ``want(lines)``; False if the process exits first."""
    end = time.monotonic() + guard_s  # a hang guard, not a timing assertion
    while time.monotonic() < end:
        lines = events.read_text().splitlines() if events.exists() else []
        if want(lines):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    proc.kill()
    raise AssertionError(f"no event matching the wait after {guard_s} s: {lines[-3:]}")


def rows(path: Path) -> list[dict[str, str]]:
    """metrics.csv without the wall-clock column."""
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def assert_same_run(ref: Path, run_dir: Path) -> None:
    """Bitwise-equal weights (last and best), optimizer step, history and metrics as the uninterrupted run."""
    a, b = load_checkpoint(ref / "last.pt"), load_checkpoint(run_dir / "last.pt")
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (TOTAL_EPOCHS, 0)
    assert_same_state(a["model"], b["model"])
    assert a["optimizer"]["state"][0]["step"] == b["optimizer"]["state"][0]["step"]
    for k in a["optimizer"]["state"]:
        assert torch.equal(a["optimizer"]["state"][k]["exp_avg_sq"], b["optimizer"]["state"][k]["exp_avg_sq"])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    assert a["metrics"] == b["metrics"] and a["best_miou"] == b["best_miou"]
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    assert rows(ref / "metrics.csv") == rows(run_dir / "metrics.csv")
    ba, bb = load_checkpoint(ref / "best.pt"), load_checkpoint(run_dir / "best.pt")
    assert ba["epoch"] == bb["epoch"]
    assert_same_state(ba["model"], bb["model"])


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- fixtures --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from cityseg.data.cache import prepare
    from cityseg.data.synth import generate

    root = tmp_path_factory.mktemp("faults_data")
    generate(root, train=10, val=2, test=0, size=(64, 128), seed=5)
    for split in ("train", "val"):  # the seed recipe's cache, built once here (not under the kills)
        prepare(root, split, size=(64, 128), interpolation="bilinear", workers=1)
    return root


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """One uninterrupted subprocess run: the target every faulted run must reach bit for bit."""
    out = tmp_path_factory.mktemp("faults_ref") / "run"
    proc = run(train_args(data, out), env())
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} >= RUN_FILES
    return out


@pytest.fixture
def tiny(monkeypatch):
    """The tiny model registered in this process (for in-process ``cityseg.cli.main`` runs)."""
    from cityseg import models

    monkeypatch.setitem(models.MODELS, "tiny", models.Entry(partial(TinyNet), "tiny test net"))
    TinyNet.calls, TinyNet.nan_at = 0, 0
    yield TinyNet
    TinyNet.calls, TinyNet.nan_at = 0, 0


# ---- SIGKILL at random points, then --resume ------------------------------------------------------------------
def test_sigkill_at_random_points_then_resume_equals_uninterrupted(data, reference, tmp_path):
    """Six SIGKILLs in a row, alternating inside a training step and halfway through a checkpoint write, at
    points drawn at random; the child holds at the point until killed. After each kill last.pt loads, and
    --resume continues. The end state equals the uninterrupted run exactly."""
    rng = random.Random(20240817)
    out = tmp_path / "run"
    kills = {"step": 0, "save": 0}
    tmp_seen = 0
    for cycle in range(6):
        mode = ("step", "save")[cycle % 2]
        events = tmp_path / f"events{cycle}.log"
        resume = (out / "last.pt").exists()
        argv = train_args(data, out, *(["--resume"] if resume else []))
        point = f"{mode} {rng.randint(1, 3)}"  # the n-th training forward or checkpoint write of this process
        proc = start(argv, env(events, hold=point))
        held(events, point, proc)
        os.kill(proc.pid, signal.SIGKILL)
        finish(proc)
        assert proc.returncode == -signal.SIGKILL
        kills[mode] += 1
        if mode == "save":
            leftovers = [p.name for p in out.glob(".*.pt.*.tmp")]
            assert leftovers, "the kill should have hit a checkpoint write in progress"
            tmp_seen += 1
        # whatever was on disk before is intact: last.pt (if any) loads and is consistent
        if (out / "last.pt").exists():
            ck = load_checkpoint(out / "last.pt")
            assert ck["model_name"] == "tiny" and 0 <= ck["epoch"] <= TOTAL_EPOCHS
            assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
        for name in ("best.pt",):
            if (out / name).exists():
                load_checkpoint(out / name)
    assert kills == {"step": 3, "save": 3} and tmp_seen == 3
    # finish the run
    ck = load_checkpoint(out / "last.pt")
    assert (ck["epoch"], ck["step"]) < (TOTAL_EPOCHS, 0), "the kills should have left work to resume"
    proc = run(train_args(data, out, "--resume"), env())
    assert proc.returncode == 0, proc.stderr
    assert "resuming" in proc.stdout
    assert_same_run(reference, out)
    # orphaned temp files of killed checkpoint writes are cleaned up when the run resumes
    assert {p.name for p in out.iterdir()} == {p.name for p in reference.iterdir()}


def test_sigkill_after_an_epoch_end_then_resume_equals_uninterrupted(data, reference, tmp_path):
    """No step checkpoints: a SIGKILL inside epoch 2's first step leaves epoch 1's last.pt, and --resume
    from it ends on the uninterrupted run."""
    out, events = tmp_path / "run", tmp_path / "events.log"
    proc = start(train_args(data, out, "--set", "train.checkpoint_every=0"), env(events, hold="step 4"))
    held(events, "step 4", proc)  # 3 steps per epoch: epoch 2 has begun
    os.kill(proc.pid, signal.SIGKILL)
    finish(proc)
    assert proc.returncode == -signal.SIGKILL
    ck = load_checkpoint(out / "last.pt")
    assert (ck["epoch"], ck["step"]) == (1, 0)
    proc = run(train_args(data, out, "--resume", "--set", "train.checkpoint_every=0"), env())
    assert proc.returncode == 0, proc.stderr
    assert_same_run(reference, out)


def test_sigkill_with_timed_step_checkpoints_then_resume_equals_uninterrupted(data, reference, tmp_path):
    """``train.checkpoint_minutes`` alone (no step-count saves), at an interval below one step: five SIGKILLs
    at points drawn at random (inside a step, halfway through the save after it, or once that save is
    written), each followed by the same command with --resume, end on the uninterrupted run's weights bit
    for bit; the kills find mid-epoch checkpoints, and the saved position never goes back."""
    rng = random.Random(20251130)
    out = tmp_path / "run"
    timed = ("--set", "train.checkpoint_every=0", "--set", "train.checkpoint_minutes=1e-6")
    positions = [(0, 0)]
    for cycle in range(5):
        events = tmp_path / f"events{cycle}.log"
        argv = train_args(data, out, *timed, *(["--resume"] if (out / "last.pt").exists() else []))
        point = f"{rng.choice(['step', 'save', 'saved'])} {rng.randint(1, 3)}"
        proc = start(argv, env(events, hold=point))
        held(events, point, proc)
        os.kill(proc.pid, signal.SIGKILL)
        finish(proc)
        assert proc.returncode == -signal.SIGKILL
        if (out / "last.pt").exists():  # a kill inside the first step finds none yet: --resume starts afresh
            ck = load_checkpoint(out / "last.pt")
            positions.append((ck["epoch"], ck["step"]))
    assert positions == sorted(positions), positions
    assert any(step > 0 for _, step in positions), f"no kill found a mid-epoch checkpoint: {positions}"
    assert positions[-1] < (TOTAL_EPOCHS, 0), "the kills should have left work to resume"
    proc = run(train_args(data, out, *timed, "--resume"), env())
    assert proc.returncode == 0, proc.stderr
    assert_same_run(reference, out)
    assert {p.name for p in out.iterdir()} == {p.name for p in reference.iterdir()}


# ---- Ctrl-C -------------------------------------------------------------------------------------------------
def signals_seen(events: Path) -> int:
    return sum(ln.startswith("signal SIGINT") for ln in events.read_text().splitlines())


def test_sigint_saves_resumable_checkpoint_and_exits_cleanly(data, reference, tmp_path):
    """Ctrl-C inside epoch 2's second step (held there until the signal is handled): the step finishes,
    last.pt holds exactly epoch 2 step 2, and --resume ends on the uninterrupted run."""
    out = tmp_path / "run"
    events = tmp_path / "events.log"
    proc = start(train_args(data, out, "--set", "train.checkpoint_every=0"), env(events, hold="step 5"))
    held(events, "step 5", proc)  # epoch 2, step 2 of 3 is running
    os.kill(proc.pid, signal.SIGINT)
    assert wait_for(events, lambda ls: "signal SIGINT" in ls, proc)
    release_file(events).touch()
    stdout, stderr = finish(proc)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr + stdout
    assert "interrupted (SIGINT): saved" in stdout and "--resume" in stdout
    ck = load_checkpoint(out / "last.pt")
    assert (ck["epoch"], ck["step"]) == (1, 2)  # the mid-epoch state after the interrupted step
    assert not list(out.glob(".*.tmp"))
    proc = run(train_args(data, out, "--resume", "--set", "train.checkpoint_every=0"), env())
    assert proc.returncode == 0, proc.stderr
    assert_same_run(reference, out)


def test_second_sigint_aborts_at_once_and_keeps_last_checkpoint(data, tmp_path):
    """Both Ctrl-Cs reach the child while it is halfway through its second checkpoint write; the second
    is sent once the first has been handled, and aborts the write."""
    out = tmp_path / "run"
    events = tmp_path / "events.log"
    proc = start(train_args(data, out), env(events, hold="save 2"))
    held(events, "save 2", proc)
    os.kill(proc.pid, signal.SIGINT)  # first: finish the step, then save
    assert wait_for(events, lambda ls: "signal SIGINT" in ls, proc)
    os.kill(proc.pid, signal.SIGINT)  # second, while the checkpoint is being written: abort now
    stdout, stderr = finish(proc)
    assert proc.returncode == 130 and signals_seen(events) == 2
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "cityseg train: interrupted"
    ck = load_checkpoint(out / "last.pt")  # the first checkpoint, intact
    assert ck["epoch"] == 0 and ck["step"] == 1
    assert not list(out.glob(".*.tmp"))  # the aborted write removed its temp file


# ---- full or unwritable disk -------------------------------------------------------------------------------------
def _limit_file_size(nbytes: int):
    def pre():
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return pre


def test_full_disk_during_checkpoint_write_is_one_line_and_keeps_checkpoints(data, reference, tmp_path):
    """RLIMIT_FSIZE makes every write past N bytes fail with EFBIG, as a full disk does with ENOSPC."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = tree(out)
    limit = (out / "config.toml").stat().st_size + 4096  # config.toml fits, a checkpoint does not
    argv = train_args(data, out, "--resume", "--epochs", str(TOTAL_EPOCHS + 1))
    proc = run(argv, env(), preexec_fn=_limit_file_size(limit))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("cityseg train: error: ") and "last.pt" in lines[0]
    assert "File too large" in lines[0] or "No space" in lines[0] or "cannot write" in lines[0]
    after = tree(out)
    assert after["last.pt"] == before["last.pt"] and after["best.pt"] == before["best.pt"]
    assert set(after) == set(before)  # no temp files left


@pytest.mark.parametrize("err", [errno.EACCES, errno.ENOSPC, errno.EROFS])
def test_unwritable_run_dir_is_one_line_and_keeps_checkpoints(data, reference, tmp_path, tiny, monkeypatch, capsys, err):
    """Root ignores permission bits, so the failure is injected: os.replace (the commit of every atomic
    write) refuses inside the run folder."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = tree(out)
    real_replace = os.replace

    def refuse(src, dst, *a, **k):
        if Path(dst).parent == out:
            raise OSError(err, os.strerror(err), str(src))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", refuse)
    rc = main(train_args(data, out, "--resume", "--epochs", str(TOTAL_EPOCHS + 1)))
    monkeypatch.undo()
    io_ = capsys.readouterr()
    lines = io_.err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in io_.err, io_.err
    assert os.strerror(err) in lines[0] and str(out) in lines[0]
    assert tree(out) == before  # nothing changed, no temp files


def test_full_disk_while_preparing_keeps_the_previous_cache(tmp_path):
    from cityseg.data import cache
    from conftest import write_tiny_dataset

    root = write_tiny_dataset(tmp_path / "r", {"train": 4}, size=(64, 128))
    old = cache.prepare(root, "train", size=(32, 64))
    before = tree(old.folder)
    proc = subprocess.run(
        [sys.executable, "-m", "cityseg", "prepare", "--data", str(root), "--size", "32x64", "--split", "train", "--force", "--workers", "1"],
        env=env(),
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size(4096),
        timeout=WAIT_S,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr and str(old.folder) in lines[0], proc.stderr
    assert tree(old.folder) == before  # the committed cache is untouched and still valid
    again = cache.load(root, "train", size=(32, 64))
    assert again is not None and again.images_path == old.images_path


# ---- concurrent prepare (CLI level) ------------------------------------------------------------------------------
def test_two_prepare_commands_at_once_do_not_corrupt_the_cache(tmp_path):
    import numpy as np

    import references
    from cityseg.data import cache
    from conftest import write_tiny_dataset

    root = write_tiny_dataset(tmp_path / "r", {"train": 12, "val": 3}, size=(48, 96))
    argv = [sys.executable, "-m", "cityseg", "prepare", "--data", str(root), "--size", "24x48", "--workers", "1"]
    procs = [subprocess.Popen(argv, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=WAIT_S) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    for split, n in (("train", 12), ("val", 3)):
        entry = cache.load(root, split, size=(24, 48))
        assert entry is not None and len(entry) == n
        images, labs = entry.open()
        for i, (image_path, label_path) in enumerate(references.split_pairs(root, split)):
            image, label = references.frame(image_path, label_path, (24, 48), "area")
            assert np.array_equal(images[i], image) and np.array_equal(labs[i], label)
        assert len(list(entry.folder.glob("*.npy"))) == 2 and not list(entry.folder.glob(".*.tmp"))


# ---- NaN in a batch ----------------------------------------------------------------------------------------------
def test_nan_batch_stops_the_run_with_one_line_and_no_nan_best(data, tmp_path, tiny, capsys):
    out = tmp_path / "run"
    tiny.nan_at = 5  # epoch 2, step 2
    rc = main(train_args(data, out, "--epochs", "3", "--set", "train.checkpoint_every=0"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "non-finite loss" in err[0] and "epoch 2 step 2" in err[0]
    for name in ("last.pt", "best.pt"):
        ck = load_checkpoint(out / name)
        assert ck["epoch"] == 1
        assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert not list(out.glob(".*.tmp"))


def test_nan_batch_under_skip_policy_skips_one_step(data, tmp_path, tiny, capsys):
    out = tmp_path / "run"
    tiny.nan_at = 5
    rc = main(train_args(data, out, "--epochs", "2", "--set", 'train.nan_policy="skip"'))
    stdout = capsys.readouterr().out
    assert rc == 0 and "skipping step 2 of epoch 2: non-finite loss" in stdout
    for name in ("last.pt", "best.pt"):
        ck = load_checkpoint(out / name)
        assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    ck = load_checkpoint(out / "last.pt")
    assert ck["epoch"] == 2 and ck["optimizer"]["state"][0]["step"] == 5  # 6 steps, one skipped
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in ck["history"])


def test_weights_blowing_up_are_never_saved_as_best(data, tmp_path, tiny, capsys):
    """A huge LR drives the weights non-finite: the run stops, and best.pt/last.pt hold the last finite model."""
    out = tmp_path / "run"
    rc = main(train_args(data, out, "--epochs", "3", "--lr", "1e30", "--set", 'train.nan_policy="skip"'))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "non-finite" in err[0]
    for name in ("last.pt", "best.pt"):
        if (out / name).exists():
            ck = load_checkpoint(out / name)
            assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point()), name
