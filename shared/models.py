"""Download state and event payloads: the shapes every service speaks (README, "Progress events (SSE)")."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "STATUS_OF_TERMINAL_EVENT",
    "TERMINAL_EVENTS",
    "TERMINAL_EVENT_OF",
    "TERMINAL_STATUSES",
    "DownloadState",
    "DownloadStatus",
    "ErrorCode",
    "EventType",
    "ProgressEvent",
    "rfc3339",
]


class DownloadStatus(enum.StrEnum):
    QUEUED = "queued"
    STARTING = "starting"
    DOWNLOADING = "downloading"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({DownloadStatus.COMPLETE, DownloadStatus.FAILED, DownloadStatus.CANCELLED})


class EventType(enum.StrEnum):
    PROGRESS = "progress"
    COMPLETE = "complete"
    ERROR = "error"
    CANCELLED = "cancelled"
    MODEL = "model"  # no download's: the hive's model store (shared.wire.models.ModelEventBody)


TERMINAL_EVENTS = frozenset({EventType.COMPLETE, EventType.ERROR, EventType.CANCELLED})

# The event that ends a download of each terminal status, and back (keyed by str: a status or an
# event type read from JSON looks up as it is).
TERMINAL_EVENT_OF: dict[str, EventType] = {
    DownloadStatus.COMPLETE: EventType.COMPLETE,
    DownloadStatus.FAILED: EventType.ERROR,
    DownloadStatus.CANCELLED: EventType.CANCELLED,
}
STATUS_OF_TERMINAL_EVENT: dict[str, DownloadStatus] = {
    event: DownloadStatus(status) for status, event in TERMINAL_EVENT_OF.items()
}


class ErrorCode(enum.StrEnum):
    DOWNLOAD_FAILED = "DOWNLOAD_FAILED"
    DOWNLOAD_TIMEOUT = "DOWNLOAD_TIMEOUT"
    NOT_FOUND = "NOT_FOUND"
    UNAUTHORIZED = "UNAUTHORIZED"
    CHECKSUM_MISMATCH = "CHECKSUM_MISMATCH"
    INSUFFICIENT_DISK = "INSUFFICIENT_DISK"
    HIVE_UNREACHABLE = "HIVE_UNREACHABLE"
    HOST_NOT_ALLOWED = "HOST_NOT_ALLOWED"  # a ref or a redirect outside HIVE_ALLOWED_HOSTS
    # the hub's own refusals (its X-Error-Code)
    GATED_REPO = "GATED_REPO"
    REPO_NOT_FOUND = "REPO_NOT_FOUND"
    REVISION_NOT_FOUND = "REVISION_NOT_FOUND"


def rfc3339(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class DownloadState:
    """One download as the hive tracks it. Mutated only by the DownloadTracker."""

    download_id: str
    model_ref: str
    status: DownloadStatus = DownloadStatus.QUEUED
    bytes_downloaded: int = 0
    total_bytes: int | None = None
    speed_bps: int = 0
    eta_secs: int | None = None
    started_at: datetime = field(default_factory=_utcnow)
    completed_at: datetime | None = None
    error: str | None = None
    error_code: str | None = None
    path: str | None = None
    sha256: str | None = None
    queue_position: int | None = None
    commit: str | None = None  # for hf: refs, the commit the hub named (X-Repo-Commit)
    # while a running download waits for something outside it (the hub's rate-limit window): till when, and why
    waiting_until: datetime | None = None
    waiting_reason: str | None = None
    # a whole model (hf:{org}/{repo}[@{rev}] without ::file=): how many files it takes, how many are in place
    files_total: int | None = None
    files_done: int | None = None
    warning: str | None = None  # e.g. "the hub could not be asked: the files on disk were used as they are"
    pull_id: str | None = None  # the queen's fleet pull this download is part of

    @property
    def whole_model(self) -> bool:
        return self.files_total is not None

    @property
    def percent(self) -> float | None:
        if not self.total_bytes:
            return None if self.total_bytes is None else 100.0
        return round(min(100.0, self.bytes_downloaded * 100.0 / self.total_bytes), 2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "download_id": self.download_id,
            "model_ref": self.model_ref,
            "status": self.status.value,
            "bytes_downloaded": self.bytes_downloaded,
            "total_bytes": self.total_bytes,
            "speed_bps": self.speed_bps,
            "eta_secs": self.eta_secs,
            "percent": self.percent,
            "started_at": rfc3339(self.started_at),
            "completed_at": rfc3339(self.completed_at),
            "error": self.error,
            "error_code": self.error_code,
            "path": self.path,
            "sha256": self.sha256,
            "queue_position": self.queue_position,
            "commit": self.commit,
            "waiting_until": rfc3339(self.waiting_until),
            "waiting_reason": self.waiting_reason,
            **self._model_fields(),
            **({"warning": self.warning} if self.warning else {}),
            **({"pull_id": self.pull_id} if self.pull_id else {}),
        }

    def _model_fields(self) -> dict[str, Any]:
        if self.files_total is None:
            return {}
        return {"files_total": self.files_total, "files_done": self.files_done or 0}


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One SSE event of one download: its id (strictly increasing per download), type and payload."""

    id: int
    event: EventType
    data: dict[str, Any]
    # its SSE frame, encoded once for every reader (shared.sse.frame): (the fields added, the bytes)
    encoded: tuple[tuple[tuple[str, Any], ...], bytes] | None = field(default=None, compare=False, repr=False)

    @property
    def download_id(self) -> str:
        return str(self.data["download_id"])

    @property
    def key(self) -> str:
        """What a reader keeps one pending event of: the download, or for a model event the event itself
        (each is news: none replaces another)."""
        return f"model:{self.id}" if self.event is EventType.MODEL else self.download_id

    @property
    def is_terminal(self) -> bool:
        return self.event in TERMINAL_EVENTS

    @classmethod
    def from_state(cls, event_id: int, state: DownloadState, duration_secs: float | None = None) -> ProgressEvent:
        """The event that describes `state` now: progress while running, else its terminal event."""
        base: dict[str, Any] = {
            "download_id": state.download_id,
            "bytes": state.bytes_downloaded,
            "total": state.total_bytes,
            "emitted_at": rfc3339(_utcnow()),  # when the tracker made the event: end-to-end latency
        }
        if state.commit is not None:
            base["commit"] = state.commit
        base.update(state._model_fields())
        if state.status is DownloadStatus.COMPLETE:
            base.update(duration_secs=duration_secs, sha256=state.sha256, path=state.path)
            return cls(event_id, EventType.COMPLETE, base)
        if state.status is DownloadStatus.FAILED:
            base.update(error=state.error, code=state.error_code)
            return cls(event_id, EventType.ERROR, base)
        if state.status is DownloadStatus.CANCELLED:
            return cls(event_id, EventType.CANCELLED, base)
        base.update(
            speed_bps=state.speed_bps,
            eta_secs=state.eta_secs,
            percent=state.percent,
            status=state.status.value,
            model_ref=state.model_ref,
        )
        if state.queue_position is not None:
            base["queue_position"] = state.queue_position
        if state.waiting_until is not None:
            base.update(waiting_until=rfc3339(state.waiting_until), waiting_reason=state.waiting_reason)
        return cls(event_id, EventType.PROGRESS, base)
