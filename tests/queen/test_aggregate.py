"""AggregateHub (services/queen/streams/aggregate.py) on its own: fan-out, current state first, order, the end of a
download, bounded clients; and following a real hive's `/v2/downloads/stream`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from services.modelserver.server import ModelServer
from services.queen.hives.client import HiveClient
from services.queen.hives.registry import HiveInfo
from services.queen.streams.aggregate import AggregateConfig, AggregateHub
from services.queen.streams.upstream import RelayStats, Upstream
from shared.mailbox import Mailbox
from shared.models import EventType, ProgressEvent
from tests.support import ServerThread

CONFIG = AggregateConfig("queen-a", queue_size=3, backoff_initial=0.05, backoff_max=0.2, check_timeout=2.0)


def progress(event_id: int, download_id: str, nbytes: int) -> ProgressEvent:
    return ProgressEvent(event_id, EventType.PROGRESS, {"download_id": download_id, "bytes": nbytes})


def complete(event_id: int, download_id: str, nbytes: int) -> ProgressEvent:
    return ProgressEvent(event_id, EventType.COMPLETE, {"download_id": download_id, "bytes": nbytes})


def hub(placed: list[tuple[str, str]] | None = None, config: AggregateConfig = CONFIG) -> AggregateHub:
    """A hub for publish/join/leave only: its hive client is never asked anything."""
    seen = placed if placed is not None else []
    hives = HiveClient(httpx.AsyncClient(), None, 1.0, 1.0)
    return AggregateHub(hives, lambda download_id, hive_id: seen.append((download_id, hive_id)), config, RelayStats())


def drain(queue: Mailbox) -> list[ProgressEvent]:
    batch: list[ProgressEvent] = asyncio.run(asyncio.wait_for(queue.next_batch(), 5))
    return batch


def test_events_are_fanned_out_with_orchestrator_and_hive_id() -> None:
    placed: list[tuple[str, str]] = []
    h = hub(placed)
    clients = [h.join(), h.join()]
    h.publish("hive-1", progress(3, "dl-a", 100))
    for queue in clients:
        [event] = drain(queue)
        assert (event.id, event.event) == (3, EventType.PROGRESS)
        assert event.data == {"download_id": "dl-a", "bytes": 100, "orchestrator_id": "queen-a", "hive_id": "hive-1"}
    assert placed == [("dl-a", "hive-1")]  # where the download lives, for the queen's registry


def test_a_new_client_first_gets_the_latest_event_of_every_active_download() -> None:
    h = hub()
    h.publish("hive-1", progress(1, "dl-a", 10))
    h.publish("hive-1", progress(2, "dl-a", 20))
    h.publish("hive-2", progress(7, "dl-b", 5))
    late = h.join()
    got = sorted((e.download_id, e.id, e.data["bytes"], e.data["hive_id"]) for e in drain(late))
    assert got == [("dl-a", 2, 20, "hive-1"), ("dl-b", 7, 5, "hive-2")]


@pytest.mark.parametrize(
    "stale",
    [progress(4, "dl-a", 500), progress(3, "dl-a", 900), progress(6, "dl-a", 100)],
    ids=["same-id", "older-id", "bytes-went-back"],
)
def test_stale_or_backward_events_are_dropped(stale: ProgressEvent) -> None:
    placed: list[tuple[str, str]] = []
    h = hub(placed)
    h.publish("hive-1", progress(4, "dl-a", 400))
    queue = h.join()
    drain(queue)
    h.publish("hive-1", stale)
    assert queue.pending() == 0
    assert [e.id for e in drain(h.join())] == [4]
    assert placed == [("dl-a", "hive-1")]


def test_a_terminal_event_ends_the_download_for_good() -> None:
    h = hub()
    queue = h.join()
    h.publish("hive-1", progress(1, "dl-a", 10))
    h.publish("hive-1", complete(2, "dl-a", 30))
    assert [(e.id, e.event) for e in drain(queue)] == [(2, EventType.COMPLETE)]  # the terminal event wins
    h.publish("hive-1", progress(3, "dl-a", 40))  # a late event cannot revive it
    h.publish("hive-1", complete(4, "dl-a", 40))  # nor end it twice
    assert queue.pending() == 0
    assert h.join().pending() == 0  # a new client gets only active downloads


def test_a_client_too_far_behind_is_closed_and_dropped() -> None:
    h = hub(config=AggregateConfig("queen-a", queue_size=2, backoff_initial=0.05, backoff_max=0.2, check_timeout=1))
    slow, fast = h.join(), h.join()
    h.publish("hive-1", progress(1, "dl-a", 1))
    h.publish("hive-1", progress(1, "dl-b", 1))
    assert drain(fast) and h.clients() == 2
    h.publish("hive-1", progress(1, "dl-c", 1))  # the third download pending for `slow`: over its queue size
    assert slow.closed and slow.overflowed
    assert h.clients() == 1
    assert [e.download_id for e in drain(fast)] == ["dl-c"]
    h.leave(fast)
    assert fast.closed and h.clients() == 0


def test_watch_follows_a_real_hive_stream(make_hive: Callable[..., ServerThread], model_server: ModelServer) -> None:
    hive = make_hive(id="hive-w")
    model_server.add_file("org/repo/w.bin", 64 * 1024)
    placed: list[tuple[str, str]] = []

    async def scenario() -> list[ProgressEvent]:
        async with httpx.AsyncClient(timeout=10) as client:
            hives = HiveClient(client, None, 5.0, 30.0)
            h = AggregateHub(hives, lambda d, i: placed.append((d, i)), CONFIG, RelayStats())
            queue = h.join()
            h.watch(HiveInfo("hive-w", hive.url, "static"))
            for _ in range(1000):  # bounded: the hub connects to the hive's stream in the background
                if h.connected_upstreams():
                    break
                await asyncio.sleep(0.01)
            assert h.connected_upstreams() == 1
            response = await client.post(f"{hive.url}/v2/downloads", json={"model_ref": "hf:org/repo::file=w.bin"})
            download_id = response.json()["download_id"]
            seen: list[ProgressEvent] = []
            while not any(e.is_terminal for e in seen):
                seen += [e for e in await queue.next_batch() if e.download_id == download_id]
            await h.close()
            return seen

    events: list[Any] = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert events[-1].event is EventType.COMPLETE and sum(e.is_terminal for e in events) == 1
    assert [e.id for e in events] == sorted({e.id for e in events})
    assert all(e.data["hive_id"] == "hive-w" and e.data["orchestrator_id"] == "queen-a" for e in events)
    assert {i for _, i in placed} == {"hive-w"}


# --------------------------------------------------------------------------- per-download clients (follow)


def connected(h: AggregateHub, hive_id: str) -> AggregateHub:
    """Mark the hive's stream as connected, as `_follow` does once the hive answers (no socket here)."""
    h._upstreams[hive_id] = Upstream("http://127.0.0.1:9", connected=True)
    return h


