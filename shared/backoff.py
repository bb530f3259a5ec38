"""Exponential backoff: the one helper every retry loop here uses.

The n-th delay (n from 1) is `min(maximum, initial * factor**(n-1))` times a random factor drawn
uniformly from `spread`; `maximum` is never below `initial`. `delay(n)` is that rule on its own,
for a caller that counts its own attempts; `next()`/`reset()` count them for one that does not.
Callers keep their own jitter: the downloader's full jitter `(0.5, 1.0)`, the queen's and the
hive registration's +-10 % `(0.9, 1.1)`, the keeper's none `(1.0, 1.0)`.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """Exponential backoff with a cap and +-`jitter` proportional noise (or a `spread` of it)."""

    def __init__(
        self,
        initial: float,
        maximum: float,
        factor: float = 2.0,
        jitter: float = 0.1,
        rng: Callable[[], float] = random.random,
        *,
        spread: tuple[float, float] | None = None,
    ) -> None:
        self.initial = initial
        self.maximum = max(initial, maximum)
        self.factor = factor
        self._low, self._high = spread if spread is not None else (1.0 - jitter, 1.0 + jitter)
        self._rng = rng
        self._attempt = 1

    def delay(self, attempt: int) -> float:
        try:
            raw = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        except OverflowError:  # a loop that has retried for hours: long since at the cap
            raw = self.maximum if self.initial > 0 else 0.0
        return max(0.0, raw * (self._low + (self._high - self._low) * self._rng()))

    def next(self) -> float:
        delay = self.delay(self._attempt)
        self._attempt += 1
        return delay

    def reset(self) -> None:
        self._attempt = 1
