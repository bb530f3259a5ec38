"""DownloadTracker: state machine, events, EMA speed, bounded subscribers. Driven by a fake clock."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.hive.tracker import (
    DownloadTracker,
    InvalidTransition,
    SpeedMeter,
    StreamDecision,
    Subscriber,
    UnknownDownload,
    eta_secs,
)
from shared.models import DownloadState, DownloadStatus, ErrorCode, EventType, ProgressEvent

S = DownloadStatus
INTERVAL = 0.5
DL = "dl-1"
REF = "hf:org/repo::file=model.gguf"

PROGRESS_KEYS = {"download_id", "bytes", "total", "speed_bps", "eta_secs", "percent", "status", "model_ref"}
COMPLETE_KEYS = {"download_id", "bytes", "total", "duration_secs", "sha256", "path"}
ERROR_KEYS = {"download_id", "error", "code", "bytes", "total"}
CANCELLED_KEYS = {"download_id", "bytes", "total"}

TERMINAL = (S.COMPLETE, S.FAILED, S.CANCELLED)
NON_TERMINAL = (S.QUEUED, S.STARTING, S.DOWNLOADING)
TERMINAL_EVENT = {S.COMPLETE: EventType.COMPLETE, S.FAILED: EventType.ERROR, S.CANCELLED: EventType.CANCELLED}


class FakeClock:
    """A monotonic clock that only moves when the test says so (binary-exact steps keep maths exact)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, secs: float) -> float:
        self.now += secs
        return self.now


class Recorder:
    """Every event the tracker emits, with a snapshot of the state at that moment."""

    def __init__(self, tracker: DownloadTracker) -> None:
        self.events: list[ProgressEvent] = []
        tracker.add_listener(self._listen)

    def _listen(self, state: DownloadState, event: ProgressEvent) -> None:
        assert state.download_id == event.download_id
        self.events.append(event)

    def of(self, download_id: str) -> list[ProgressEvent]:
        return [e for e in self.events if e.download_id == download_id]

    @property
    def last(self) -> ProgressEvent:
        return self.events[-1]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tracker(clock: FakeClock) -> DownloadTracker:
    return DownloadTracker(progress_interval=INTERVAL, alpha=0.3, clock=clock)


@pytest.fixture
def rec(tracker: DownloadTracker) -> Recorder:
    return Recorder(tracker)


def contract(data: dict[str, Any]) -> dict[str, Any]:
    """An event payload without its `emitted_at`, which must be an RFC 3339 UTC time."""
    stamp = data.get("emitted_at")
    assert isinstance(stamp, str) and stamp.endswith("Z"), stamp
    datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return {k: v for k, v in data.items() if k != "emitted_at"}


def finish(tracker: DownloadTracker, download_id: str, status: DownloadStatus) -> None:
    if status is S.COMPLETE:
        tracker.complete_download(download_id, sha256="ab" * 32, path="/models/org/repo/model.gguf")
    elif status is S.FAILED:
        tracker.fail_download(download_id, "connection reset", ErrorCode.DOWNLOAD_TIMEOUT)
    elif status is S.CANCELLED:
        tracker.cancel_download(download_id)
    else:
        raise AssertionError(status)


def drive_to(tracker: DownloadTracker, download_id: str, status: DownloadStatus, total: int | None = 1000) -> None:
    """Start `download_id` and move it to `status` by the shortest legal path."""
    tracker.start_download(download_id, REF, total)
    if status is S.STARTING:
        tracker.set_status(download_id, S.STARTING)
    elif status is S.DOWNLOADING:
        tracker.set_status(download_id, S.DOWNLOADING)
    elif status.is_terminal:
        finish(tracker, download_id, status)


def status_of(tracker: DownloadTracker, download_id: str) -> DownloadStatus:
    state = tracker.get_download(download_id)
    assert state is not None
    return state.status


def run(coro_fn: Callable[[], Any], timeout: float = 10.0) -> Any:
    async def guarded() -> Any:
        return await asyncio.wait_for(coro_fn(), timeout)

    return asyncio.run(guarded())


# -- state machine -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst"), [(S.QUEUED, S.STARTING), (S.QUEUED, S.DOWNLOADING), (S.STARTING, S.DOWNLOADING)]
)
def test_legal_forward_transitions_emit_a_progress_event(
    tracker: DownloadTracker, rec: Recorder, src: DownloadStatus, dst: DownloadStatus
) -> None:
    drive_to(tracker, DL, src)
    before = len(rec.events)
    tracker.set_status(DL, dst)
    assert status_of(tracker, DL) is dst
    assert len(rec.events) == before + 1
    assert rec.last.event is EventType.PROGRESS
    assert rec.last.data["status"] == dst.value
    assert rec.last.id == tracker.last_event_id(DL) == before + 1


