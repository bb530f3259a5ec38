"""The hub's "resolvers" rate limit: a fixed window per client IP, and forced 429s for tests.

No HTTP here. The headers are those of the IETF ratelimit-headers draft the real hub sends and
huggingface_hub's `parse_ratelimit_headers` reads: ``RateLimit: "resolvers";r=<remaining>;t=<secs>``
and ``RateLimit-Policy: "fixed window";"resolvers";q=<quota>;w=<window>``, on every resolve answer
as the real hub sends them, not only on a 429 (which adds ``Retry-After``). By default the quota is
the real hub's for an anonymous caller, 3,000 resolves per 300 s; `set_quota(None)` lifts it (and
the headers).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

RESOURCE = "resolvers"
ANONYMOUS_QUOTA, WINDOW_SECS = 3000, 300  # the real hub's resolvers, per IP (a free account: 5,000)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    headers: dict[str, str]


class ResolverLimit:
    """`take(client)` counts one resolve of that client against `set_quota`'s (default: ANONYMOUS_QUOTA
    per WINDOW_SECS); `fail_next` forces 429s."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._quota: int | None = ANONYMOUS_QUOTA
        self._window = WINDOW_SECS
        self._windows: dict[str, tuple[float, int]] = {}  # client -> (window start, resolves in it)
        self._forced = 0
        self._forced_reset = 0

    def set_quota(self, quota: int | None, window: int = WINDOW_SECS) -> None:
        """At most `quota` resolves per client per `window` seconds (None: unlimited). Restarts windows."""
        with self._lock:
            self._quota, self._window = quota, window
            self._windows.clear()

    def fail_next(self, count: int, reset_secs: int = 1) -> None:
        """The next `count` resolves (any client) answer 429 with ``t=reset_secs`` and ``Retry-After``."""
        with self._lock:
            self._forced, self._forced_reset = count, reset_secs

    def take(self, client: str) -> Verdict:
        with self._lock:
            quota = self._quota if self._quota is not None else 0
            if self._forced > 0:
                self._forced -= 1
                return self._verdict(False, 0, self._forced_reset, max(quota, 1))
            if self._quota is None:
                return Verdict(True, {})
            now = self._clock()
            start, used = self._windows.get(client, (now, 0))
            if now - start >= self._window:
                start, used = now, 0
            reset = max(1, math.ceil(start + self._window - now))
            if used >= quota:
                return self._verdict(False, 0, reset, quota)
            self._windows[client] = (start, used + 1)
            return self._verdict(True, quota - used - 1, reset, quota)

    def _verdict(self, allowed: bool, remaining: int, reset: int, quota: int) -> Verdict:
        headers = {
            "RateLimit": f'"{RESOURCE}";r={remaining};t={reset}',
            "RateLimit-Policy": f'"fixed window";"{RESOURCE}";q={quota};w={self._window}',
        }
        if not allowed:
            headers["Retry-After"] = str(reset)
        return Verdict(allowed, headers)
