"""What the tracker tests share: a fake clock, an event recorder and short paths through the state machine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from services.hive.tracker.tracker import DownloadTracker, Subscriber
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


def take(sub: Subscriber) -> list[ProgressEvent]:
    return run(sub.next_batch)  # type: ignore[no-any-return]


def progress_event(event_id: int, nbytes: int, download_id: str = DL) -> ProgressEvent:
    return ProgressEvent(event_id, EventType.PROGRESS, {"download_id": download_id, "bytes": nbytes, "total": None})


def terminal_event(event_id: int, nbytes: int, download_id: str = DL) -> ProgressEvent:
    return ProgressEvent(event_id, EventType.CANCELLED, {"download_id": download_id, "bytes": nbytes, "total": None})