@pytest.mark.parametrize("dst", TERMINAL)
@pytest.mark.parametrize("src", NON_TERMINAL)
def test_every_non_terminal_status_can_end(
    tracker: DownloadTracker, rec: Recorder, src: DownloadStatus, dst: DownloadStatus
) -> None:
    drive_to(tracker, DL, src)
    before = len(rec.events)
    finish(tracker, DL, dst)
    state = tracker.get_download(DL)
    assert state is not None
    assert state.status is dst
    assert state.completed_at is not None
    assert len(rec.events) == before + 1
    assert rec.last.event is TERMINAL_EVENT[dst]
    assert rec.last.is_terminal


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (S.STARTING, S.QUEUED),
        (S.DOWNLOADING, S.QUEUED),
        (S.DOWNLOADING, S.STARTING),
    ],
)
def test_backward_transitions_are_refused(
    tracker: DownloadTracker, rec: Recorder, src: DownloadStatus, dst: DownloadStatus
) -> None:
    drive_to(tracker, DL, src)
    before = len(rec.events)
    with pytest.raises(InvalidTransition):
        tracker.set_status(DL, dst)
    assert status_of(tracker, DL) is src
    assert len(rec.events) == before


@pytest.mark.parametrize("dst", [s for s in S if not s.is_terminal])
@pytest.mark.parametrize("src", TERMINAL)
def test_nothing_leaves_a_terminal_status_via_set_status(
    tracker: DownloadTracker, rec: Recorder, src: DownloadStatus, dst: DownloadStatus
) -> None:
    drive_to(tracker, DL, src)
    before = len(rec.events)
    with pytest.raises(InvalidTransition):
        tracker.set_status(DL, dst)
    assert status_of(tracker, DL) is src
    assert len(rec.events) == before


@pytest.mark.parametrize("dst", TERMINAL)
@pytest.mark.parametrize("src", TERMINAL)
def test_a_terminal_download_cannot_end_twice(
    tracker: DownloadTracker, rec: Recorder, src: DownloadStatus, dst: DownloadStatus
) -> None:
    drive_to(tracker, DL, src)
    snapshot = tracker.get_download(DL)
    before = len(rec.events)
    with pytest.raises(InvalidTransition):
        finish(tracker, DL, dst)
    assert tracker.get_download(DL) == snapshot
    assert len(rec.events) == before
    assert sum(e.is_terminal for e in rec.events) == 1


@pytest.mark.parametrize("dst", TERMINAL)
@pytest.mark.parametrize("src", TERMINAL)
def test_set_status_on_a_terminal_download_never_changes_it(
    tracker: DownloadTracker, rec: Recorder, src: DownloadStatus, dst: DownloadStatus
) -> None:
    drive_to(tracker, DL, src)
    snapshot = tracker.get_download(DL)
    before = len(rec.events)
    try:
        tracker.set_status(DL, dst)
    except InvalidTransition:
        pass
    assert tracker.get_download(DL) == snapshot
    assert len(rec.events) == before


@pytest.mark.parametrize("status", NON_TERMINAL)
def test_setting_the_same_status_again_is_a_silent_no_op(
    tracker: DownloadTracker, rec: Recorder, status: DownloadStatus
) -> None:
    drive_to(tracker, DL, status)
    before = len(rec.events)
    tracker.set_status(DL, status)
    assert status_of(tracker, DL) is status
    assert len(rec.events) == before


@pytest.mark.parametrize("dst", TERMINAL)
def test_a_terminal_status_set_directly_still_ends_the_download_properly(
    tracker: DownloadTracker, clock: FakeClock, rec: Recorder, dst: DownloadStatus
) -> None:
    """set_status accepts terminal statuses; if it does, the download must end like any other
    (completed_at set, speed/eta reset, streams closed) - or it must refuse."""
    drive_to(tracker, DL, S.DOWNLOADING)
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 500)
    sub = tracker.subscribe(DL)
    try:
        tracker.set_status(DL, dst)
    except InvalidTransition:
        assert status_of(tracker, DL) is S.DOWNLOADING
        return
    state = tracker.get_download(DL)
    assert state is not None
    assert state.status is dst
    assert state.completed_at is not None
    assert (state.speed_bps, state.eta_secs) == (0, None)
    assert sub.closed
    assert tracker.subscriber_count() == 0


