"""Fleet pulls, the pure parts: who seeds which blob, who is told of which peers (`pulls/plan.py`), what a
pull's hives add up to, and the pull's stream ids (`pulls/feed.py`)."""

from __future__ import annotations

import asyncio
from typing import Any

from services.queen.pulls.feed import PullFeed
from services.queen.pulls.plan import FAN_OUT, MAX_SOURCES, Blob, HiveProgress, PeerHive, plan_pull, totals_of
from shared.models import EventType, ProgressEvent

HIVES = [PeerHive(f"h{i}", f"http://10.0.0.{i}:9200") for i in range(6)]
URL = {h.url: h.hive_id for h in HIVES}
BLOBS = [Blob("a" * 64, 500), Blob("b" * 64, 300), Blob("c" * 64, 200), Blob("d" * 40, 10)]


def edges(plans: dict[str, Any], digest: str) -> dict[str, list[str]]:
    """hive -> the hives it is told of for `digest`."""
    return {h: [URL[u] for u in p.sources.get(digest, [])] for h, p in plans.items()}


def acyclic(graph: dict[str, list[str]]) -> bool:
    done: set[str] = set()

    def visit(node: str, path: frozenset[str]) -> bool:
        if node in path:
            return False
        if node in done:
            return True
        ok = all(visit(n, path | {node}) for n in graph.get(node, []))
        done.add(node)
        return ok

    return all(visit(n, frozenset()) for n in graph)


def test_one_hive_seeds_each_blob_from_the_hub_and_the_seeding_is_spread() -> None:
    plans = plan_pull(HIVES, BLOBS, hub_fetches_per_blob=1)
    seeders = {b.digest: [h for h, p in plans.items() if b.digest in p.hub_first] for b in BLOBS}
    assert all(len(s) == 1 for s in seeders.values())
    assert len({s[0] for s in seeders.values()}) == len(BLOBS)  # four blobs, four different seeders
    for blob in BLOBS:
        graph = edges(plans, blob.digest)
        (seeder,) = seeders[blob.digest]
        assert graph[seeder] == []
        assert all(graph[h] for h in graph if h != seeder)  # everyone else is told of peers
        assert acyclic(graph)  # no two hives wait on each other
        assert all(len(peers) <= MAX_SOURCES for peers in graph.values())
        firsts = [peers[0] for peers in graph.values() if peers]
        assert max(firsts.count(h) for h in set(firsts)) <= FAN_OUT
        assert all(seeder in peers for peers in graph.values() if peers)  # the hub copy is always reachable


def test_hub_fetches_per_blob_seeders_at_most_and_never_more_than_the_hives() -> None:
    plans = plan_pull(HIVES, BLOBS, hub_fetches_per_blob=2)
    for blob in BLOBS:
        assert sum(blob.digest in p.hub_first for p in plans.values()) == 2
        assert acyclic(edges(plans, blob.digest))
    three = HIVES[:3]
    plans = plan_pull(three, BLOBS, hub_fetches_per_blob=5)
    assert all(p.hub_first == {b.digest for b in BLOBS} for p in plans.values())


def test_a_blob_a_hive_holds_is_fetched_by_nobody_from_the_hub() -> None:
    holder = PeerHive("h0", HIVES[0].url, frozenset({BLOBS[0].digest}))
    plans = plan_pull([holder, *HIVES[1:]], BLOBS, hub_fetches_per_blob=1)
    assert not any(BLOBS[0].digest in p.hub_first for p in plans.values())
    graph = edges(plans, BLOBS[0].digest)
    assert graph["h0"] == [] and BLOBS[0].digest not in plans["h0"].sources
    assert all("h0" in peers for h, peers in graph.items() if h != "h0")
    assert acyclic(graph)
    assert sum(BLOBS[1].digest in p.hub_first for p in plans.values()) == 1  # the others are seeded still


def test_a_hive_alone_fetches_everything_from_the_hub() -> None:
    plans = plan_pull(HIVES[:1], BLOBS, hub_fetches_per_blob=1)
    assert plans["h0"].hub_first == {b.digest for b in BLOBS} and plans["h0"].sources == {}


def progress(hive: str, status: str, done: int, total: int | None, speed: int = 0) -> HiveProgress:
    return HiveProgress(hive, f"dl-{hive}", status, done, total, speed)


def test_the_totals_and_status_of_a_pull() -> None:
    running = totals_of([progress("a", "downloading", 50, 100, 10), progress("b", "queued", 0, None, 0)])
    assert (running.status, running.bytes, running.total, running.percent, running.speed_bps) == (
        "running",
        50,
        200,
        25.0,
        10,
    )
    assert totals_of([progress("a", "complete", 100, 100), progress("b", "complete", 100, 100)]).status == "complete"
    failed = totals_of([progress("a", "failed", 10, 100), progress("b", "cancelled", 0, 100)])
    assert failed.status == "failed" and [h.hive_id for h in failed.failed] == ["a"]
    assert totals_of([progress("a", "cancelled", 1, 100), progress("b", "complete", 100, 100)]).status == "cancelled"
    unasked = totals_of([progress("a", "unknown", 0, None), progress("b", "complete", 1, 1)])
    assert unasked.status == "failed" and [h.hive_id for h in unasked.failed] == ["a"]  # the rest ended
    assert totals_of([progress("a", "unknown", 0, None), progress("b", "queued", 0, None)]).status == "running"
    assert totals_of([progress("a", "unknown", 0, None)]).status == "running"  # nothing known


