"""DownloadTracker's queries, and restoring the history after a restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.hive.tracker.tracker import DownloadTracker, InvalidTransition, StreamDecision, UnknownDownload
from shared.models import DownloadState, EventType
from tests.hive.tracker.support import DL, NON_TERMINAL, REF, Recorder, S, contract, drive_to, take

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
