"""The queen's relay: its pure parts, then real queens relaying from a scripted fake hive on a real socket.

The fake hive lets a test cut a stream mid-way, replay old ids, refuse connections and answer
204/404, which a real hive only does by accident; the real-hive scenarios are in tests/e2e/test_queen_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from services.queen.streams.subscription import Subscription
from services.queen.streams.upstream import bytes_went_back, decode_event, is_event_stream
from shared.backoff import Backoff
from shared.mailbox import MAX_MODEL_EVENTS, Mailbox
from shared.models import EventType, ProgressEvent
from tests.queen.support import AUTH, TOKEN, FakeHive, ev, queen_for
from tests.support import ServerThread, wait_until

# --------------------------------------------------------------------------- pure parts


def progress(event_id: int, nbytes: int, download_id: str = "dl-31000000000000000000000000000000") -> ProgressEvent:
    return ProgressEvent(event_id, EventType.PROGRESS, {"download_id": download_id, "bytes": nbytes})


def terminal(event_id: int, download_id: str = "dl-31000000000000000000000000000000") -> ProgressEvent:
    return ProgressEvent(event_id, EventType.COMPLETE, {"download_id": download_id, "bytes": 100})


def take(queue: Mailbox) -> list[ProgressEvent]:
    return asyncio.run(asyncio.wait_for(queue.next_batch(), 1))


def test_client_queue_keeps_the_latest_event_per_download_and_every_terminal_one() -> None:
    queue = Mailbox(maxsize=2)
    for i in range(1, 1001):  # a reader that never reads holds one event per download, not a thousand
        assert queue.offer(progress(i, i))
    queue.offer(progress(1, 1, "dl-32000000000000000000000000000000"))
    assert queue.pending() == 2
    queue.offer(progress(999, 999))  # never an older id over a newer one
    queue.offer(terminal(1001))
    queue.offer(progress(1002, 5000))  # nothing replaces a terminal event
    assert [(e.download_id, e.id, e.event) for e in take(queue)] == [
        ("dl-31000000000000000000000000000000", 1001, EventType.COMPLETE),
        ("dl-32000000000000000000000000000000", 1, EventType.PROGRESS),
    ]
    assert queue.pending() == 0


def test_a_reader_that_never_reads_model_events_is_closed_at_the_bound_not_grown_without_one() -> None:
    queue = Mailbox(maxsize=None)
    for i in range(1, MAX_MODEL_EVENTS + 1):  # each is news of its own: none replaces another
        assert queue.offer(ProgressEvent(i, EventType.MODEL, {"action": "added", "repo_id": f"org/m{i}"}))
    assert queue.pending() == MAX_MODEL_EVENTS and not queue.closed
    assert not queue.offer(ProgressEvent(MAX_MODEL_EVENTS + 1, EventType.MODEL, {"action": "added", "repo_id": "x"}))
    assert queue.closed and queue.overflowed  # it reconnects and gets the current state
    fresh = Mailbox(maxsize=None)
    for i in range(1, 3 * MAX_MODEL_EVENTS):  # a reader that keeps up is never closed
        assert fresh.offer(ProgressEvent(i, EventType.MODEL, {"action": "added", "repo_id": f"org/m{i}"}))
        if i % 100 == 0:
            assert len(take(fresh)) == 100


def test_client_queue_honours_last_event_id_and_drains_before_closing() -> None:
    queue = Mailbox(after_id=5)
    queue.offer(progress(5, 50))
    assert queue.pending() == 0
    queue.offer(progress(6, 60))
    queue.close()
    assert not queue.offer(progress(7, 70))
    assert [e.id for e in take(queue)] == [6]
    assert take(queue) == []


def test_client_queue_overflow_closes_the_client_instead_of_growing() -> None:
    queue = Mailbox(maxsize=2)
    assert queue.offer(progress(1, 1, "a")) and queue.offer(progress(1, 1, "b"))
    assert queue.offer(progress(2, 2, "a"))  # same download: coalesced, no growth
    assert not queue.offer(progress(1, 1, "c"))
    assert queue.overflowed and queue.closed and queue.pending() == 2


def test_subscription_join_primes_late_joiners_and_decides_204() -> None:
    sub = Subscription("dl-31000000000000000000000000000000", "hive-a")
    early = sub.join(None)
    assert early is not None and early.pending() == 0  # nothing relayed yet: wait for the next event
    sub.publish(progress(4, 40))
    late, resumed, ahead = sub.join(None), sub.join(3), sub.join(4)
    assert late is not None and [e.id for e in take(late)] == [4]  # the latest event at once
    assert resumed is not None and resumed.pending() == 1
    assert ahead is not None and ahead.pending() == 0  # its Last-Event-ID is respected
    sub.publish(terminal(5))
    assert [e.id for e in take(early)] == [5]  # coalesced: 4 was never taken, 5 replaced it
    sub.finish()
    assert early.closed and not sub.clients
    assert sub.join(5) is None and sub.join(9) is None  # at or past the terminal event: 204
    after_end = sub.join(4)
    assert after_end is not None and after_end.closed and [e.id for e in take(after_end)] == [5]


def test_backoff_doubles_to_a_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(0.1, 0.5, jitter=0.0)
    assert [round(backoff.next(), 3) for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.next() == pytest.approx(0.1)
    noisy = Backoff(1.0, 1.0, jitter=0.1, rng=lambda: 1.0)
    assert noisy.next() == pytest.approx(1.1)


def test_decode_event_drops_what_is_not_one_of_ours() -> None:
    data = json.dumps({"download_id": "dl-31000000000000000000000000000000", "bytes": 3})
    event = decode_event("progress", data, "7")
    assert event == ProgressEvent(
        7, EventType.PROGRESS, {"download_id": "dl-31000000000000000000000000000000", "bytes": 3}
    )
    assert decode_event("message", "", "7") is None  # httpx-sse's empty event after a keep-alive comment
    assert decode_event("progress", data, "") is None
    assert decode_event("progress", data, "x7") is None
    assert decode_event("bogus", data, "7") is None
    assert decode_event("progress", "{not json", "7") is None
    assert decode_event("progress", "[1]", "7") is None
    assert decode_event("progress", '{"bytes": 1}', "7") is None


def test_bytes_never_go_back_and_content_types() -> None:
    assert bytes_went_back(progress(1, 10), progress(2, 9))
    assert not bytes_went_back(progress(1, 10), progress(2, 10))
    assert not bytes_went_back(None, progress(2, 9))
    assert not bytes_went_back(progress(1, 10), terminal(2))
    assert is_event_stream("text/event-stream; charset=utf-8")
    assert not is_event_stream("application/json")


# --------------------------------------------------------------------------- queens in front of a fake hive


@pytest.fixture
def fake() -> Iterator[FakeHive]:
    hive = FakeHive()
    yield hive
    hive.stop()


@pytest.fixture
def make_queen() -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def _make(*hives: FakeHive, **overrides: Any) -> ServerThread:
        started.append(queen_for(*hives, **overrides))
        return started[-1]

    yield _make
    for queen in started:
        queen.stop()


def read_stream(
    url: str, headers: dict[str, str] | None = None, until: Callable[[list[ServerSentEvent]], bool] | None = None
) -> list[ServerSentEvent]:
    """Read SSE events until the stream ends or `until` holds (bounded: a watchdog closes it after 20 s)."""
    seen: list[ServerSentEvent] = []
    with httpx.Client(timeout=httpx.Timeout(5, read=10)) as client:
        with connect_sse(client, "GET", url, headers={**AUTH, **(headers or {})}) as source:
            assert source.response.status_code == 200, source.response.read()
            watchdog = threading.Timer(20, source.response.close)
            watchdog.start()
            try:
                for sse in source.iter_sse():
                    if not sse.data:
                        continue  # httpx-sse's empty event after a keep-alive comment
                    seen.append(sse)
                    if (until is not None and until(seen)) or len(seen) > 500:
                        break
            finally:
                watchdog.cancel()
    return seen


def metric(queen: ServerThread, name: str) -> float:
    text = httpx.get(f"{queen.url}/metrics", headers=AUTH, timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def test_relay_reconnects_after_a_cut_and_the_client_sees_one_stream(
    fake: FakeHive, make_queen: Callable[..., ServerThread]
) -> None:
    path = "/v2/downloads/dl-78000000000000000000000000000000/stream"
    cut = threading.Event()
    fake.states["dl-78000000000000000000000000000000"] = {
        "download_id": "dl-78000000000000000000000000000000",
        "status": "downloading",
    }
    fake.streams[path] = [
        [ev(1, bytes=10), ("raw", ": ping\r\n\r\n"), ev(2, bytes=20), ev(3, bytes=30), ("wait", cut), ("drop",)],
        [("status", 404, {"error": {"code": "NOT_FOUND", "message": "restarting"}})],  # not back yet
        [ev(3, bytes=30), ev(4, bytes=25), ev(5, bytes=40), ev(6, "complete", bytes=100), ("end",)],
    ]
    queen = make_queen(fake)

    def until(seen: list[ServerSentEvent]) -> bool:
        if seen[-1].id == "3":
            cut.set()  # the connection to the hive breaks once the client has id 3
        return False

    seen = read_stream(
        f"{queen.url}/v1/downloads/dl-78000000000000000000000000000000/stream",
        {"X-Correlation-Id": "corr-relay-1"},
        until,
    )

    # A slow reader may get progress coalesced (latest wins), but never a repeat, never the replayed
    # id 3 again, never id 4 (fewer bytes than already relayed), and always the terminal event.
    ids = [int(e.id) for e in seen]
    assert ids == sorted(set(ids)) and 3 in ids and ids[-1] == 6 and seen[-1].event == "complete"
    assert set(ids) <= {1, 2, 3, 5, 6}
    payloads = [e.json() for e in seen]
    assert all(p["orchestrator_id"] == "queen-t" and p["hive_id"] == "hive-f" for p in payloads)
    assert [p["bytes"] for p in payloads] == sorted(p["bytes"] for p in payloads)
    upstream = fake.requests(path)
    assert [r.headers.get("last-event-id") for r in upstream] == [None, "3", "3"]
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in upstream)
    assert all(r.headers.get("x-correlation-id") == "corr-relay-1" for r in upstream)
    assert metric(queen, "rbee_queen_relay_reconnects_total") == 1
    assert metric(queen, "rbee_queen_relay_reconnect_failures_total") >= 1
    wait_until(lambda: metric(queen, 'rbee_queen_upstream_subscriptions{stream="download"}') == 0, 5)


def test_relay_sends_hive_unreachable_only_after_the_budget(
    fake: FakeHive, make_queen: Callable[..., ServerThread]
) -> None:
    budget = 0.8
    cut = threading.Event()
    fake.states["dl-78000000000000000000000000000000"] = {
        "download_id": "dl-78000000000000000000000000000000",
        "status": "downloading",
    }
    fake.streams["/v2/downloads/dl-78000000000000000000000000000000/stream"] = [
        [ev(1, bytes=10, total=100), ev(2, bytes=20, total=100), ("wait", cut), ("die",)]
    ]
    queen = make_queen(fake, unreachable_budget=budget)
    stamps: dict[str, float] = {}

    def until(seen: list[ServerSentEvent]) -> bool:
        stamps[seen[-1].id] = time.monotonic()
        if seen[-1].id == "2":
            cut.set()  # the hive dies (and stays away) once the client has id 2
        return False

    seen = read_stream(f"{queen.url}/v1/downloads/dl-78000000000000000000000000000000/stream", until=until)

    assert [(int(e.id), e.event) for e in seen][-2:] == [(2, "progress"), (3, "error")]
    error = seen[-1].json()
    assert error["code"] == "HIVE_UNREACHABLE" and error["download_id"] == "dl-78000000000000000000000000000000"
    assert (error["bytes"], error["total"], error["orchestrator_id"], error["hive_id"]) == (
        20,
        100,
        "queen-t",
        "hive-f",
    )
    assert stamps["3"] - stamps["2"] >= budget * 0.9  # not before the budget ran out
    assert metric(queen, "rbee_queen_relay_gave_up_total") == 1
    assert metric(queen, "rbee_queen_relay_reconnect_failures_total") >= 2  # it kept trying meanwhile


def test_a_hive_that_accepts_and_drops_without_events_does_not_renew_the_budget(
    fake: FakeHive, make_queen: Callable[..., ServerThread]
) -> None:
    budget = 0.6
    cut = threading.Event()
    fake.states["dl-78000000000000000000000000000000"] = {
        "download_id": "dl-78000000000000000000000000000000",
        "status": "downloading",
    }
    fake.streams["/v2/downloads/dl-78000000000000000000000000000000/stream"] = [
        [ev(1, bytes=10), ("wait", cut), ("drop",)],
        [("drop",)],
    ]
    queen = make_queen(fake, unreachable_budget=budget)

    def until(seen: list[ServerSentEvent]) -> bool:
        cut.set()
        return False

    seen = read_stream(f"{queen.url}/v1/downloads/dl-78000000000000000000000000000000/stream", until=until)

    assert [(int(e.id), e.event) for e in seen] == [(1, "progress"), (2, "error")]
    assert seen[-1].json()["code"] == "HIVE_UNREACHABLE"
    assert metric(queen, "rbee_queen_relay_reconnects_total") >= 2  # it did get back in, each time for nothing


def test_relay_checks_the_hive_answer_before_streaming(fake: FakeHive, make_queen: Callable[..., ServerThread]) -> None:
    fake.states["dl-646f6e65000000000000000000000000"] = {
        "download_id": "dl-646f6e65000000000000000000000000",
        "status": "complete",
    }
    fake.streams["/v2/downloads/dl-646f6e65000000000000000000000000/stream"] = [[("status", 204, None)]]
    fake.states["dl-676f6e65000000000000000000000000"] = {
        "download_id": "dl-676f6e65000000000000000000000000",
        "status": "downloading",
    }
    fake.streams["/v2/downloads/dl-676f6e65000000000000000000000000/stream"] = [
        [("status", 404, {"error": {"code": "NOT_FOUND", "message": "x"}})]
    ]
    dead = FakeHive("hive-dead")
    dead.stop()
    queen = make_queen(fake)

    with httpx.Client(base_url=queen.url, headers=AUTH, timeout=10) as client:
        done = client.get("/v1/downloads/dl-646f6e65000000000000000000000000/stream", headers={"Last-Event-ID": "7"})
        assert done.status_code == 204 and done.content == b""
        assert (
            fake.requests("/v2/downloads/dl-646f6e65000000000000000000000000/stream")[0].headers["last-event-id"] == "7"
        )
        for download_id in ("dl-676f6e65000000000000000000000000", "dl-756e6b6e6f776e000000000000000000"):
            missing = client.get(f"/v1/downloads/{download_id}/stream")
            assert missing.status_code == 404
            assert missing.headers["content-type"] == "application/json"
            assert missing.json()["error"]["code"] == "NOT_FOUND"
        assert (
            client.get(
                "/v1/downloads/dl-78000000000000000000000000000000/stream", headers={"Authorization": "Bearer wrong"}
            ).status_code
            == 401
        )

    queen2 = make_queen(fake, dead)  # the owner might be the hive that cannot be asked: 503, not 404
    with httpx.Client(base_url=queen2.url, headers=AUTH, timeout=10) as client:
        unsure = client.get("/v1/downloads/dl-756e6b6e6f776e000000000000000000/stream")
        assert unsure.status_code == 503
        assert unsure.json()["error"]["code"] == "HIVE_UNREACHABLE"
        assert unsure.json()["error"]["unreachable_hives"] == ["hive-dead"]


def test_aggregated_stream_settles_a_download_that_ended_while_the_hive_stream_was_down(
    fake: FakeHive, make_queen: Callable[..., ServerThread]
) -> None:
    gate = threading.Event()
    fake.states["dl-61000000000000000000000000000000"] = {
        "download_id": "dl-61000000000000000000000000000000",
        "status": "complete",
    }
    fake.states["dl-62000000000000000000000000000000"] = {
        "download_id": "dl-62000000000000000000000000000000",
        "status": "downloading",
    }
    fake.streams["/v2/downloads/stream"] = [
        [
            ("wait", gate),
            ev(1, download_id="dl-61000000000000000000000000000000", bytes=5),
            ev(1, download_id="dl-62000000000000000000000000000000", bytes=5),
            ("drop",),
        ],
        [
            ev(2, download_id="dl-62000000000000000000000000000000", bytes=10),
            ("hold",),
        ],  # dl-a finished meanwhile: not active any more
    ]
    fake.streams["/v2/downloads/dl-61000000000000000000000000000000/stream"] = [
        [ev(2, "complete", download_id="dl-61000000000000000000000000000000", bytes=50), ("end",)]
    ]
    queen = make_queen(fake)
    results: list[ServerSentEvent] = []

    def everything(seen: list[ServerSentEvent]) -> bool:
        got = {(e.json()["download_id"], int(e.id)) for e in seen if e.data}
        return {("dl-61000000000000000000000000000000", 2), ("dl-62000000000000000000000000000000", 2)} <= got

    reader = threading.Thread(
        target=lambda: results.extend(read_stream(f"{queen.url}/v1/downloads/stream", until=everything))
    )
    reader.start()
    wait_until(lambda: metric(queen, 'rbee_queen_sse_clients{stream="all"}') == 1, 5)
    gate.set()
    reader.join(20)
    seen = [e for e in results if e.data]
    by_download: dict[str, list[tuple[int, str]]] = {}
    for e in seen:
        assert e.json()["orchestrator_id"] == "queen-t" and e.json()["hive_id"] == "hive-f"
        by_download.setdefault(e.json()["download_id"], []).append((int(e.id), e.event))
    assert by_download == {
        "dl-61000000000000000000000000000000": [(1, "progress"), (2, "complete")],
        "dl-62000000000000000000000000000000": [(1, "progress"), (2, "progress")],
    }
    assert fake.requests("/v2/downloads/dl-61000000000000000000000000000000/stream")[0].headers["last-event-id"] == "1"
    first = [e for e in read_stream(f"{queen.url}/v1/downloads/stream", until=lambda s: bool(s[-1].data)) if e.data]
    assert [(e.json()["download_id"], int(e.id)) for e in first] == [
        ("dl-62000000000000000000000000000000", 2)
    ]  # only what is active


def test_aggregated_stream_relays_a_download_that_began_and_ended_while_the_hive_stream_was_down(
    fake: FakeHive, make_queen: Callable[..., ServerThread]
) -> None:
    """The hive's stream shows only active downloads on connect: one that came and went in the gap is
    found in the hive's list (ended after the drop) and its terminal event relayed; old history is not."""
    gate = threading.Event()
    now = datetime.now(UTC)
    gap, old = "dl-63000000000000000000000000000000", "dl-64000000000000000000000000000000"
    fake.states[gap] = {"download_id": gap, "status": "complete", "completed_at": now.isoformat()}
    fake.states[old] = {
        "download_id": old,
        "status": "complete",
        "completed_at": (now - timedelta(days=2)).isoformat(),
    }
    fake.streams["/v2/downloads/stream"] = [
        [("wait", gate), ev(1, download_id="dl-62000000000000000000000000000000", bytes=5), ("drop",)],
        [("hold",)],
    ]
    fake.streams[f"/v2/downloads/{gap}/stream"] = [[ev(7, "complete", download_id=gap, bytes=50), ("end",)]]
    queen = make_queen(fake)
    results: list[ServerSentEvent] = []

    def gap_seen(seen: list[ServerSentEvent]) -> bool:
        return any(e.data and e.json()["download_id"] == gap for e in seen)

    reader = threading.Thread(
        target=lambda: results.extend(read_stream(f"{queen.url}/v1/downloads/stream", until=gap_seen))
    )
    reader.start()
    wait_until(lambda: metric(queen, 'rbee_queen_sse_clients{stream="all"}') == 1, 5)
    gate.set()
    reader.join(20)
    assert [(e.json()["download_id"], int(e.id), e.event) for e in results if e.data][-1] == (gap, 7, "complete")
    assert fake.requests(f"/v2/downloads/{gap}/stream")[0].headers["last-event-id"] == "0"
    assert not fake.requests(f"/v2/downloads/{old}/stream")  # history from before the gap is not replayed


