"""Speed and ETA maths for the tracker: pure functions of byte counts and clock readings.

Speed is an EMA (alpha 0.3 by default) of the speed measured over whole intervals between
samples; the first measurement seeds the average. ETA is the remaining bytes over that speed.
"""

from __future__ import annotations

import math

__all__ = ["SpeedMeter", "eta_secs"]


class SpeedMeter:
    """EMA of the speed measured between samples; the first measurement seeds the average."""

    def __init__(self, alpha: float = 0.3) -> None:
        self.alpha = alpha
        self.speed_bps = 0.0
        self._last_t: float | None = None
        self._last_bytes = 0
        self._seeded = False

    def reset(self, now: float, nbytes: int) -> None:
        self._last_t, self._last_bytes = now, nbytes

    def sample(self, now: float, nbytes: int) -> float:
        if self._last_t is None:
            self.reset(now, nbytes)
            return self.speed_bps
        dt = now - self._last_t
        if dt <= 0:
            return self.speed_bps
        instant = max(0, nbytes - self._last_bytes) / dt
        if self._seeded:
            self.speed_bps = self.alpha * instant + (1 - self.alpha) * self.speed_bps
        else:
            self.speed_bps, self._seeded = instant, True
        self.reset(now, nbytes)
        return self.speed_bps


def eta_secs(remaining: int | None, speed_bps: float) -> int | None:
    if remaining is None or speed_bps <= 0:
        return None
    return math.ceil(max(0, remaining) / speed_bps)
