"""Time left and the status line of a running worker ("42% · tile 12/40 · about 20 s left")."""

from __future__ import annotations

import time
from collections.abc import Callable


class EtaEstimator:
    """Time left from the progress fractions, measured from the first tile on.

    Loading the model happens at fraction 0 and says nothing about the speed, so the clock
    starts at the first event with a fraction above zero.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._start: tuple[float, float] | None = None

    def update(self, fraction: float) -> float | None:
        now = self._clock()
        if fraction <= 0:
            return None
        if self._start is None:
            self._start = (now, fraction)
            return None
        started, first = self._start
        elapsed = now - started
        if fraction >= 1.0 or fraction <= first or elapsed < 0.5:
            return None
        rate = (fraction - first) / elapsed
        return (1.0 - fraction) / rate


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"about {max(1, round(seconds))} s left"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min left"
    return f"about {minutes // 60} h {minutes % 60} min left"


def status_text(fraction: float, message: str, eta: float | None) -> str:
    parts = [f"{fraction * 100:.0f}%", message, format_eta(eta)]
    return " · ".join(part for part in parts if part)