def test_a_late_joiner_shares_the_subscription_and_starts_from_the_latest_event(
    fake: FakeHive, make_queen: Callable[..., ServerThread]
) -> None:
    gate, three_seen = threading.Event(), threading.Event()
    path = "/v2/downloads/dl-78000000000000000000000000000000/stream"
    fake.states["dl-78000000000000000000000000000000"] = {
        "download_id": "dl-78000000000000000000000000000000",
        "status": "downloading",
    }
    fake.streams[path] = [
        [ev(1, bytes=1), ev(2, bytes=2), ev(3, bytes=3), ("wait", gate), ev(4, "complete"), ("end",)],
        [("status", 204, None)],  # what a hive answers at or past the terminal id
    ]
    queen = make_queen(fake)
    results: dict[str, list[ServerSentEvent]] = {}

    def first_client() -> None:
        def until(seen: list[ServerSentEvent]) -> bool:
            if seen[-1].id == "3":
                three_seen.set()
            return False

        results["first"] = read_stream(
            f"{queen.url}/v1/downloads/dl-78000000000000000000000000000000/stream", until=until
        )

    thread = threading.Thread(target=first_client)
    thread.start()
    assert three_seen.wait(10)

    def late(seen: list[ServerSentEvent]) -> bool:
        gate.set()  # the download goes on only once the late joiner has its first event
        return False

    results["late"] = read_stream(f"{queen.url}/v1/downloads/dl-78000000000000000000000000000000/stream", until=late)
    thread.join(10)
    first = [int(e.id) for e in results["first"]]
    assert first == sorted(set(first)) and first[-2:] == [3, 4]  # 1 and 2 may be coalesced away
    assert [(int(e.id), e.event) for e in results["late"]] == [(3, "progress"), (4, "complete")]
    assert len(fake.requests(path)) == 1  # the late joiner did not open a second upstream
    resumed = httpx.get(
        f"{queen.url}/v1/downloads/dl-78000000000000000000000000000000/stream",
        headers={**AUTH, "Last-Event-ID": "4"},
        timeout=10,
    )
    assert resumed.status_code == 204
    assert fake.requests(path)[1].headers["last-event-id"] == "4"