@pytest.mark.parametrize("status", TERMINAL)
def test_updates_after_the_end_are_no_ops(
    tracker: DownloadTracker, clock: FakeClock, rec: Recorder, status: DownloadStatus
) -> None:
    drive_to(tracker, DL, S.DOWNLOADING)
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 400)
    finish(tracker, DL, status)
    snapshot = tracker.get_download(DL)
    before = len(rec.events)
    for _ in range(3):
        clock.advance(10 * INTERVAL)
        tracker.update_progress(DL, 900)
        tracker.set_total(DL, 5000)
        tracker.set_queue_position(DL, 3)
    assert tracker.get_download(DL) == snapshot
    assert len(rec.events) == before
    # Nothing became dirty: a late subscriber gets the same terminal event, no new id.
    last_id = tracker.last_event_id(DL)
    tracker.subscribe(DL)
    assert tracker.last_event_id(DL) == last_id


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.set_status("nope", S.DOWNLOADING),
        lambda t: t.update_progress("nope", 10),
        lambda t: t.set_total("nope", 10),
        lambda t: t.set_queue_position("nope", 1),
        lambda t: t.complete_download("nope"),
        lambda t: t.fail_download("nope", "x"),
        lambda t: t.cancel_download("nope"),
        lambda t: t.forget("nope"),
        lambda t: t.last_event_id("nope"),
        lambda t: t.subscribe("nope"),
    ],
)
def test_unknown_downloads_raise_unknown_download(
    tracker: DownloadTracker, call: Callable[[DownloadTracker], object]
) -> None:
    with pytest.raises(UnknownDownload):
        call(tracker)
    assert issubclass(UnknownDownload, KeyError)
    assert tracker.get_download("nope") is None


def test_a_download_id_can_only_be_started_once(tracker: DownloadTracker, rec: Recorder) -> None:
    tracker.start_download(DL, REF)
    with pytest.raises(ValueError, match=DL):
        tracker.start_download(DL, "https://example.com/other.bin")
    state = tracker.get_download(DL)
    assert state is not None and state.model_ref == REF
    assert len(rec.events) == 1


# -- bytes -------------------------------------------------------------------------------------


def test_bytes_never_go_backwards(tracker: DownloadTracker, clock: FakeClock, rec: Recorder) -> None:
    drive_to(tracker, DL, S.DOWNLOADING, total=10_000)
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 1000)
    before = len(rec.events)
    for smaller in (999, 500, 0, 1000):
        clock.advance(INTERVAL)
        tracker.update_progress(DL, smaller)
        state = tracker.get_download(DL)
        assert state is not None and state.bytes_downloaded == 1000
    assert len(rec.events) == before


def test_bytes_on_every_event_are_non_decreasing_whatever_the_updates(
    tracker: DownloadTracker, clock: FakeClock, rec: Recorder
) -> None:
    rng = random.Random(7)
    drive_to(tracker, DL, S.DOWNLOADING, total=None)
    high = 0
    for _ in range(2000):
        clock.advance(rng.choice((0.0, 0.125, 0.25, 0.5)))
        value = rng.randrange(0, 100_000)
        tracker.update_progress(DL, value)
        high = max(high, value)
        state = tracker.get_download(DL)
        assert state is not None and state.bytes_downloaded == high
    tracker.complete_download(DL)
    seen = [e.data["bytes"] for e in rec.of(DL)]
    assert seen == sorted(seen)
    assert seen[-1] == high
    ids = [e.id for e in rec.of(DL)]
    assert ids == list(range(1, len(ids) + 1))


# -- events ------------------------------------------------------------------------------------


def test_start_emits_a_queued_progress_event_with_id_1(tracker: DownloadTracker, rec: Recorder) -> None:
    state = tracker.start_download(DL, REF, 4096, path="/m/org/repo/model.gguf")
    assert state.status is S.QUEUED
    assert len(rec.events) == 1
    event = rec.last
    assert event.id == 1
    assert event.event is EventType.PROGRESS
    assert contract(event.data) == {
        "download_id": DL,
        "bytes": 0,
        "total": 4096,
        "speed_bps": 0,
        "eta_secs": None,
        "percent": 0.0,
        "status": "queued",
        "model_ref": REF,
    }
    assert tracker.last_event_id(DL) == 1


def test_unknown_total_gives_null_percent(tracker: DownloadTracker, rec: Recorder) -> None:
    tracker.start_download(DL, REF)
    assert rec.last.data["total"] is None
    assert rec.last.data["percent"] is None


def test_first_event_id_is_honoured(tracker: DownloadTracker, clock: FakeClock, rec: Recorder) -> None:
    tracker.start_download(DL, REF, 100, first_event_id=42)
    assert rec.last.id == 42
    assert tracker.last_event_id(DL) == 42
    tracker.set_status(DL, S.DOWNLOADING)
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 10)
    tracker.complete_download(DL)
    assert [e.id for e in rec.of(DL)] == [42, 43, 44, 45]
    assert tracker.last_event_id(DL) == 45