def test_follow_serves_a_live_download_of_a_connected_hive_only() -> None:
    h = hub()
    h.publish("hive-1", progress(1, "dl-a", 10))
    assert h.follow("dl-a", "hive-1", None) is None  # the hive's stream is not connected: the relay serves it
    connected(h, "hive-1")
    assert h.follow("dl-b", "hive-1", None) is None  # not seen yet
    assert h.follow("dl-a", "hive-2", None) is None  # not where the hub saw it
    followed = h.follow("dl-a", "hive-1", None)
    assert followed is not None
    queue, latest = followed
    assert latest.id == 1 and [e.id for e in drain(queue)] == [1]  # primed with the latest event
    h.publish("hive-1", progress(2, "dl-a", 20))
    h.publish("hive-1", progress(1, "dl-c", 5))  # another download: not this client's
    h.publish("hive-1", complete(3, "dl-a", 30))
    assert [(e.id, e.event) for e in drain(queue)] == [(3, EventType.COMPLETE)]  # latest wins, terminal kept
    assert queue.closed and h.followers() == 0
    assert h.follow("dl-a", "hive-1", None) is None  # ended: the relay answers (with 204 or the terminal event)


def test_follow_honours_last_event_id() -> None:
    h = connected(hub(), "hive-1")
    h.publish("hive-1", progress(4, "dl-a", 40))
    followed = h.follow("dl-a", "hive-1", 4)
    assert followed is not None
    queue = followed[0]
    assert queue.pending() == 0  # it has had 4: it waits for the next
    h.publish("hive-1", progress(5, "dl-a", 50))
    assert [e.id for e in drain(queue)] == [5]


def test_followers_are_let_go_when_their_hive_stream_drops_or_forgets_the_download() -> None:
    h = connected(connected(hub(), "hive-1"), "hive-2")
    h.publish("hive-1", progress(1, "dl-a", 10))
    h.publish("hive-2", progress(1, "dl-b", 10))
    h.publish("hive-2", progress(1, "dl-c", 10))
    followed = [h.follow(d, hive, None) for d, hive in (("dl-a", "hive-1"), ("dl-b", "hive-2"), ("dl-c", "hive-2"))]
    a, b, c = (f[0] for f in followed if f is not None)
    assert h.followers() == 3
    h._release("hive-2")
    assert b.closed and c.closed and not a.closed and h.followers() == 1
    h._forget_active("dl-a")
    assert a.closed and h.followers() == 0
    h.unfollow("dl-a", a)  # idempotent
