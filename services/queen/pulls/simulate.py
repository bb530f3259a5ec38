"""A fleet pull on paper (README, "Fleet pulls", "The model and its limits"). Pure.

The planner's real tree (`plan.plan_pull`: seeders per blob, the parent in a tree of fan-out
`fan_out`, at most `max_sources` peers a blob) laid over a stated model of the links, to weigh
`FAN_OUT` and `MAX_SOURCES` at 8, 100 and 1,000 hives against one hive pulling alone.

The model (`Links`), a fluid one: every byte rate is a steady share, nothing else costs time.
- The hub sends the fleet at most `hub_uplink_bps` in all, and one hive's path to it carries at most
  `hub_path_bps`. Shared links are shared in proportion to the streams' bytes (work-conserving: the
  streams through a link end together, as a fair share tends to once the short ones have ended).
- Each node has a full-duplex NIC of `nic_bps` each way on a non-blocking switch, and a disk that
  writes `disk_bps`; a hive fetches all its blobs at once (sharing its NIC and disk as above), and
  its uplink is shared equally by every stream it serves.
- A follower of a partial gets at most its parent's rate (it reads what the parent has written),
  begins `level_lag_secs` after its parent (the planned wait's polls, each second: half on average)
  and ends `tail_secs` after it at the earliest (the follower's poll of a growing partial).
- A follower whose first source already holds the blob (a holder) takes ranges from every complete
  source it is told of (at most `max_sources`), each at that source's uplink share.
- One hive alone takes the whole model over its hub path: total / min(hub path, hub uplink, NIC, disk).
What it leaves out is listed in the README (where the model stops holding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from services.queen.pulls.plan import FAN_OUT, MAX_SOURCES, Blob, PeerHive, plan_pull

__all__ = ["CLUSTER", "HUB_BOUND", "Links", "Outcome", "simulate", "table"]

MB = 1_000_000


@dataclass(frozen=True, slots=True)
class Links:
    hub_uplink_bps: float  # what the hub sends this fleet in all
    hub_path_bps: float  # what one hive's path to the hub carries
    nic_bps: float  # each node's NIC, each way
    disk_bps: float  # what a node's disk writes
    level_lag_secs: float = 0.5
    tail_secs: float = 0.05


# a GPU cluster: 10 GbE nodes with NVMe, each with a 1 Gb/s path to the hub, the hub's CDN sending
# the cluster at most 10 Gb/s
CLUSTER = Links(hub_uplink_bps=1250 * MB, hub_path_bps=125 * MB, nic_bps=1250 * MB, disk_bps=2000 * MB)
# the bench's fleet scenario: the hub capped at 50 MB/s for everyone
HUB_BOUND = Links(hub_uplink_bps=50 * MB, hub_path_bps=50 * MB, nic_bps=1250 * MB, disk_bps=2000 * MB)


@dataclass(frozen=True, slots=True)
class Outcome:
    hives: int
    fleet_secs: float  # until the last hive holds the whole model
    alone_secs: float  # one hive pulling it alone from the hub
    hub_bytes: int  # what the hub sends the fleet
    model_bytes: int
    depth: int  # the deepest tree of any blob (levels below the seeders)

    @property
    def ratio(self) -> float:
        return self.fleet_secs / self.alone_secs

    @property
    def hub_copies(self) -> float:
        return self.hub_bytes / self.model_bytes


@dataclass(slots=True)
class _Stream:
    start: float
    rate: float
    finish: float
    depth: int
    complete: bool  # a holder's: the blob is all there from the start


def simulate(
    hives: int,
    sizes: Sequence[int],
    links: Links,
    *,
    fan_out: int = FAN_OUT,
    max_sources: int = MAX_SOURCES,
    hub_fetches_per_blob: int = 1,
    holders: int = 0,
) -> Outcome:
    """One pull of a model of blobs of `sizes` onto `hives` hives, the first `holders` of which hold it
    already, under `links`."""
    if hives < 1 or not sizes or any(s <= 0 for s in sizes):
        raise ValueError("a pull needs a hive and blobs of at least one byte")
    blobs = [Blob(f"{i:064x}", size) for i, size in enumerate(sizes)]
    every = frozenset(b.digest for b in blobs)
    peers = [PeerHive(f"h{i}", f"http://h{i}", every if i < holders else frozenset()) for i in range(hives)]
    plans = plan_pull(peers, blobs, hub_fetches_per_blob, fan_out, max_sources)
    by_url = {p.url: p.hive_id for p in peers}
    present = {p.hive_id: p.present for p in peers}
    needs = {h: [b for b in blobs if b.digest not in present[h]] for h in plans}
    sources = {(h, d): [by_url[u] for u in urls] for h, plan in plans.items() for d, urls in plan.sources.items()}
    seeders = {(h, d) for h, plan in plans.items() for d in plan.hub_first}
    # what each hive's uplink serves: a partial's parent one stream per follower, a holder every follower told of it
    serves = dict.fromkeys(plans, 0)
    for (_, d), srcs in sources.items():
        for s in srcs if d in present[srcs[0]] else srcs[:1]:
            serves[s] += 1
    size_of = {b.digest: b.size for b in blobs}
    seeding = {h: sum(size_of[d] for s, d in seeders if s == h) for h in plans}
    seeded = sum(size_of[d] for _, d in seeders)
    needed = {h: sum(b.size for b in needs[h]) for h in plans}

    def own(h: str, b: Blob) -> float:
        return min(links.nic_bps, links.disk_bps) * b.size / needed[h]

    def up(h: str) -> float:
        return links.nic_bps / max(1, serves[h])

    streams: dict[tuple[str, str], _Stream] = {}

    def stream(h: str, b: Blob) -> _Stream:
        key = (h, b.digest)
        if key in streams:
            return streams[key]
        if b.digest in present[h]:
            s = _Stream(0.0, math.inf, 0.0, 0, True)
        elif key in seeders:
            share = b.size / seeding[h], b.size / seeded
            rate = min(links.hub_path_bps * share[0], links.hub_uplink_bps * share[1], own(h, b))
            s = _Stream(0.0, rate, b.size / rate, 0, False)
        else:
            srcs = sources[key]
            parent = stream(srcs[0], b)
            start = parent.start + links.level_lag_secs
            if parent.complete:
                rate = min(own(h, b), sum(up(x) for x in srcs if b.digest in present[x]))
                s = _Stream(start, rate, start + b.size / rate, parent.depth + 1, False)
            else:
                rate = min(parent.rate, up(srcs[0]), own(h, b))
                finish = max(parent.finish + links.tail_secs, start + b.size / rate)
                s = _Stream(start, rate, finish, parent.depth + 1, False)
        streams[key] = s
        return s

    fleet = 0.0
    for h in plans:
        ends = [stream(h, b).finish for b in needs[h]]
        link_bound = needed[h] / min(links.nic_bps, links.disk_bps)
        fleet = max(fleet, *ends, link_bound)
    total = sum(sizes)
    alone = total / min(links.hub_path_bps, links.hub_uplink_bps, links.nic_bps, links.disk_bps)
    hub_bytes = sum(b.size for b in blobs for h in plans if (h, b.digest) in seeders)
    depth = max((s.depth for s in streams.values()), default=0)
    return Outcome(hives, fleet, alone, hub_bytes, total, depth)


def table(
    links: Links, sizes: Sequence[int], hive_counts: Sequence[int] = (8, 100, 1000), fan_outs: Sequence[int] = (2, 4, 8)
) -> list[tuple[int, int, Outcome]]:
    """(hives, fan-out, outcome) for each count and fan-out: the README's and the bench's table."""
    return [(n, f, simulate(n, sizes, links, fan_out=f)) for n in hive_counts for f in fan_outs]
