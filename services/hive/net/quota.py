"""The hub's rate-limit windows as its answers tell them: one `HubQuota` per hive, shared by every
download and every call to the hub's API (built in main.py, handed to the Requester).

The hub counts requests per client IP in fixed windows per bucket (`resolvers`, `api`, `pages`:
anonymous about 3,000 resolves per 5 minutes, 5,000 with a free account), so every hive behind one
address shares them. Every answer of the hub, not only a 429, says where its bucket stands:
`RateLimit: "resolvers";r=<left>;t=<secs to reset>` (and `RateLimit-Policy: ...;q=<quota>;w=<secs>`).
Rules:
- `heard`: an answer from the hub's origin sets what is left of its bucket's window (the least the
  hub has said in this window, less what was sent since) and when the window ends (the latest
  answer's `t` seconds from when it was read, plus `slack` for `t`'s rounding, as huggingface_hub
  adds 1 s);
- `admit`: before a request to the hub's origin, one request is counted against its bucket; when
  nothing is left, it is not sent: `RateLimited` says how long until the window ends, which the retry
  policy waits out and shows as it does a 429's (`waiting_until`, `waiting_reason`). So the hub does
  not have to refuse us;
- a window that has ended is full again (the policy's `q`, for the policy's `w` seconds) until the
  hub says otherwise; a bucket the hub has said nothing of is never held back.
Event loop only (the Requester calls it there, threaded bodies or not). Pure apart from the clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from services.hive.net.errors import RateLimited
from services.hive.net.hub_headers import parse_ratelimit

__all__ = ["HubQuota", "bucket_of"]


def bucket_of(url: str) -> str:
    """The hub's bucket a request to its origin counts against."""
    path = urlsplit(url).path
    if "/api/" in path:
        return "api"  # (the resolve-cache hop of a small file too: the resolve before it was the resolver's)
    return "resolvers" if "/resolve/" in path else "pages"


@dataclass(slots=True)
class _Window:
    left: int | None  # None: unknown (a new window the hub has not spoken of yet, without a policy)
    ends: float | None  # on the clock; None: unknown
    quota: int | None  # RateLimit-Policy's q and w, if stated
    window: int | None


class HubQuota:
    def __init__(self, clock: Callable[[], float] = time.monotonic, slack: float = 1.0) -> None:
        self._clock = clock
        self._slack = slack
        self._windows: dict[str, _Window] = {}

    def heard(self, headers: Mapping[str, str]) -> None:
        """An answer from the hub's origin (any status)."""
        limit = parse_ratelimit(headers)
        if limit is None:
            return
        now = self._clock()
        ends = now + limit.reset_secs + self._slack
        w = self._current(limit.resource, now)
        if w is None:
            self._windows[limit.resource] = _Window(limit.remaining, ends, limit.quota, limit.window_secs)
            return
        w.left = limit.remaining if w.left is None else min(w.left, limit.remaining)
        w.ends = ends  # the hub's latest word (an answer read late only makes it later)
        if limit.quota is not None:
            w.quota, w.window = limit.quota, limit.window_secs

    def admit(self, url: str) -> None:
        """Count a request to `url` (on the hub's origin) against its bucket, or raise RateLimited
        when the bucket's window has nothing left."""
        bucket = bucket_of(url)
        now = self._clock()
        w = self._current(bucket, now)
        if w is None or w.left is None:
            return
        if w.left <= 0 and w.ends is not None:
            raise RateLimited.by_hub(w.ends - now, bucket)
        w.left -= 1

    def _current(self, bucket: str, now: float) -> _Window | None:
        """The bucket's window, full again once the one it was in has ended (and, the windows being
        fixed, ending one policy window later)."""
        w = self._windows.get(bucket)
        if w is not None and w.ends is not None and now >= w.ends:
            after = w.ends + w.window if w.window else None
            w.left, w.ends = w.quota, after if after is not None and now < after else None
        return w
