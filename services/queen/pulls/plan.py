"""Fleet pulls, pure: who fetches which blob from the hub, which peers each hive is told of, and
what a pull's hives add up to. No I/O (README, "Fleet pulls").

Seeding and peers, per blob (a file's digest):
- a blob that some hive of the pull already holds (its plan says `present`) is fetched from the hub
  by nobody: its holders are the first sources of everyone else;
- a blob no hive holds is fetched from the hub by at most `hub_fetches_per_blob` hives (its
  seeders, told so by `hub_first`); blobs go largest first to the hives that have taken the fewest
  hub bytes so far, so the seeding of different blobs is spread over different hives;
- the hives of a blob are ranked: holders or seeders first, then the others in an order that turns
  from blob to blob. A hive is told of hives ranked before it only, its parent in a tree of fan-out
  `FAN_OUT` first, then the seeders, at most `MAX_SOURCES`. So no two hives ever wait on each other's
  partials, no hive serves more than `FAN_OUT` followers while all is well, and when a hive loses
  every source, the first in rank goes to the hub and becomes the source of those after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.models import STATUS_OF_TERMINAL_EVENT, TERMINAL_STATUSES, ProgressEvent

__all__ = [
    "FAN_OUT",
    "MAX_SOURCES",
    "Blob",
    "HiveProgress",
    "PeerHive",
    "PullPlan",
    "PullTotals",
    "plan_pull",
    "pull_status",
    "totals_of",
]

# chosen with simulate.py (README, "Fleet pulls", the model): 2 is the fastest tree at 100 and 1,000
# hives (a wider one splits a parent's uplink over more followers than its depth saves), and 4 sources
# give as much in ranges from holders as any other count, with three to fail over to
FAN_OUT = 2  # followers one hive serves while every hive is well
MAX_SOURCES = 4  # peers a hive is told of per blob (a hive's request body stays far below 64 KiB)

RUNNING, COMPLETE, FAILED, CANCELLED = "running", "complete", "failed", "cancelled"
UNKNOWN = "unknown"  # a hive's part the queen could not ask about


@dataclass(frozen=True, slots=True)
class Blob:
    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class PeerHive:
    hive_id: str
    url: str  # how the other hives reach it (its registered URL)
    present: frozenset[str] = frozenset()  # digests its plan says are in its cache


@dataclass(slots=True)
class PullPlan:
    """One hive's part: the blobs it fetches from the hub first, and the peers of every other blob."""

    hub_first: set[str] = field(default_factory=set)
    sources: dict[str, list[str]] = field(default_factory=dict)


def plan_pull(
    hives: Sequence[PeerHive],
    blobs: Iterable[Blob],
    hub_fetches_per_blob: int,
    fan_out: int = FAN_OUT,
    max_sources: int = MAX_SOURCES,
) -> dict[str, PullPlan]:
    """Every hive's part of the pull (by hive id); see the module's rules (`fan_out` and `max_sources`
    other than the constants: for `simulate.py`, which weighs them)."""
    plans = {h.hive_id: PullPlan() for h in hives}
    hub_bytes = dict.fromkeys(plans, 0)
    position = {h.hive_id: i for i, h in enumerate(hives)}
    unique = {b.digest: b for b in blobs if b.digest}
    ordered = sorted(unique.values(), key=lambda b: (-b.size, b.digest))
    for turn, blob in enumerate(ordered):
        first = [h for h in hives if blob.digest in h.present]
        if not first:
            by_load = sorted(hives, key=lambda h: (hub_bytes[h.hive_id], position[h.hive_id]))
            first = by_load[: max(1, min(hub_fetches_per_blob, len(hives)))]
            for seeder in first:
                plans[seeder.hive_id].hub_first.add(blob.digest)
                hub_bytes[seeder.hive_id] += blob.size
        rest = [h for h in hives if h not in first]
        if rest:
            shift = turn % len(rest)
            rest = rest[shift:] + rest[:shift]
        ranked = first + rest
        for rank, hive in enumerate(ranked):
            if blob.digest in hive.present:
                continue
            peers = _sources(ranked, rank, len(first), fan_out, max_sources)
            if peers:
                plans[hive.hive_id].sources[blob.digest] = [p.url for p in peers]
    return plans


