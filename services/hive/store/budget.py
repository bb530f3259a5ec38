"""The disk budget of the model store (README, "The model store"), pure: what a download needs freed,
and which models go for it.

- `HIVE_CACHE_MAX_BYTES` is bytes or `NN%` of the cache's filesystem; `0` is no budget;
- a download fits when the cache with it stays within the budget and the filesystem keeps
  `HIVE_MIN_FREE_BYTES` free, counting what running downloads have reserved and not written yet;
- whole models go, least recently used first; never a pinned one, one in use, or the one downloading;
  when even all of those that may go would not free enough, none goes and the download fails.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Candidate", "budget_bytes", "bytes_to_free", "check_budget", "choose_evictions", "room_for"]

_SPEC = re.compile(r"(\d{1,20})(%?)")


def check_budget(spec: str) -> str:
    """`spec` as given, if it is bytes or a percentage from 0 to 100; ValueError otherwise."""
    m = _SPEC.fullmatch(spec.strip())
    if m is None or (m[2] and int(m[1]) > 100):
        raise ValueError(f"expected bytes (an integer) or a percentage NN% (0 to 100), not {spec!r}")
    return spec.strip()


def budget_bytes(spec: str, fs_total: int) -> int | None:
    """The budget in bytes on a filesystem of `fs_total` bytes; None when there is none (`0`)."""
    m = _SPEC.fullmatch(check_budget(spec))
    assert m is not None
    amount = int(m[1])
    if amount == 0:
        return None
    return fs_total * amount // 100 if m[2] else amount


def bytes_to_free(needed: int, used: int, free: int, reserved: int, budget: int | None, min_free: int) -> int:
    """How many bytes of the cache must go before `needed` more fit (0: it fits as it is).

    `used` is the cache's size, `free` the filesystem's free bytes, `reserved` what running downloads
    will still write; freeing a model lowers `used` and raises `free` by its size."""
    over_free = needed + reserved + min_free - free
    over_budget = 0 if budget is None else used + reserved + needed - budget
    return max(0, over_free, over_budget)


def room_for(used: int, free: int, reserved: int, budget: int | None, min_free: int, evictable: int) -> int:
    """The most a download could have, evicting every model that may go (`evictable` bytes): the largest
    `needed` for which `bytes_to_free` asks no more than that (what a plan reports as free)."""
    by_free = free + evictable - reserved - min_free
    by_budget = by_free if budget is None else budget - used + evictable - reserved
    return max(0, min(by_free, by_budget))


@dataclass(frozen=True, slots=True)
class Candidate:
    """A model of the cache as eviction sees it."""

    repo_id: str
    size: int
    last_used: float  # epoch seconds: its last use, else when its files last changed
    pinned: bool = False
    in_use: bool = False


def choose_evictions(candidates: Iterable[Candidate], to_free: int, keep: str | None = None) -> list[Candidate] | None:
    """The models to evict, least recently used first, until `to_free` bytes are freed; [] when nothing
    needs to go, None when the models that may go (not pinned, not in use, not `keep`) are not enough."""
    if to_free <= 0:
        return []
    chosen: list[Candidate] = []
    freed = 0
    evictable = (c for c in candidates if not c.pinned and not c.in_use and c.repo_id != keep)
    for candidate in sorted(evictable, key=lambda c: (c.last_used, c.repo_id)):
        if freed >= to_free:
            break
        if candidate.size <= 0:
            continue
        chosen.append(candidate)
        freed += candidate.size
    return chosen if freed >= to_free else None
