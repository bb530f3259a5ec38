"""DownloadTracker's events: ids, throttling and the contract's payload of each type."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.hive.tracker.tracker import DownloadTracker, InvalidTransition
from shared.models import DownloadState, DownloadStatus, ErrorCode, EventType, ProgressEvent
from tests.hive.tracker.support import (
    COMPLETE_KEYS,
    DL,
    ERROR_KEYS,
    INTERVAL,
    PROGRESS_KEYS,
    REF,
    TERMINAL,
    TERMINAL_EVENT,
    FakeClock,
    Recorder,
    S,
    contract,
    drive_to,
    finish,
)

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


def test_bytes_after_the_last_event_are_sent_one_interval_later_even_when_no_more_come(
    tracker: DownloadTracker, clock: FakeClock, rec: Recorder
) -> None:
    drive_to(tracker, DL, S.DOWNLOADING, total=100_000)
    clock.now = 0.5
    tracker.update_progress(DL, 500)
    assert len(rec.events) == 3
    clock.now = 0.625
    tracker.update_progress(DL, 700)  # inside the interval: held back
    assert tracker.flush_due() == 0 and len(rec.events) == 3  # not an interval old yet
    clock.now = 0.875
    tracker.update_progress(DL, 750)
    clock.now = 1.0
    assert tracker.flush_due() == 0  # an interval old, but bytes came lately: the next ones send it, fresher
    clock.now = 1.0625
    assert tracker.flush_due() == 0
    clock.now = 1.125
    assert tracker.flush_due() == 1  # the trailing edge: the held-back bytes, though no more came
    assert rec.last.data["bytes"] == 750 and rec.last.id == 4
    clock.now = 5.0
    assert tracker.flush_due() == 0 and len(rec.events) == 4  # nothing moved since: nothing sent
    tracker.update_progress(DL, 800)  # an interval has passed: sent at once, as before
    assert len(rec.events) == 5 and tracker.flush_due() == 0


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


def test_a_failing_listener_never_stops_the_next_one_or_the_stream(tracker: DownloadTracker) -> None:
    heard: list[str] = []

    def full_disk(state: DownloadState, event: ProgressEvent) -> None:
        raise OSError("No space left on device")

    tracker.add_listener(full_disk)
    tracker.add_listener(lambda state, event: heard.append(event.event.value))
    tracker.start_download("dl-l", "http://x/f", 10)
    tracker.complete_download("dl-l", sha256="ab" * 32, path="/m/f")
    assert heard[-1] == "complete" and tracker.get_download("dl-l").status is DownloadStatus.COMPLETE  # type: ignore[union-attr]
