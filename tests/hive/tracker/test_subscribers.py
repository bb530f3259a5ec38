"""DownloadTracker's subscribers: current state first, latest wins (bounded memory), terminal events never lost."""

from __future__ import annotations

import asyncio

from services.hive.tracker.tracker import DownloadTracker, Subscriber
from shared.models import ErrorCode, EventType, ProgressEvent
from tests.hive.tracker.support import (
    DL,
    INTERVAL,
    REF,
    FakeClock,
    Recorder,
    S,
    drive_to,
    progress_event,
    run,
    take,
    terminal_event,
)

# -- subscribers -------------------------------------------------------------------------------


def test_a_subscriber_gets_the_current_state_first(tracker: DownloadTracker, clock: FakeClock) -> None:
    drive_to(tracker, DL, S.DOWNLOADING, total=1000)
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 250)
    sub = tracker.subscribe(DL)
    assert sub.pending() == 1
    batch = take(sub)
    assert len(batch) == 1
    assert batch[0].id == tracker.last_event_id(DL) == 3
    assert batch[0].data["bytes"] == 250
    assert batch[0].data["status"] == "downloading"
    assert tracker.subscriber_count() == 1


def test_a_new_subscriber_of_a_queued_download_gets_the_queued_event(tracker: DownloadTracker) -> None:
    tracker.start_download(DL, REF)
    batch = take(tracker.subscribe(DL))
    assert [(e.id, e.event, e.data["status"]) for e in batch] == [(1, EventType.PROGRESS, "queued")]


def test_a_slow_subscriber_holds_one_pending_event_and_gets_the_latest(
    tracker: DownloadTracker, clock: FakeClock, rec: Recorder
) -> None:
    drive_to(tracker, DL, S.DOWNLOADING, total=None)
    sub = tracker.subscribe(DL)
    most_pending = 0
    for i in range(1, 10_001):
        clock.advance(INTERVAL)
        tracker.update_progress(DL, i * 100)
        most_pending = max(most_pending, sub.pending())
    assert len(rec.of(DL)) == 10_002  # every update was emitted; the reader just never read
    assert most_pending == 1
    batch = take(sub)
    assert len(batch) == 1
    assert batch[0].id == 10_002 == tracker.last_event_id(DL)
    assert batch[0].data["bytes"] == 1_000_000


def test_a_slow_hive_wide_subscriber_holds_one_pending_event_per_download(
    tracker: DownloadTracker, clock: FakeClock
) -> None:
    names = ["a", "b", "c"]
    for name in names:
        drive_to(tracker, name, S.DOWNLOADING, total=None)
    sub = tracker.subscribe(None)
    most_pending = 0
    for i in range(1, 10_001):
        clock.advance(INTERVAL)
        for name in names:
            tracker.update_progress(name, i)
        most_pending = max(most_pending, sub.pending())
    assert most_pending == 3
    batch = take(sub)
    assert sorted((e.download_id, e.data["bytes"], e.id) for e in batch) == [(n, 10_000, 10_002) for n in names]


def test_a_slow_subscriber_never_loses_the_terminal_event(tracker: DownloadTracker, clock: FakeClock) -> None:
    drive_to(tracker, DL, S.DOWNLOADING, total=None)
    sub = tracker.subscribe(DL)
    for i in range(1, 1001):
        clock.advance(INTERVAL)
        tracker.update_progress(DL, i)
    tracker.fail_download(DL, "disk full", ErrorCode.INSUFFICIENT_DISK)
    assert sub.closed
    batch = take(sub)
    assert [(e.event, e.data["bytes"], e.data["code"]) for e in batch] == [(EventType.ERROR, 1000, "INSUFFICIENT_DISK")]
    assert take(sub) == []  # closed and drained: the stream ends
    assert tracker.subscriber_count() == 0


def test_subscriber_mailbox_keeps_the_terminal_event_over_later_offers() -> None:
    sub = Subscriber(DL)
    sub.offer(progress_event(1, 10))
    sub.offer(terminal_event(2, 20))
    sub.offer(progress_event(3, 30))
    sub.offer(terminal_event(4, 40))
    assert sub.pending() == 1
    assert take(sub) == [terminal_event(2, 20)]


def test_subscriber_mailbox_latest_progress_wins_per_download() -> None:
    sub = Subscriber(None)
    sub.offer(progress_event(1, 10, "a"))
    sub.offer(progress_event(1, 5, "b"))
    sub.offer(progress_event(2, 20, "a"))
    sub.offer(progress_event(3, 30, "a"))
    assert sub.pending() == 2
    assert sorted((e.download_id, e.id) for e in take(sub)) == [("a", 3), ("b", 1)]
    assert sub.pending() == 0


def test_subscriber_after_id_drops_events_at_or_before_it() -> None:
    sub = Subscriber(DL, after_id=5)
    for event_id in (1, 4, 5):
        sub.offer(progress_event(event_id, event_id))
    assert sub.pending() == 0
    sub.offer(progress_event(6, 6))
    assert [e.id for e in take(sub)] == [6]


def test_closed_subscriber_with_nothing_pending_returns_an_empty_batch() -> None:
    sub = Subscriber(DL)
    sub.close()
    assert take(sub) == []