def test_ids_strictly_increase_per_download_and_are_independent(
    tracker: DownloadTracker, clock: FakeClock, rec: Recorder
) -> None:
    tracker.start_download("a", REF, 1000)
    tracker.start_download("b", REF, 1000)
    tracker.set_status("a", S.DOWNLOADING)
    tracker.set_status("a", S.DOWNLOADING)  # no-op, no id used
    tracker.set_status("b", S.STARTING)
    tracker.set_status("b", S.DOWNLOADING)
    for step in range(1, 6):
        clock.advance(INTERVAL)
        tracker.update_progress("a", 100 * step)
        if step % 2:
            tracker.update_progress("b", 50 * step)
    tracker.cancel_download("b")
    tracker.complete_download("a")
    ids_a = [e.id for e in rec.of("a")]
    ids_b = [e.id for e in rec.of("b")]
    assert ids_a == list(range(1, 9))  # queued, downloading, 5 progress, complete
    assert ids_b == list(range(1, 8))  # queued, starting, downloading, 3 progress (steps 1, 3, 5), cancelled
    assert tracker.last_event_id("a") == 8
    assert tracker.last_event_id("b") == 7


def test_status_changes_emit_immediately_even_inside_the_interval(
    tracker: DownloadTracker, clock: FakeClock, rec: Recorder
) -> None:
    tracker.start_download(DL, REF, 1000)
    tracker.set_queue_position(DL, 2)
    tracker.set_status(DL, S.STARTING)
    tracker.set_status(DL, S.DOWNLOADING)
    tracker.fail_download(DL, "boom")
    assert clock.now == 0.0
    assert [e.data.get("status", e.event.value) for e in rec.events] == [
        "queued",
        "queued",
        "starting",
        "downloading",
        "error",
    ]
    assert [e.id for e in rec.events] == [1, 2, 3, 4, 5]


def test_progress_is_throttled_to_one_event_per_interval(
    tracker: DownloadTracker, clock: FakeClock, rec: Recorder
) -> None:
    drive_to(tracker, DL, S.DOWNLOADING, total=100_000)
    assert len(rec.events) == 2
    # Inside the first interval: bytes move, nothing is emitted.
    for t, nbytes in ((0.125, 100), (0.25, 200), (0.375, 300), (0.4375, 400)):
        clock.now = t
        tracker.update_progress(DL, nbytes)
    assert len(rec.events) == 2
    state = tracker.get_download(DL)
    assert state is not None and state.bytes_downloaded == 400
    # The interval has passed: exactly one event, carrying the latest bytes.
    clock.now = 0.5
    tracker.update_progress(DL, 500)
    assert len(rec.events) == 3
    assert rec.last.data["bytes"] == 500
    clock.now = 0.75
    tracker.update_progress(DL, 600)
    clock.now = 0.875
    tracker.update_progress(DL, 700)
    assert len(rec.events) == 3
    clock.now = 1.0
    tracker.update_progress(DL, 800)
    assert len(rec.events) == 4
    assert rec.last.data["bytes"] == 800
    # A long gap still gives one event, not a burst.
    clock.now = 10.0
    tracker.update_progress(DL, 900)
    assert len(rec.events) == 5
    assert [e.id for e in rec.events] == [1, 2, 3, 4, 5]


def test_many_fast_updates_stay_within_the_interval_budget(
    tracker: DownloadTracker, clock: FakeClock, rec: Recorder
) -> None:
    drive_to(tracker, DL, S.DOWNLOADING, total=None)
    for i in range(1, 801):
        clock.advance(1 / 64)  # 800 updates over 12.5 s, exact in binary
        tracker.update_progress(DL, i * 10)
    progress = [e for e in rec.of(DL) if e.data.get("status") == "downloading"][1:]
    assert len(progress) == 25  # 12.5 s / 0.5 s
    assert [e.data["bytes"] for e in progress] == [i * 320 for i in range(1, 26)]


def test_progress_payload_has_exactly_the_contract_fields(
    tracker: DownloadTracker, clock: FakeClock, rec: Recorder
) -> None:
    drive_to(tracker, DL, S.DOWNLOADING, total=10_000)
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 2500)
    assert rec.last.event is EventType.PROGRESS
    assert set(contract(rec.last.data)) == PROGRESS_KEYS
    assert contract(rec.last.data) == {
        "download_id": DL,
        "bytes": 2500,
        "total": 10_000,
        "speed_bps": 5000,
        "eta_secs": 2,
        "percent": 25.0,
        "status": "downloading",
        "model_ref": REF,
    }


