"""Wall time per phase of the demo, in the order the phases ran."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class Timer:
    """Seconds per named phase (a phase entered twice adds up) and the time since the start."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.phases: dict[str, float] = {}

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
