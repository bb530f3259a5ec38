"""One retry policy for every request the hive makes (the hub's API and file transfers alike), as
huggingface_hub's `utils/_http.py` is one for its own (README, "The hub's behaviours").

- A failed attempt (`Retry`) is tried again after exponential backoff with full jitter, at least
  what the server's `Retry-After` asked (capped); after `max_attempts` consecutive failures the
  request fails for good: `DOWNLOAD_TIMEOUT` when the last one timed out, else `DOWNLOAD_FAILED`.
- The hub's rate limit (`RateLimited`) is no failure: its window is waited out, shown meanwhile to
  whoever asks (`Waiting`: the download's `waiting_until` and `waiting_reason`), unless it ends
  later than `rate_limit_max_wait` (HIVE_RATE_LIMIT_MAX_WAIT), which fails the request at once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.hive.net.errors import DownloadError, RateLimited, Retry
from shared.backoff import Backoff
from shared.models import ErrorCode

__all__ = ["RetryPolicy", "Waiting", "backoff_delay"]

# told when a request waits out the hub's rate-limit window, or for a peer hive to begin a blob (till when,
# and why), and when it waits no more
Waiting = Callable[[datetime | None, str | None], None]


def backoff_delay(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter: uniform in [0.5, 1] x base * 2^(attempt-1), capped
    (a base above the cap waits the cap)."""
    return Backoff(min(base, cap), cap, spread=(0.5, 1.0), rng=rand).delay(attempt)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Built from the hive's settings (`DownloaderConfig.retry`), which hold the defaults."""

    max_attempts: int
    base_delay: float
    max_delay: float
    rate_limit_max_wait: float
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep

    def check_window(self, limited: RateLimited) -> None:
        """DownloadError when the hub's rate-limit window ends later than is worth waiting for."""
        if limited.wait > self.rate_limit_max_wait:
            raise DownloadError(
                ErrorCode.DOWNLOAD_FAILED,
                f"{limited}: its window ends in {limited.wait:g} s,"
                f" longer than HIVE_RATE_LIMIT_MAX_WAIT ({self.rate_limit_max_wait:g} s)",
            ) from None

    def give_up(self, retry: Retry, failures: int, limit: int | None, what: str) -> None:
        """Raise the request's DownloadError once `failures` consecutive attempts failed (`limit`, else
        `max_attempts`); `what` says what failed ("gave up after 3 attempts", say)."""
        if failures >= (limit or self.max_attempts):
            code = ErrorCode.DOWNLOAD_TIMEOUT if retry.timeout else ErrorCode.DOWNLOAD_FAILED
            raise DownloadError(code, f"{what}: {retry}") from None

    def delay(self, attempt: int, retry: Retry) -> float:
        """The wait before retry number `attempt`: backoff, or what the server asked if longer (capped)."""
        delay = backoff_delay(attempt, self.base_delay, self.max_delay)
        if retry.delay is not None:
            delay = min(max(delay, retry.delay), max(self.max_delay, 1.0))
        return delay

    async def wait_out(self, limited: RateLimited, waiting: Waiting | None = None) -> None:
        """Wait for the hub's rate-limit window to end, telling `waiting` till when (and then that it
        is over); DownloadError when the window ends too late to wait for."""
        self.check_window(limited)
        await self.wait_shown(limited.wait, str(limited), waiting)

    async def wait_shown(self, secs: float, reason: str, waiting: Waiting | None) -> None:
        """Sleep `secs`, telling `waiting` till when and why, and then that the wait is over."""
        if waiting is not None:
            waiting(datetime.now(UTC) + timedelta(seconds=secs), reason)
        try:
            await self.sleep(secs)
        finally:
            if waiting is not None:
                waiting(None, None)
