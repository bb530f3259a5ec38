"""DownloadTracker's per-download streams: Last-Event-ID resume, stream decisions, stream_progress to the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from services.hive.tracker.tracker import DownloadTracker, StreamDecision, UnknownDownload
from shared.models import DownloadStatus, EventType, ProgressEvent
from tests.hive.tracker.support import (
    DL,
    INTERVAL,
    REF,
    TERMINAL,
    TERMINAL_EVENT,
    FakeClock,
    S,
    drive_to,
    finish,
    run,
    take,
)

# -- streams ---------------------------------------------------------------------------------


def test_last_event_id_resumes_without_repeating(tracker: DownloadTracker, clock: FakeClock) -> None:
    drive_to(tracker, DL, S.DOWNLOADING, total=None)  # ids 1, 2
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 10)  # id 3
    caught_up = tracker.subscribe(DL, last_event_id=3)
    behind = tracker.subscribe(DL, last_event_id=2)
    assert caught_up.pending() == 0  # it already has the current state
    assert [e.id for e in take(behind)] == [3]
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 20)  # id 4
    assert [e.id for e in take(caught_up)] == [4]
    assert [e.id for e in take(behind)] == [4]


def test_reconnect_before_the_terminal_event_gets_it(tracker: DownloadTracker, clock: FakeClock) -> None:
    drive_to(tracker, DL, S.DOWNLOADING, total=None)
    tracker.complete_download(DL, sha256="aa" * 32)  # id 3
    sub = tracker.subscribe(DL, last_event_id=2)
    assert [(e.id, e.event) for e in take(sub)] == [(3, EventType.COMPLETE)]
    assert take(sub) == []


def test_stream_decision(tracker: DownloadTracker, clock: FakeClock) -> None:
    assert tracker.stream_decision("nope", None) == StreamDecision.NOT_FOUND
    assert tracker.stream_decision("nope", 5) == StreamDecision.NOT_FOUND
    drive_to(tracker, DL, S.DOWNLOADING, total=None)
    for last in (None, 0, 1, 2, 3, 10**9):
        assert tracker.stream_decision(DL, last) == StreamDecision.STREAM
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 10)
    tracker.cancel_download(DL)
    terminal_id = tracker.last_event_id(DL)
    assert terminal_id == 4
    assert tracker.stream_decision(DL, None) == StreamDecision.STREAM
    assert tracker.stream_decision(DL, 0) == StreamDecision.STREAM
    assert tracker.stream_decision(DL, terminal_id - 1) == StreamDecision.STREAM
    assert tracker.stream_decision(DL, terminal_id) == StreamDecision.ENDED
    assert tracker.stream_decision(DL, terminal_id + 1) == StreamDecision.ENDED


@pytest.mark.parametrize("status", TERMINAL)
def test_subscribing_to_a_finished_download_yields_its_terminal_event_and_ends(
    tracker: DownloadTracker, status: DownloadStatus
) -> None:
    drive_to(tracker, DL, S.DOWNLOADING)
    finish(tracker, DL, status)
    terminal_id = tracker.last_event_id(DL)
    sub = tracker.subscribe(DL)
    assert sub.closed
    assert tracker.subscriber_count() == 0
    batch = take(sub)
    assert [(e.id, e.event) for e in batch] == [(terminal_id, TERMINAL_EVENT[status])]
    assert take(sub) == []
    assert tracker.last_event_id(DL) == terminal_id  # no new id for a finished download


def test_stream_progress_ends_after_the_terminal_event(tracker: DownloadTracker, clock: FakeClock) -> None:
    async def scenario() -> list[ProgressEvent]:
        tracker.start_download(DL, REF, 1000)
        received: asyncio.Queue[ProgressEvent] = asyncio.Queue()
        collected: list[ProgressEvent] = []

        async def consume() -> None:
            async for event in tracker.stream_progress(DL):
                collected.append(event)
                received.put_nowait(event)

        consumer = asyncio.ensure_future(consume())
        assert (await received.get()).data["status"] == "queued"
        tracker.set_status(DL, S.DOWNLOADING)
        assert (await received.get()).data["status"] == "downloading"
        for n in (100, 400, 900):
            clock.advance(INTERVAL)
            tracker.update_progress(DL, n)
            assert (await received.get()).data["bytes"] == n
        tracker.complete_download(DL, sha256="11" * 32)
        assert (await received.get()).event is EventType.COMPLETE
        await consumer  # the iterator finished by itself
        return collected

    events = run(scenario)
    assert [e.id for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[-1].is_terminal and events[-1].data["bytes"] == 1000
    assert [e.data["bytes"] for e in events] == sorted(e.data["bytes"] for e in events)
    assert tracker.subscriber_count() == 0


def test_stream_progress_of_a_slow_reader_skips_to_the_terminal_event(
    tracker: DownloadTracker, clock: FakeClock
) -> None:
    async def scenario() -> list[ProgressEvent]:
        drive_to(tracker, DL, S.DOWNLOADING, total=None)
        stream = tracker.stream_progress(DL)
        first = await anext(stream)
        for i in range(1, 500):
            clock.advance(INTERVAL)
            tracker.update_progress(DL, i)
        tracker.cancel_download(DL)
        rest = [event async for event in stream]
        return [first, *rest]

    events = run(scenario)
    assert [(e.id, e.event) for e in events] == [(2, EventType.PROGRESS), (502, EventType.CANCELLED)]
    assert tracker.subscriber_count() == 0


def test_stream_progress_of_a_finished_download(tracker: DownloadTracker) -> None:
    drive_to(tracker, DL, S.COMPLETE)

    async def collect(last: int | None) -> list[ProgressEvent]:
        return [event async for event in tracker.stream_progress(DL, last)]

    assert [e.event for e in run(lambda: collect(None))] == [EventType.COMPLETE]
    assert [e.id for e in run(lambda: collect(1))] == [2]
    assert run(lambda: collect(2)) == []
    assert tracker.subscriber_count() == 0


def test_stream_progress_of_an_unknown_download_raises(tracker: DownloadTracker) -> None:
    async def scenario() -> None:
        await anext(tracker.stream_progress("nope"))

    with pytest.raises(UnknownDownload):
        run(scenario)


def test_closing_stream_progress_early_unsubscribes(tracker: DownloadTracker) -> None:
    async def scenario() -> int:
        tracker.start_download(DL, REF)
        stream = tracker.stream_progress(DL)
        assert isinstance(stream, AsyncGenerator)
        await anext(stream)
        during = tracker.subscriber_count()
        await stream.aclose()
        return during

    assert run(scenario) == 1
    assert tracker.subscriber_count() == 0