def test_queue_position_is_carried_only_while_queued(tracker: DownloadTracker, rec: Recorder) -> None:
    tracker.start_download(DL, REF, 100)
    assert "queue_position" not in rec.last.data
    tracker.set_queue_position(DL, 3)
    assert set(contract(rec.last.data)) == PROGRESS_KEYS | {"queue_position"}
    assert rec.last.data["queue_position"] == 3
    before = len(rec.events)
    tracker.set_queue_position(DL, 3)  # unchanged: no event
    assert len(rec.events) == before
    tracker.set_queue_position(DL, 1)
    assert rec.last.data["queue_position"] == 1
    tracker.set_status(DL, S.STARTING)
    assert "queue_position" not in rec.last.data
    state = tracker.get_download(DL)
    assert state is not None and state.queue_position is None
    before = len(rec.events)
    tracker.set_queue_position(DL, 5)  # not queued any more: ignored
    assert len(rec.events) == before
    state = tracker.get_download(DL)
    assert state is not None and state.queue_position is None


def test_waiting_is_carried_while_it_lasts_and_emits_when_it_begins_and_ends(
    tracker: DownloadTracker, rec: Recorder
) -> None:
    until = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    tracker.start_download(DL, REF, 100)
    tracker.set_status(DL, S.STARTING)
    assert "waiting_until" not in rec.last.data
    before = len(rec.events)
    tracker.set_waiting(DL, until, "rate limited by the hub (resolvers), r=0")
    assert len(rec.events) == before + 1 and rec.last.event is EventType.PROGRESS
    assert set(contract(rec.last.data)) == PROGRESS_KEYS | {"waiting_until", "waiting_reason"}
    assert rec.last.data["waiting_until"] == "2024-05-06T07:08:09Z"
    assert rec.last.data["waiting_reason"] == "rate limited by the hub (resolvers), r=0"
    state = tracker.get_download(DL)
    assert state is not None and state.to_dict()["waiting_until"] == "2024-05-06T07:08:09Z"
    tracker.set_waiting(DL, until, "rate limited by the hub (resolvers), r=0")  # unchanged: no event
    assert len(rec.events) == before + 1
    tracker.set_waiting(DL, None, "ignored without an end")
    assert len(rec.events) == before + 2 and set(contract(rec.last.data)) == PROGRESS_KEYS
    state = tracker.get_download(DL)
    assert state is not None and (state.waiting_until, state.waiting_reason) == (None, None)
    tracker.set_waiting(DL, until, "again")
    tracker.fail_download(DL, "gave up")
    state = tracker.get_download(DL)
    assert state is not None and (state.waiting_until, state.waiting_reason) == (None, None)  # ended: no wait
    before = len(rec.events)
    tracker.set_waiting(DL, until, "too late")  # ended: ignored
    assert len(rec.events) == before


def test_complete_payload(tracker: DownloadTracker, clock: FakeClock, rec: Recorder) -> None:
    clock.now = 100.0
    tracker.start_download(DL, REF, 1000, path="/m/start-path")
    tracker.set_status(DL, S.DOWNLOADING)
    clock.now = 100.5
    tracker.update_progress(DL, 1000)
    clock.now = 102.75
    tracker.complete_download(DL, sha256="cd" * 32, path="/m/final")
    assert rec.last.event is EventType.COMPLETE
    assert contract(rec.last.data) == {
        "download_id": DL,
        "bytes": 1000,
        "total": 1000,
        "duration_secs": 2.75,
        "sha256": "cd" * 32,
        "path": "/m/final",
    }
    state = tracker.get_download(DL)
    assert state is not None
    assert (state.sha256, state.path, state.percent) == ("cd" * 32, "/m/final", 100.0)


def test_complete_keeps_the_start_path_and_fills_an_unknown_total(tracker: DownloadTracker, rec: Recorder) -> None:
    tracker.start_download(DL, REF, None, path="/m/start-path")
    tracker.set_status(DL, S.DOWNLOADING)
    tracker.update_progress(DL, 777)
    tracker.complete_download(DL, sha256="ef" * 32)
    assert set(contract(rec.last.data)) == COMPLETE_KEYS
    assert rec.last.data["path"] == "/m/start-path"
    assert (rec.last.data["bytes"], rec.last.data["total"]) == (777, 777)
    assert rec.last.data["duration_secs"] == 0.0
    state = tracker.get_download(DL)
    assert state is not None and state.percent == 100.0


def test_complete_from_queued_for_a_file_already_on_disk(tracker: DownloadTracker, rec: Recorder) -> None:
    tracker.start_download(DL, REF, 2048, path="/m/x")
    tracker.complete_download(DL, sha256="00" * 32, path="/m/x")
    assert [e.event for e in rec.events] == [EventType.PROGRESS, EventType.COMPLETE]
    assert rec.last.data["bytes"] == rec.last.data["total"] == 2048


