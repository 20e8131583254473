"""Wall time per phase of the demo, in the order the phases ran."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class Timer:
    """Seconds per named phase (a phase entered twice adds up) and the time since the start.

    ``started_at`` (seconds since the epoch, as ``time.time()``) starts the clock earlier: the time
    before this process began counts, as a first phase named ``setup``."""

    def __init__(self, started_at: float | None = None) -> None:
        setup = 0.0 if started_at is None else max(0.0, time.time() - started_at)
        self.start = time.monotonic() - setup
        self.phases: dict[str, float] = {"setup": setup} if started_at is not None else {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.monotonic() - t

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def rounded(self) -> dict[str, float]:
        """Seconds per phase to 0.1 s, plus ``other``: the time no phase accounts for."""
        total = self.elapsed()
        out = {k: round(v, 1) for k, v in self.phases.items()}
        out["other"] = round(max(0.0, total - sum(self.phases.values())), 1)
        return out