def event(event_id: int, hive: str, kind: EventType = EventType.PROGRESS, at: str = "", **data: Any) -> ProgressEvent:
    base = {"download_id": f"dl-{hive}", "bytes": 0, "total": 100, "emitted_at": at, "status": "downloading"}
    return ProgressEvent(event_id, kind, {**base, **data})


DOWNLOADS = {"a": "dl-a", "b": "dl-b", "c": "dl-c"}


def test_nothing_goes_out_before_every_hive_gave_its_state_then_ids_are_the_sums() -> None:
    feed = PullFeed("pull-1", DOWNLOADS)
    feed.publish("a", event(5, "a", at="2026-01-01T00:00:03Z"))
    feed.publish("b", event(7, "b", at="2026-01-01T00:00:01Z"))
    assert feed.since(0) == [] and not feed.primed
    feed.publish("c", event(2, "c", at="2026-01-01T00:00:02Z"))
    first = feed.since(0)
    assert [(e.id, e.data["hive_id"]) for e in first] == [(12, "b"), (13, "c"), (14, "a")]  # in the order made
    feed.publish("b", event(9, "b", bytes=10))
    feed.publish("a", event(4, "a"))  # older: dropped
    newer = feed.since(14)
    assert [(e.id, e.data["hive_id"], e.data["bytes"]) for e in newer] == [(16, "b", 10)]
    assert newer[0].data["pull_id"] == "pull-1" and newer[0].data["pull"]["bytes"] == 10


def test_one_terminal_event_once_every_hive_ended_naming_the_failed_ones() -> None:
    feed = PullFeed("pull-1", DOWNLOADS)
    feed.publish("a", event(3, "a", EventType.COMPLETE, bytes=100))
    feed.publish("b", event(4, "b", EventType.ERROR, bytes=7, code="CHECKSUM_MISMATCH", error="bad"))
    feed.publish("c", event(2, "c"))
    assert feed.terminal is None
    feed.publish("c", event(6, "c", EventType.COMPLETE, bytes=100))
    assert feed.terminal is not None and feed.terminal.event is EventType.ERROR
    assert feed.terminal.id == 3 + 4 + 6 + 1
    assert feed.terminal.data["pull"]["failed_hives"] == ["b"] and feed.terminal.data["code"] == "CHECKSUM_MISMATCH"
    ids = [e.id for e in feed.since(0)]
    assert ids == sorted(set(ids)) and ids[-1] == feed.terminal.id
    assert feed.ended_for(feed.terminal.id) and not feed.ended_for(feed.terminal.id - 1)
    feed.publish("c", event(7, "c"))  # after the end: nothing
    assert feed.since(feed.terminal.id) == []


def test_a_feed_rebuilt_after_a_restart_resends_no_id_and_carries_on_where_hives_moved() -> None:
    before = PullFeed("pull-1", DOWNLOADS)
    for hive, eid, at in (("a", 5, "1"), ("b", 7, "2"), ("c", 2, "3")):
        before.publish(hive, event(eid, hive, at=at))
    last = before.since(0)[-1].id
    again = PullFeed("pull-1", DOWNLOADS)  # a new queen: the hives' current states, same ids
    for hive, eid, at in (("a", 5, "1"), ("b", 7, "2"), ("c", 2, "3")):
        again.publish(hive, event(eid, hive, at=at))
    assert again.since(last) == []
    moved = PullFeed("pull-1", DOWNLOADS)  # meanwhile b made two more events
    for hive, eid, at in (("a", 5, "1"), ("b", 9, "4"), ("c", 2, "3")):
        moved.publish(hive, event(eid, hive, at=at))
    assert [e.data["hive_id"] for e in moved.since(last)][-1] == "b"


def test_a_feed_primed_without_a_silent_hive_counts_it_when_it_speaks() -> None:
    feed = PullFeed("pull-1", DOWNLOADS)
    feed.publish("a", event(5, "a"))
    feed.prime()
    assert [e.id for e in feed.since(0)] == [5]
    feed.publish("b", event(3, "b"))
    assert [e.id for e in feed.since(5)] == [8]


def test_a_waiting_client_wakes_for_the_terminal_event_even_if_it_came_while_it_was_busy() -> None:
    async def scenario() -> list[tuple[EventType, str | None]]:
        feed = PullFeed("pull-1", {"a": "dl-a"})
        feed.publish("a", event(1, "a"))
        feed.publish("a", event(2, "a", EventType.COMPLETE))  # while a client would be sending id 1
        await asyncio.wait_for(feed.wait_after(1), 1)
        return [(e.event, e.data.get("status")) for e in feed.since(1)]

    assert asyncio.run(scenario()) == [(EventType.PROGRESS, "complete"), (EventType.COMPLETE, None)]