def test_error_payload(tracker: DownloadTracker, clock: FakeClock, rec: Recorder) -> None:
    drive_to(tracker, DL, S.DOWNLOADING, total=1000)
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 300)
    tracker.fail_download(DL, "sha256 differs", ErrorCode.CHECKSUM_MISMATCH)
    assert rec.last.event is EventType.ERROR
    assert contract(rec.last.data) == {
        "download_id": DL,
        "error": "sha256 differs",
        "code": "CHECKSUM_MISMATCH",
        "bytes": 300,
        "total": 1000,
    }
    assert type(rec.last.data["code"]) is str
    state = tracker.get_download(DL)
    assert state is not None and (state.error, state.error_code) == ("sha256 differs", "CHECKSUM_MISMATCH")


def test_error_code_defaults_to_download_failed(tracker: DownloadTracker, rec: Recorder) -> None:
    tracker.start_download(DL, REF)
    tracker.fail_download(DL, "boom")
    assert set(contract(rec.last.data)) == ERROR_KEYS
    assert rec.last.data["code"] == "DOWNLOAD_FAILED"


def test_cancelled_payload(tracker: DownloadTracker, clock: FakeClock, rec: Recorder) -> None:
    drive_to(tracker, DL, S.DOWNLOADING, total=None)
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 123)
    clock.advance(0.125)
    tracker.update_progress(DL, 456)  # not emitted yet, but the terminal event carries it
    tracker.cancel_download(DL)
    assert rec.last.event is EventType.CANCELLED
    assert contract(rec.last.data) == {"download_id": DL, "bytes": 456, "total": None}


@pytest.mark.parametrize("status", TERMINAL)
def test_exactly_one_terminal_event_and_it_is_last(
    tracker: DownloadTracker, clock: FakeClock, rec: Recorder, status: DownloadStatus
) -> None:
    drive_to(tracker, DL, S.DOWNLOADING)
    for n in range(1, 5):
        clock.advance(INTERVAL)
        tracker.update_progress(DL, n * 100)
    finish(tracker, DL, status)
    for other in TERMINAL:
        with pytest.raises(InvalidTransition):
            finish(tracker, DL, other)
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 999)
    events = rec.of(DL)
    assert [e.is_terminal for e in events].count(True) == 1
    assert events[-1].is_terminal
    assert events[-1].event is TERMINAL_EVENT[status]


def test_listeners_see_every_event_with_the_live_state(tracker: DownloadTracker, clock: FakeClock) -> None:
    seen: list[tuple[str, int, int]] = []
    tracker.add_listener(lambda state, event: seen.append((state.status.value, state.bytes_downloaded, event.id)))
    drive_to(tracker, DL, S.DOWNLOADING)
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 10)
    tracker.cancel_download(DL)
    assert seen == [("queued", 0, 1), ("downloading", 0, 2), ("downloading", 10, 3), ("cancelled", 10, 4)]


# -- speed, ETA, percent -----------------------------------------------------------------------


def test_speed_is_an_ema_over_whole_intervals(tracker: DownloadTracker, clock: FakeClock, rec: Recorder) -> None:
    total = 10_000
    drive_to(tracker, DL, S.DOWNLOADING, total=total)  # meter starts at t=0 with 0 bytes
    expected = [
        # (t, bytes, speed_bps, eta_secs, percent)
        # first measured interval seeds the average: 1000 B / 0.5 s = 2000 B/s; ceil(9000/2000) = 5
        (0.5, 1000, 2000, 5, 10.0),
        # instant 1500/0.5 = 3000 -> 0.3*3000 + 0.7*2000 = 2300; ceil(7500/2300) = ceil(3.26) = 4
        (1.0, 2500, 2300, 4, 25.0),
        # (t=1.25: 2600 B, inside the interval, not measured) instant 200/0.5 = 400
        # -> 0.3*400 + 0.7*2300 = 1730; ceil(7300/1730) = ceil(4.22) = 5
        (1.5, 2700, 1730, 5, 27.0),
        # instant 3300/0.5 = 6600 -> 0.3*6600 + 0.7*1730 = 3191; ceil(4000/3191) = 2
        (2.0, 6000, 3191, 2, 60.0),
        # a 2 s gap: instant 3000/2 = 1500 -> 0.3*1500 + 0.7*3191 = 2683.7 -> 2684; ceil(1000/2683.7) = 1
        (4.0, 9000, 2684, 1, 90.0),
    ]
    got = []
    for t, nbytes, *_ in expected:
        if t == 1.5:
            clock.now = 1.25
            tracker.update_progress(DL, 2600)
        clock.now = t
        tracker.update_progress(DL, nbytes)
        d = rec.last.data
        got.append((t, d["bytes"], d["speed_bps"], d["eta_secs"], d["percent"]))
    assert got == expected
    assert all(type(row[2]) is int for row in got)
    state = tracker.get_download(DL)
    assert state is not None and (state.speed_bps, state.eta_secs) == (2684, 1)


