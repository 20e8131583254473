"""What a demo run is asked to do: ``DemoOptions``, its defaults, and the checks of every value.

Light on imports (no torch), so ``cityseg demo --help`` reads its defaults from here quickly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from cityseg.errors import CitysegError

DEFAULT_OUT = Path("demo")
DEFAULT_MINUTES = 10.0
#: the model and recipe the demo trains: an ImageNet-pretrained EfficientNet-Lite0 with an FPN head, which
#: within the budget scores higher than the from-scratch real-time networks on SynthCity and far higher on
#: real photographs, and the short-budget CPU recipe with RandConv and the encoder's first stages frozen,
#: which carry the demo's model to real frames (docs/benchmarks.md, "SynthCity -> real", "Frozen encoder
#: stages"); one place to change both
DEFAULT_MODEL = "lite0_fpn"
DEFAULT_RECIPE = "cpu-fast-real"
#: val frames are generated at the official size, so the score follows the official protocol
DEFAULT_FRAME_SIZE = (1024, 2048)
#: the seed recipe's only demo change: in the budget its batch of 16 gives too few Adam steps to leave
#: chance; batch 2 gives 8x the updates on the same images at the same cost per image
DEMO_BATCH_SIZE = 2
SEED_RECIPE = "seed"
#: rows of the results figure (the seed's figure showed 32; 8 keep the picture readable at a glance)
FIGURE_ROWS = 8
#: frames in the report's gallery, worst first (the demo's val split is 50 frames)
REPORT_FRAMES = 48


@dataclass(frozen=True)
class DemoOptions:
    """Every choice of a demo run, checked on creation (a bad value is a one-line ``CitysegError``).

    ``minutes``: the wall-clock budget of the whole demo; ``train_minutes`` fixes the training time instead.
    ``recipe`` is a shipped recipe name or a TOML file; ``batch_size`` and ``grad_clip`` default to the
    recipe's (the seed recipe's batch to ``DEMO_BATCH_SIZE``). ``epochs`` caps the epochs (None: the budget
    decides). ``size`` overrides the recipe's training size. ``train_frames`` and ``val_frames`` (None:
    scaled to the budget) and ``frame_size`` (the val frames' size) only apply when SynthCity is generated.
    ``report_frames`` worst val frames go into the report's gallery; ``json_path`` gets a copy of the summary.
    ``started_at`` (seconds since the epoch; None: now) is when the budget began: ``make demo`` passes
    the time it started, so setting up the venv is part of the budget.
    """

    out: Path = DEFAULT_OUT
    minutes: float = DEFAULT_MINUTES
    data: Path | None = None
    model: str = DEFAULT_MODEL
    recipe: str = DEFAULT_RECIPE
    seed: int = 0
    train_frames: int | None = None
    val_frames: int | None = None
    frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE
    batch_size: int | None = None
    grad_clip: float | None = None
    size: tuple[int, int] | None = None
    epochs: int | None = None
    train_minutes: float | None = None
    figure_rows: int = FIGURE_ROWS
    report_frames: int = REPORT_FRAMES
    json_path: Path | None = None
    workers: int | None = None
    progress: bool = True
    started_at: float | None = None

    def __post_init__(self) -> None:
        fix = object.__setattr__  # frozen: normalise the types once, here
        fix(self, "out", Path(self.out))
        fix(self, "data", None if self.data is None else Path(self.data))
        fix(self, "json_path", None if self.json_path is None else Path(self.json_path))
        fix(self, "frame_size", tuple(int(v) for v in self.frame_size))
        fix(self, "size", None if self.size is None else tuple(int(v) for v in self.size))
        self.check()

    def check(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise CitysegError(f"{self.out}: --out exists and is not a folder")
        _positive_number("--minutes", self.minutes)
        if self.train_minutes is not None:
            _positive_number("--train-minutes", self.train_minutes)
        for name, value in (
            ("--train-frames", 1 if self.train_frames is None else self.train_frames),
            ("--val-frames", 1 if self.val_frames is None else self.val_frames),
            ("--batch-size", 1 if self.batch_size is None else self.batch_size),
            ("--figure-rows", self.figure_rows),
            ("--report-frames", self.report_frames),
            ("--epochs", 1 if self.epochs is None else self.epochs),
        ):
            if not isinstance(value, int) or value < 1:
                raise CitysegError(f"{name} must be a positive integer, got {value}")
        if len(self.frame_size) != 2 or min(self.frame_size) < 1:
            raise CitysegError(f"--frame-size must be HxW with positive values, got {self.frame_size}")
        if self.grad_clip is not None and (not math.isfinite(self.grad_clip) or self.grad_clip < 0):
            raise CitysegError(f"--grad-clip must be >= 0 (0 = off), got {self.grad_clip}")
        if self.started_at is not None:
            _past_time("--since", self.started_at)
        if self.json_path is not None and self.json_path.is_dir():  # fail now, not after the whole run
            raise CitysegError(f"{self.json_path}: --json is a folder, expected a file path")


#: how far back a budget's start may lie: further is a mistaken value, not a setup that took that long
MAX_SETUP_S = 24 * 3600.0


def _past_time(name: str, value) -> None:
    """``value`` is a time since the epoch within the last ``MAX_SETUP_S`` (and not ahead of the clock)."""
    ago = time.time() - value if isinstance(value, (int, float)) and math.isfinite(value) else math.nan
    if not 0.0 <= ago + 1.0 <= MAX_SETUP_S:  # 1 s of slack: `date +%s` rounds down
        raise CitysegError(f"{name} must be a recent time in seconds since the epoch (as `date +%s` prints), got {value}")


def _positive_number(name: str, value) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise CitysegError(f"{name} must be a positive number, got {value}")