def _sources(ranked: list[PeerHive], rank: int, firsts: int, fan_out: int, max_sources: int) -> list[PeerHive]:
    """The hives ranked before `rank` a hive is told of: its parent first, then in rank order."""
    if rank == 0:
        return []
    earlier = ranked[:rank]
    if rank >= firsts:
        parent = ranked[(rank - firsts) // fan_out]
        earlier = [parent, *(h for h in earlier if h is not parent)]
    return earlier[:max_sources]


# -- what the hives add up to --------------------------------------------------------------


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class HiveProgress:
    """One hive's download in a pull, from its state (GET) or from its latest stream event."""

    hive_id: str
    download_id: str
    status: str  # a download status, or UNKNOWN
    bytes: int = 0
    total: int | None = None
    speed_bps: int = 0
    error: str | None = None
    code: str | None = None

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_state(cls, hive_id: str, state: Mapping[str, Any]) -> HiveProgress:
        return cls(
            hive_id,
            str(state.get("download_id")),
            str(state.get("status")),
            _int(state.get("bytes_downloaded")) or 0,
            _int(state.get("total_bytes")),
            _int(state.get("speed_bps")) or 0,
            state.get("error"),
            state.get("error_code"),
        )

    @classmethod
    def from_event(cls, hive_id: str, event: ProgressEvent) -> HiveProgress:
        data = event.data
        status = STATUS_OF_TERMINAL_EVENT.get(event.event) or str(data.get("status"))
        return cls(
            hive_id,
            event.download_id,
            status,
            _int(data.get("bytes")) or 0,
            _int(data.get("total")),
            0 if event.is_terminal else _int(data.get("speed_bps")) or 0,
            data.get("error"),
            data.get("code"),
        )


@dataclass(frozen=True, slots=True)
class PullTotals:
    status: str  # running, complete, failed or cancelled
    bytes: int
    total: int | None
    percent: float | None
    speed_bps: int
    hives_total: int
    hives_ended: int
    failed: tuple[HiveProgress, ...]  # the hives whose part failed (or, once the rest ended, could not be asked)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "bytes": self.bytes,
            "total": self.total,
            "percent": self.percent,
            "speed_bps": self.speed_bps,
            "hives_total": self.hives_total,
            "hives_ended": self.hives_ended,
            "failed_hives": [h.hive_id for h in self.failed],
        }


def pull_status(hives: Iterable[HiveProgress], unknown_fails: bool = True) -> str:
    """running while any hive's part runs (or nothing is known); then failed if one failed or could not
    be asked, else cancelled if one was, else complete. With `unknown_fails` false, a part not known
    yet counts as running."""
    statuses = [h.status for h in hives]
    if all(s == UNKNOWN for s in statuses) or any(s not in TERMINAL_STATUSES and s != UNKNOWN for s in statuses):
        return RUNNING
    if UNKNOWN in statuses and not unknown_fails:
        return RUNNING
    if FAILED in statuses or UNKNOWN in statuses:
        return FAILED
    return CANCELLED if CANCELLED in statuses else COMPLETE


def totals_of(hives: Sequence[HiveProgress], unknown_fails: bool = True) -> PullTotals:
    """The pull's sums (the status as `pull_status` says). Every hive pulls the same files, so a hive
    whose total is not known yet (still queued) counts with the total another hive reports."""
    known = [h.total for h in hives if h.total is not None]
    each = max(known) if known else None
    total = None if each is None else sum(each if h.total is None else h.total for h in hives)
    done = sum(h.bytes for h in hives)
    percent = None if total is None else 100.0 if total == 0 else round(min(100.0, done * 100.0 / total), 2)
    status = pull_status(hives, unknown_fails)
    return PullTotals(
        status,
        done,
        total,
        percent,
        sum(h.speed_bps for h in hives if not h.ended),
        len(hives),
        sum(1 for h in hives if h.ended),
        tuple(h for h in hives if h.status == FAILED or (status == FAILED and h.status == UNKNOWN)),
    )