@pytest.mark.parametrize("alpha", [0.3, 0.5, 1.0])
def test_tracker_alpha_is_used(clock: FakeClock, alpha: float) -> None:
    tracker = DownloadTracker(progress_interval=1.0, alpha=alpha, clock=clock)
    rec = Recorder(tracker)
    drive_to(tracker, DL, S.DOWNLOADING, total=None)
    clock.now = 1.0
    tracker.update_progress(DL, 1000)  # seed: 1000
    clock.now = 2.0
    tracker.update_progress(DL, 3000)  # instant 2000
    assert rec.last.data["speed_bps"] == round(alpha * 2000 + (1 - alpha) * 1000)
    assert rec.last.data["eta_secs"] is None  # unknown total: no ETA
    assert rec.last.data["percent"] is None


def test_speed_is_measured_from_when_downloading_began(
    tracker: DownloadTracker, clock: FakeClock, rec: Recorder
) -> None:
    tracker.start_download(DL, REF, 100_000)
    clock.now = 5.0  # time spent queued does not count
    tracker.set_status(DL, S.DOWNLOADING)
    clock.now = 5.5
    tracker.update_progress(DL, 4000)
    assert rec.last.data["speed_bps"] == 8000
    assert rec.last.data["eta_secs"] == 12  # ceil(96000/8000) = 12 exactly


@pytest.mark.parametrize("status", TERMINAL)
def test_speed_and_eta_reset_at_the_end(
    tracker: DownloadTracker, clock: FakeClock, rec: Recorder, status: DownloadStatus
) -> None:
    drive_to(tracker, DL, S.DOWNLOADING, total=10_000)
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 1000)
    state = tracker.get_download(DL)
    assert state is not None and state.speed_bps == 2000 and state.eta_secs == 5
    finish(tracker, DL, status)
    state = tracker.get_download(DL)
    assert state is not None
    assert (state.speed_bps, state.eta_secs) == (0, None)
    assert state.to_dict()["speed_bps"] == 0 and state.to_dict()["eta_secs"] is None


def test_percent_is_rounded_to_two_decimals(tracker: DownloadTracker, clock: FakeClock, rec: Recorder) -> None:
    drive_to(tracker, DL, S.DOWNLOADING, total=3)
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 1)
    assert rec.last.data["percent"] == 33.33
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 2)
    assert rec.last.data["percent"] == 66.67


def test_total_learned_later_shows_up_in_the_next_event(
    tracker: DownloadTracker, clock: FakeClock, rec: Recorder
) -> None:
    drive_to(tracker, DL, S.DOWNLOADING, total=None)
    tracker.set_total(DL, 8000)
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 2000)
    assert rec.last.data["total"] == 8000
    assert rec.last.data["percent"] == 25.0
    assert rec.last.data["eta_secs"] == 2  # 4000 B/s, 6000 B left -> 1.5 -> 2


def test_speed_meter_seeding_and_ema() -> None:
    meter = SpeedMeter(alpha=0.3)
    assert meter.sample(10.0, 0) == 0.0  # first sample only marks the start
    assert meter.sample(11.0, 1000) == 1000.0  # first interval seeds
    assert meter.sample(11.0, 5000) == 1000.0  # no time passed: unchanged
    assert meter.sample(12.0, 5000) == pytest.approx(0.3 * 4000 + 0.7 * 1000)  # 1900
    assert meter.sample(13.0, 4000) == pytest.approx(0.7 * 1900)  # bytes going down count as 0
    meter.reset(20.0, 0)
    assert meter.sample(22.0, 1000) == pytest.approx(0.3 * 500 + 0.7 * 1330)


@pytest.mark.parametrize(
    ("remaining", "speed", "expected"),
    [
        (1000, 500.0, 2),
        (1001, 500.0, 3),
        (1, 1_000_000.0, 1),
        (0, 10.0, 0),
        (-5, 10.0, 0),
        (9000, 2000.0, 5),
        (None, 100.0, None),
        (100, 0.0, None),
        (100, -1.0, None),
    ],
)
def test_eta_is_the_ceiling_of_remaining_over_speed(remaining: int | None, speed: float, expected: int | None) -> None:
    assert eta_secs(remaining, speed) == expected


# -- subscribers -------------------------------------------------------------------------------


def take(sub: Subscriber) -> list[ProgressEvent]:
    return run(sub.next_batch)  # type: ignore[no-any-return]


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


