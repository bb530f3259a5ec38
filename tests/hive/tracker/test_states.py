"""DownloadTracker's state machine, and bytes that never go backwards."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from services.hive.tracker.tracker import DownloadTracker, InvalidTransition, UnknownDownload
from shared.models import DownloadStatus, EventType
from tests.hive.tracker.support import (
    DL,
    INTERVAL,
    NON_TERMINAL,
    REF,
    TERMINAL,
    TERMINAL_EVENT,
    FakeClock,
    Recorder,
    S,
    drive_to,
    finish,
    status_of,
)

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


REFUSED = [
    *(
        (src, dst, "set_status")
        for src, dst in [(S.STARTING, S.QUEUED), (S.DOWNLOADING, S.QUEUED), (S.DOWNLOADING, S.STARTING)]
    ),
    *((src, dst, "set_status") for src in TERMINAL for dst in S),  # nothing leaves a terminal status
    *((src, dst, "end") for src in TERMINAL for dst in TERMINAL),  # a terminal download cannot end twice
]


@pytest.mark.parametrize(("src", "dst", "how"), REFUSED)
def test_refused_transitions_change_nothing(
    tracker: DownloadTracker, rec: Recorder, src: DownloadStatus, dst: DownloadStatus, how: str
) -> None:
    """Backward moves, and any move out of a terminal status (set_status or a second end), raise and
    leave the state and the events as they were."""
    drive_to(tracker, DL, src)
    snapshot = tracker.get_download(DL)
    before = len(rec.events)
    with pytest.raises(InvalidTransition):
        if how == "set_status":
            tracker.set_status(DL, dst)
        else:
            finish(tracker, DL, dst)
    assert status_of(tracker, DL) is src
    assert tracker.get_download(DL) == snapshot
    assert len(rec.events) == before
    assert sum(e.is_terminal for e in rec.events) == (1 if src.is_terminal else 0)


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