def test_a_client_the_aggregated_stream_serves_goes_on_from_the_relay_when_that_stream_drops(
    fake: FakeHive, make_queen: Callable[..., ServerThread]
) -> None:
    did = "dl-79000000000000000000000000000000"
    path = f"/v2/downloads/{did}/stream"
    cut = threading.Event()
    fake.states[did] = {"download_id": did, "status": "downloading"}
    fake.streams["/v2/downloads/stream"] = [
        [ev(1, download_id=did, bytes=1), ev(2, download_id=did, bytes=2), ("wait", cut), ("drop",)],
        [("hold",)],
    ]
    fake.streams[path] = [
        [
            ev(2, download_id=did, bytes=2),  # the current state first: already given, not repeated
            ev(3, download_id=did, bytes=3),
            ev(4, "complete", download_id=did, bytes=4),
            ("end",),
        ]
    ]
    queen = make_queen(fake)
    read_stream(f"{queen.url}/v1/downloads/stream", until=lambda seen: seen[-1].id == "2")  # the queen shows it

    def until(seen: list[ServerSentEvent]) -> bool:
        if seen[-1].id == "2":
            assert not fake.requests(path)  # served from the hive's aggregated stream: no connection of its own
            assert metric(queen, 'rbee_queen_upstream_subscriptions{stream="download"}') == 0
            cut.set()  # now the hive's aggregated stream drops
        return False

    events = read_stream(f"{queen.url}/v1/downloads/{did}/stream", until=until)
    ids = [int(e.id) for e in events]
    assert ids[0] == 2 and ids == sorted(set(ids))  # one stream: no id repeated (3 may be coalesced away)
    assert [(int(e.id), e.event) for e in events][-1] == (4, "complete")
    assert [e.event for e in events].count("complete") == 1
    assert all(e.json()["hive_id"] == "hive-f" and e.json()["orchestrator_id"] == "queen-t" for e in events)
    assert [r.headers.get("last-event-id") for r in fake.requests(path)] == ["2"]  # resumed after the last id