def test_next_batch_waits_for_an_offer() -> None:
    async def scenario() -> list[ProgressEvent]:
        sub = Subscriber(DL)
        waiter = asyncio.ensure_future(sub.next_batch())
        await asyncio.sleep(0)
        assert not waiter.done()
        sub.offer(progress_event(1, 1))
        return await waiter

    assert [e.id for e in run(scenario)] == [1]


def test_hive_wide_subscriber_starts_with_every_active_download(tracker: DownloadTracker, clock: FakeClock) -> None:
    drive_to(tracker, "queued", S.QUEUED)
    drive_to(tracker, "moving", S.DOWNLOADING)
    clock.advance(INTERVAL)
    tracker.update_progress("moving", 300)
    drive_to(tracker, "done", S.COMPLETE)
    drive_to(tracker, "failed", S.FAILED)
    sub = tracker.subscribe(None)
    assert sub.download_id is None
    assert not sub.closed
    batch = take(sub)
    assert sorted((e.download_id, e.id, e.data["bytes"]) for e in batch) == [("moving", 3, 300), ("queued", 1, 0)]
    assert all(e.event is EventType.PROGRESS for e in batch)


def test_hive_wide_subscriber_with_nothing_active_starts_empty(tracker: DownloadTracker) -> None:
    drive_to(tracker, "done", S.COMPLETE)
    sub = tracker.subscribe(None)
    assert sub.pending() == 0
    assert tracker.subscriber_count() == 1


def test_hive_wide_subscriber_receives_events_of_every_download(tracker: DownloadTracker, clock: FakeClock) -> None:
    drive_to(tracker, "a", S.DOWNLOADING)
    drive_to(tracker, "b", S.DOWNLOADING)
    sub = tracker.subscribe(None)
    take(sub)
    clock.advance(INTERVAL)
    tracker.update_progress("a", 100)
    tracker.complete_download("b")
    tracker.start_download("c", REF)  # started after subscribing
    batch = take(sub)
    assert sorted((e.download_id, e.event.value) for e in batch) == [
        ("a", "progress"),
        ("b", "complete"),
        ("c", "progress"),
    ]
    assert not sub.closed  # the hive-wide stream never ends by itself
    tracker.cancel_download("a")
    assert [(e.download_id, e.event) for e in take(sub)] == [("a", EventType.CANCELLED)]


def test_unsubscribe_removes_subscribers(tracker: DownloadTracker, clock: FakeClock) -> None:
    drive_to(tracker, DL, S.DOWNLOADING, total=None)
    assert tracker.subscriber_count() == 0
    one = tracker.subscribe(DL)
    two = tracker.subscribe(DL)
    hive = tracker.subscribe(None)
    assert tracker.subscriber_count() == 3
    tracker.unsubscribe(one)
    assert tracker.subscriber_count() == 2
    assert one.closed
    tracker.unsubscribe(hive)
    assert tracker.subscriber_count() == 1
    assert hive.closed
    take(one)
    take(hive)
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 10)
    assert (one.pending(), hive.pending(), two.pending()) == (0, 0, 1)
    tracker.unsubscribe(two)
    tracker.unsubscribe(two)  # twice is harmless
    assert tracker.subscriber_count() == 0


def test_a_dirty_download_gets_a_fresh_event_for_a_new_subscriber(
    tracker: DownloadTracker, clock: FakeClock, rec: Recorder
) -> None:
    drive_to(tracker, DL, S.DOWNLOADING, total=None)
    clock.now = 0.5
    tracker.update_progress(DL, 100)  # id 3
    early = tracker.subscribe(DL)
    take(early)
    clock.now = 0.625
    tracker.update_progress(DL, 150)  # inside the interval: no event, but the state moved
    assert tracker.last_event_id(DL) == 3
    late = tracker.subscribe(DL)
    assert [(e.id, e.data["bytes"]) for e in take(late)] == [(4, 150)]
    assert [(e.id, e.data["bytes"]) for e in take(early)] == [(4, 150)]  # same id for everyone
    assert tracker.last_event_id(DL) == 4
    # Not dirty any more: the next subscriber gets the same event, no new id.
    again = tracker.subscribe(DL)
    assert [e.id for e in take(again)] == [4]
    assert tracker.last_event_id(DL) == 4
    assert [e.id for e in rec.of(DL)] == [1, 2, 3, 4]


def test_a_changed_total_makes_the_download_dirty(tracker: DownloadTracker) -> None:
    tracker.start_download(DL, REF)
    tracker.set_total(DL, 5000)
    assert tracker.last_event_id(DL) == 1
    sub = tracker.subscribe(DL)
    assert [(e.id, e.data["total"], e.data["percent"]) for e in take(sub)] == [(2, 5000, 0.0)]


def test_a_dirty_download_gets_a_fresh_event_for_a_new_hive_wide_subscriber(
    tracker: DownloadTracker, clock: FakeClock
) -> None:
    drive_to(tracker, DL, S.DOWNLOADING, total=None)
    tracker.update_progress(DL, 100)  # t=0: inside the interval, dirty
    sub = tracker.subscribe(None)
    assert [(e.id, e.data["bytes"]) for e in take(sub)] == [(3, 100)]