def progress_event(event_id: int, nbytes: int, download_id: str = DL) -> ProgressEvent:
    return ProgressEvent(event_id, EventType.PROGRESS, {"download_id": download_id, "bytes": nbytes, "total": None})


def terminal_event(event_id: int, nbytes: int, download_id: str = DL) -> ProgressEvent:
    return ProgressEvent(event_id, EventType.CANCELLED, {"download_id": download_id, "bytes": nbytes, "total": None})


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


# -- queries -----------------------------------------------------------------------------------


def test_list_all_is_newest_first_and_list_active_excludes_terminal(tracker: DownloadTracker) -> None:
    names = [f"dl-{i}" for i in range(12)]
    for name in names:
        tracker.start_download(name, REF)
    for name in names[::3]:
        tracker.cancel_download(name)
    tracker.complete_download(names[1])
    tracker.fail_download(names[2], "x")
    assert [s.download_id for s in tracker.list_all()] == names[::-1]
    finished = set(names[::3]) | {names[1], names[2]}
    active = tracker.list_active()
    assert {s.download_id for s in active} == set(names) - finished
    assert len(active) == len(names) - len(finished)
    assert not any(s.status.is_terminal for s in active)


def test_queries_return_copies(tracker: DownloadTracker) -> None:
    returned = tracker.start_download(DL, REF, 100)
    returned.bytes_downloaded = 99
    got = tracker.get_download(DL)
    assert got is not None
    got.status = S.COMPLETE
    got.bytes_downloaded = 50
    got.error = "tampered"
    tracker.list_all()[0].bytes_downloaded = 77
    tracker.list_active()[0].total_bytes = 1
    fresh = tracker.get_download(DL)
    assert fresh is not None
    assert (fresh.status, fresh.bytes_downloaded, fresh.total_bytes, fresh.error) == (S.QUEUED, 0, 100, None)
    assert fresh is not got
    tracker.set_status(DL, S.DOWNLOADING)  # the tracker's own state is still queued -> downloading is legal


def test_forget_only_drops_finished_downloads(tracker: DownloadTracker) -> None:
    for status in NON_TERMINAL:
        drive_to(tracker, status.value, status)
        with pytest.raises(InvalidTransition):
            tracker.forget(status.value)
        assert tracker.get_download(status.value) is not None
    drive_to(tracker, DL, S.COMPLETE)
    tracker.forget(DL)
    assert tracker.get_download(DL) is None
    assert DL not in {s.download_id for s in tracker.list_all()}
    assert tracker.stream_decision(DL, None) == StreamDecision.NOT_FOUND
    with pytest.raises(UnknownDownload):
        tracker.forget(DL)
    assert len(tracker.list_all()) == 3


# -- restore (history after a restart) ---------------------------------------------------------


def test_restoring_a_finished_download_emits_nothing_and_keeps_its_terminal_event(
    tracker: DownloadTracker, rec: Recorder
) -> None:
    started = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    state = DownloadState(
        DL,
        REF,
        status=S.COMPLETE,
        bytes_downloaded=1000,
        total_bytes=1000,
        started_at=started,
        completed_at=started + timedelta(seconds=12.5),
        sha256="ab" * 32,
        path="/m/x",
    )
    tracker.restore(state, next_event_id=8)
    assert rec.events == []
    assert tracker.last_event_id(DL) == 7
    assert tracker.get_download(DL) == state
    assert tracker.stream_decision(DL, 7) == StreamDecision.ENDED
    assert tracker.stream_decision(DL, 6) == StreamDecision.STREAM
    batch = take(tracker.subscribe(DL, last_event_id=6))
    assert [(e.id, e.event) for e in batch] == [(7, EventType.COMPLETE)]
    assert contract(batch[0].data) == {
        "download_id": DL,
        "bytes": 1000,
        "total": 1000,
        "duration_secs": 12.5,
        "sha256": "ab" * 32,
        "path": "/m/x",
    }
    with pytest.raises(InvalidTransition):
        tracker.cancel_download(DL)
    assert rec.events == []


def test_restoring_an_unfinished_download_continues_its_ids(tracker: DownloadTracker, rec: Recorder) -> None:
    state = DownloadState(DL, REF, status=S.QUEUED, bytes_downloaded=300, total_bytes=1000)
    tracker.restore(state, next_event_id=5)
    assert [(e.id, e.data["status"], e.data["bytes"]) for e in rec.events] == [(5, "queued", 300)]
    state.bytes_downloaded = 999  # the tracker keeps its own copy
    got = tracker.get_download(DL)
    assert got is not None and got.bytes_downloaded == 300
    tracker.set_status(DL, S.DOWNLOADING)
    assert rec.last.id == 6
    with pytest.raises(ValueError, match=DL):
        tracker.restore(state, next_event_id=1)
