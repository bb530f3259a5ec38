"""Download state and event payloads: the JSON shapes of the contract."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from shared.models import (
    TERMINAL_EVENTS,
    DownloadState,
    DownloadStatus,
    ErrorCode,
    EventType,
    ProgressEvent,
    rfc3339,
)

S = DownloadStatus
STARTED = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
ENDED = datetime(2024, 5, 6, 7, 9, 0, tzinfo=UTC)

STATE_KEYS = {
    "commit",
    "download_id",
    "model_ref",
    "status",
    "bytes_downloaded",
    "total_bytes",
    "speed_bps",
    "eta_secs",
    "percent",
    "started_at",
    "completed_at",
    "error",
    "error_code",
    "path",
    "sha256",
}


def contract(data: dict[str, Any]) -> dict[str, Any]:
    """An event payload without its `emitted_at`, which must be an RFC 3339 UTC time."""
    stamp = data.get("emitted_at")
    assert isinstance(stamp, str) and stamp.endswith("Z"), stamp
    datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return {k: v for k, v in data.items() if k != "emitted_at"}


def test_to_dict_of_a_running_download() -> None:
    state = DownloadState(
        "dl-1",
        "hf:org/repo::file=model.gguf",
        status=S.DOWNLOADING,
        bytes_downloaded=2500,
        total_bytes=10_000,
        speed_bps=2300,
        eta_secs=4,
        started_at=STARTED,
        path="/models/org/repo/model.gguf",
    )
    d = state.to_dict()
    assert STATE_KEYS <= set(d)  # the contract's fields; more may be added
    assert set(d) - STATE_KEYS == {"queue_position", "waiting_until", "waiting_reason"}
    assert d == {
        "download_id": "dl-1",
        "model_ref": "hf:org/repo::file=model.gguf",
        "status": "downloading",
        "bytes_downloaded": 2500,
        "total_bytes": 10_000,
        "speed_bps": 2300,
        "eta_secs": 4,
        "percent": 25.0,
        "started_at": "2024-05-06T07:08:09.123456Z",
        "completed_at": None,
        "error": None,
        "error_code": None,
        "path": "/models/org/repo/model.gguf",
        "sha256": None,
        "queue_position": None,
        "commit": None,
        "waiting_until": None,
        "waiting_reason": None,
    }
    assert type(d["status"]) is str
    assert json.loads(json.dumps(d)) == d


def test_to_dict_of_finished_downloads() -> None:
    done = DownloadState(
        "dl-2",
        "https://files.example/x.bin",
        status=S.COMPLETE,
        bytes_downloaded=10,
        total_bytes=10,
        started_at=STARTED,
        completed_at=ENDED,
        sha256="ab" * 32,
        path="/m/x.bin",
    ).to_dict()
    assert (done["status"], done["percent"], done["completed_at"], done["sha256"]) == (
        "complete",
        100.0,
        "2024-05-06T07:09:00Z",
        "ab" * 32,
    )
    failed = DownloadState(
        "dl-3",
        "https://files.example/y.bin",
        status=S.FAILED,
        started_at=STARTED,
        completed_at=ENDED,
        error="404 from upstream",
        error_code=ErrorCode.NOT_FOUND,
    ).to_dict()
    assert (failed["status"], failed["error"], failed["error_code"], failed["percent"]) == (
        "failed",
        "404 from upstream",
        "NOT_FOUND",
        None,
    )
    assert json.loads(json.dumps(failed))["error_code"] == "NOT_FOUND"


def test_default_started_at_is_now_in_utc_with_a_z() -> None:
    before = datetime.now(UTC)
    stamp = DownloadState("dl-1", "r").to_dict()["started_at"]
    after = datetime.now(UTC)
    assert isinstance(stamp, str) and stamp.endswith("Z") and "+" not in stamp
    parsed = datetime.fromisoformat(stamp)
    assert parsed.utcoffset() == timedelta(0)
    assert before - timedelta(milliseconds=1) <= parsed <= after + timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (None, None),
        (datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "2024-01-02T03:04:05Z"),
        (datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "2024-01-02T03:04:05.000006Z"),
        (datetime(2024, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2))), "2024-01-01T00:00:00Z"),
        (datetime(2023, 12, 31, 22, 30, tzinfo=timezone(timedelta(hours=-5))), "2024-01-01T03:30:00Z"),
    ],
)
def test_rfc3339(ts: datetime | None, expected: str | None) -> None:
    assert rfc3339(ts) == expected


@pytest.mark.parametrize(
    ("nbytes", "total", "expected"),
    [
        (0, None, None),
        (12345, None, None),
        (0, 0, 100.0),
        (0, 1000, 0.0),
        (1, 3, 33.33),
        (2, 3, 66.67),
        (1, 8, 12.5),
        (1, 200_000, 0.0),
        (999, 1000, 99.9),
        (9999, 10_000, 99.99),
        (99_999, 100_000, 100.0),
        (1000, 1000, 100.0),
        (1500, 1000, 100.0),
    ],
)
def test_percent(nbytes: int, total: int | None, expected: float | None) -> None:
    state = DownloadState("dl-1", "r", bytes_downloaded=nbytes, total_bytes=total)
    assert state.percent == expected
    if expected is not None:
        assert type(state.percent) is float
    assert state.to_dict()["percent"] == expected


def test_progress_event_from_a_queued_state() -> None:
    state = DownloadState("dl-1", "r", total_bytes=None, queue_position=2)
    event = ProgressEvent.from_state(7, state)
    assert (event.id, event.event, event.download_id, event.is_terminal) == (7, EventType.PROGRESS, "dl-1", False)
    assert contract(event.data) == {
        "download_id": "dl-1",
        "bytes": 0,
        "total": None,
        "speed_bps": 0,
        "eta_secs": None,
        "percent": None,
        "status": "queued",
        "model_ref": "r",
        "queue_position": 2,
    }


@pytest.mark.parametrize("status", [S.QUEUED, S.STARTING, S.DOWNLOADING])
def test_progress_event_fields(status: DownloadStatus) -> None:
    state = DownloadState("dl-1", "r", status=status, bytes_downloaded=10, total_bytes=40, speed_bps=5, eta_secs=6)
    event = ProgressEvent.from_state(1, state)
    assert event.event is EventType.PROGRESS
    assert contract(event.data) == {
        "download_id": "dl-1",
        "bytes": 10,
        "total": 40,
        "speed_bps": 5,
        "eta_secs": 6,
        "percent": 25.0,
        "status": status.value,
        "model_ref": "r",
    }
    assert type(event.data["status"]) is str


def test_terminal_events_carry_exactly_their_contract_fields() -> None:
    base: dict[str, Any] = {"bytes_downloaded": 40, "total_bytes": 40, "started_at": STARTED, "completed_at": ENDED}
    complete = ProgressEvent.from_state(
        9, DownloadState("a", "r", status=S.COMPLETE, sha256="cd" * 32, path="/m/x", **base), 12.5
    )
    assert (complete.event, complete.is_terminal) == (EventType.COMPLETE, True)
    assert contract(complete.data) == {
        "download_id": "a",
        "bytes": 40,
        "total": 40,
        "duration_secs": 12.5,
        "sha256": "cd" * 32,
        "path": "/m/x",
    }
    error = ProgressEvent.from_state(
        3, DownloadState("b", "r", status=S.FAILED, error="boom", error_code="DOWNLOAD_TIMEOUT", **base)
    )
    assert (error.event, error.is_terminal) == (EventType.ERROR, True)
    assert contract(error.data) == {
        "download_id": "b",
        "error": "boom",
        "code": "DOWNLOAD_TIMEOUT",
        "bytes": 40,
        "total": 40,
    }
    cancelled = ProgressEvent.from_state(4, DownloadState("c", "r", status=S.CANCELLED, **base))
    assert (cancelled.event, cancelled.is_terminal) == (EventType.CANCELLED, True)
    assert contract(cancelled.data) == {"download_id": "c", "bytes": 40, "total": 40}
    for event in (complete, error, cancelled):
        assert json.loads(json.dumps(event.data)) == event.data


def test_complete_event_without_a_duration_has_a_null_one() -> None:
    event = ProgressEvent.from_state(1, DownloadState("a", "r", status=S.COMPLETE))
    assert "duration_secs" in event.data and event.data["duration_secs"] is None


def test_statuses_events_and_codes_are_the_contract_strings() -> None:
    assert [s.value for s in S] == ["queued", "starting", "downloading", "complete", "failed", "cancelled"]
    assert {s for s in S if s.is_terminal} == {S.COMPLETE, S.FAILED, S.CANCELLED}
    assert [e.value for e in EventType] == ["progress", "complete", "error", "cancelled", "model"]
    assert TERMINAL_EVENTS == {EventType.COMPLETE, EventType.ERROR, EventType.CANCELLED}
    assert {
        "DOWNLOAD_FAILED",
        "DOWNLOAD_TIMEOUT",
        "NOT_FOUND",
        "UNAUTHORIZED",
        "CHECKSUM_MISMATCH",
        "INSUFFICIENT_DISK",
    } <= {c.value for c in ErrorCode}
    assert json.dumps({"s": S.COMPLETE, "c": ErrorCode.NOT_FOUND}) == '{"s": "complete", "c": "NOT_FOUND"}'


def test_progress_event_is_immutable() -> None:
    event = ProgressEvent.from_state(1, DownloadState("a", "r"))
    with pytest.raises(AttributeError):
        event.id = 2  # type: ignore[misc]
