"""Bandwidth limits: token buckets shared by every download (and one per download with max_bps), and
one shared by every peer upload (the bodies of `GET /v2/blobs`).

Consumers take tokens after reading a chunk and wait while the bucket is in debt, so the sum of
all consumers stays at the rate however many there are; reading less (a slow server) leaves
more for the others. Rate 0 means unlimited; a new rate takes effect within one wait slice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["Throttle", "TokenBucket"]

_SLICE = 0.2  # longest single wait, so a changed rate is noticed quickly


class TokenBucket:
    def __init__(self, rate: int = 0, burst_secs: float = 0.2, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.burst_secs = burst_secs
        self.rate = max(0, rate)
        self.tokens = 0.0
        self.taken = 0  # bytes taken in all (the peer uploads' count of what the hive sent)
        self._last = clock()

    def set_rate(self, rate: int) -> None:
        self._refill()
        self.rate = max(0, rate)
        self.tokens = min(self.tokens, self._capacity())

    def _capacity(self) -> float:
        return max(self.rate * self.burst_secs, 64 * 1024)

    def _refill(self) -> None:
        now = self._clock()
        if self.rate > 0:
            self.tokens = min(self._capacity(), self.tokens + (now - self._last) * self.rate)
        self._last = now

    def take(self, n: int) -> float:
        """Take n tokens; the seconds to wait before the bucket is out of debt (0 when unlimited)."""
        self.taken += n
        if self.rate <= 0:
            return 0.0
        self._refill()
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def debt_wait(self) -> float:
        if self.rate <= 0:
            return 0.0
        self._refill()
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    async def consume(self, n: int) -> None:
        delay = self.take(n)
        while delay > 0:
            await asyncio.sleep(min(_SLICE, delay))
            delay = self.debt_wait()


class Throttle:
    """The hive-wide bucket of downloads plus optional per-download buckets, and the bucket of peer
    uploads; the rates of the shared ones are set by the BandwidthGovernor (README, "Bandwidth")."""

    def __init__(self, rate: int = 0) -> None:
        self.total = TokenBucket(rate)
        self.upload = TokenBucket(0)
        self._per_download: dict[str, TokenBucket] = {}

    @property
    def limit(self) -> int:
        return self.total.rate

    def set_limit(self, rate: int) -> None:
        self.total.set_rate(rate)

    def set_download_limit(self, download_id: str, rate: int | None) -> None:
        if rate:
            self._per_download[download_id] = TokenBucket(rate)
        else:
            self._per_download.pop(download_id, None)

    def download_limit(self, download_id: str) -> int:
        """The download's own cap (max_bps), 0 if it has none."""
        own = self._per_download.get(download_id)
        return 0 if own is None else own.rate

    def forget(self, download_id: str) -> None:
        self._per_download.pop(download_id, None)

    def active(self, download_id: str) -> bool:
        return self.total.rate > 0 or download_id in self._per_download

    async def consume(self, download_id: str, n: int) -> None:
        own = self._per_download.get(download_id)
        if own is not None:
            await own.consume(n)
        if self.total.rate > 0:
            await self.total.consume(n)
