"""`cityseg evaluate --pred-dir` against the official script, on the same frames."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from cityseg import io, labels
from cityseg.data import layout
from cityseg.data.synth import generate
from cityseg.errors import CitysegError
from cityseg.tools.benchmark.config import FULLRES

# ---- `cityseg evaluate --pred-dir` vs the official script ----------------------------------------
#: a hang guard for one timed evaluation process, far above what a healthy one needs
EVAL_TIMEOUT_S = 3600
#: the official evaluator as its console script runs it (``csEvalPixelLevelSemanticLabeling``); NumPy 2.4
#: removed ``np.in1d``, which cityscapesScripts still calls, so it is restored (same semantics) first
OFFICIAL_EVAL = (
    "import numpy as np\n"
    "if not hasattr(np, 'in1d'):\n"
    "    np.in1d = lambda a, b, invert=False: np.isin(np.asarray(a).ravel(), b, invert=invert)\n"
    "from cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling import main\n"
    "main()\n"
)


def write_eval_predictions(root: Path, out: Path, seed: int = 0) -> Path:
    """One labelId prediction per val frame (``<city>/<stem>_pred.png``): the ground truth with a third of
    it replaced by random labelId blocks, so every score is below 1 and every class path is exercised."""
    rng = np.random.default_rng(seed)
    for s in layout.find_samples(root, "val"):
        pred = io.read_label(s.label).copy()
        h, w = pred.shape
        blocks = rng.integers(0, labels.NUM_LABEL_IDS, (h // 64, w // 64), dtype=np.uint8)
        noise = np.kron(blocks, np.ones((64, 64), np.uint8))
        mask = np.kron(rng.random((h // 64, w // 64)) < 1 / 3, np.ones((64, 64), bool))
        pred[: noise.shape[0], : noise.shape[1]][mask] = noise[mask]
        io.write_png(out / s.city / f"{s.stem}_pred.png", pred)
    return out


def _link_first_frame(root: Path, out: Path) -> Path:
    """A one-frame view of ``root``'s val split (symlinks): with it the per-process start-up is measured."""
    sample = layout.find_samples(root, "val")[0]
    for src in sorted(sample.label.parent.glob(f"{sample.stem}_*")) + [sample.image]:
        dst = out / src.relative_to(root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.symlink_to(src.resolve())
    return out


def eval_frames(work: Path, images: int) -> tuple[Path, Path, Path]:
    """The ``images`` full-size val frames (generated once), a view of the first alone, and the predictions."""
    root = work / f"eval-{images}"
    try:
        ok = len(layout.find_samples(root, "val")) == images
    except CitysegError:
        ok = False
    if not ok:
        generate(root, train=0, val=images, test=0, size=FULLRES, seed=2)
    one = _link_first_frame(root, work / f"eval-{images}-first")
    preds = work / f"eval-{images}-pred"
    if not preds.is_dir():
        write_eval_predictions(root, preds)
    return root, one, preds


def timed(cmd: list[str], env: dict[str, str], what: str, cwd: Path) -> float:
    """Wall seconds of one process; a failure or a hang is a one-line error naming ``what``."""
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=cwd, timeout=EVAL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise CitysegError(f"{what} did not finish in {EVAL_TIMEOUT_S} s") from None
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CitysegError(f"{what} failed: {tail}")
    return elapsed


def clean_env() -> dict[str, str]:
    """This environment without the ``CITYSCAPES_*`` variables, so each evaluator reads only what it is given."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CITYSCAPES_")}


def ours_seconds(data: Path, preds: Path, out_json: Path, repeats: int) -> float:
    """Median wall time of ``cityseg evaluate --pred-dir`` on ``data``'s val split."""
    cmd = [sys.executable, "-m", "cityseg", "evaluate", "--data", str(data), "--split", "val", "--pred-dir", str(preds)]
    cmd += ["--json", str(out_json), "--no-confusion"]
    return statistics.median(timed(cmd, clean_env(), "cityseg evaluate", out_json.parent) for _ in range(repeats))


def official_seconds(data: Path, preds: Path, out_dir: Path, repeats: int) -> float:
    """Median wall time of the official evaluator on the same frames and predictions."""
    out_dir.mkdir(exist_ok=True)
    env = {**clean_env(), "CITYSCAPES_DATASET": str(data), "CITYSCAPES_RESULTS": str(preds), "CITYSCAPES_EXPORT_DIR": str(out_dir)}
    return statistics.median(timed([sys.executable, "-c", OFFICIAL_EVAL], env, "official evaluator", out_dir.parent) for _ in range(repeats))


def eval_speed(work: Path, images: int = 3, repeats: int = 3, val_frames: int = 500) -> dict[str, Any]:
    """Wall time of ``cityseg evaluate --pred-dir`` and of the official ``csEvalPixelLevelSemanticLabeling``
    on full-size (1024x2048) SynthCity val frames, each run as its own process (median of ``repeats``).

    Both are timed on ``images`` frames and on the first frame alone; the difference gives the cost per
    frame without the process start-up, and the projection to the ``val_frames``-frame Cityscapes val split
    (start-up + ``val_frames`` x per frame) is what the target is judged on. The mIoU both report on the
    ``images`` frames must agree (it is the same protocol).
    """
    if images < 2:
        raise CitysegError(f"--eval-images must be >= 2 (one-frame and {images}-frame runs are compared); got {images}")
    root, one, preds = eval_frames(work, images)
    ours_n, ours_1 = ours_seconds(root, preds, work / "eval-cityseg.json", repeats), ours_seconds(one, preds, work / "eval-cityseg-1.json", repeats)
    off_n, off_1 = official_seconds(root, preds, work / "eval-official", repeats), official_seconds(one, preds, work / "eval-official-1", repeats)
    ref = json.loads((work / "eval-official" / "resultPixelLevelSemanticLabeling.json").read_text())
    mine = json.loads((work / "eval-cityseg.json").read_text())
    per_ours = max(ours_n - ours_1, 1e-6) / (images - 1)
    per_off = max(off_n - off_1, 1e-6) / (images - 1)
    proj_ours = ours_1 - per_ours + val_frames * per_ours
    proj_off = off_1 - per_off + val_frames * per_off
    return {
        "images": images,
        "cityseg_s": round(ours_n, 3),
        "official_s": round(off_n, 3),
        "speedup": round(off_n / ours_n, 2),
        "cityseg_s_per_frame": round(per_ours, 4),
        "official_s_per_frame": round(per_off, 4),
        "cityseg_startup_s": round(ours_1 - per_ours, 3),
        "official_startup_s": round(off_1 - per_off, 3),
        "val_frames": val_frames,
        "speedup_val_split": round(proj_off / proj_ours, 2),
        "miou_cityseg": mine["mIoU"],
        "miou_official": ref["averageScoreClasses"],
        "same_miou": bool(abs(mine["mIoU"] - ref["averageScoreClasses"]) < 1e-6),
    }
