"""The download state machine's rule: statuses move forward only, and nothing leaves a terminal one. Pure."""

from __future__ import annotations

from shared.models import DownloadStatus

__all__ = ["InvalidTransition", "UnknownDownload", "check_transition"]

S = DownloadStatus
_ALLOWED: dict[DownloadStatus, frozenset[DownloadStatus]] = {
    S.QUEUED: frozenset({S.STARTING, S.DOWNLOADING, S.COMPLETE, S.FAILED, S.CANCELLED}),
    S.STARTING: frozenset({S.DOWNLOADING, S.COMPLETE, S.FAILED, S.CANCELLED}),
    S.DOWNLOADING: frozenset({S.COMPLETE, S.FAILED, S.CANCELLED}),
    S.COMPLETE: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}


class UnknownDownload(KeyError):
    pass


class InvalidTransition(ValueError):
    pass


def check_transition(download_id: str, current: DownloadStatus, status: DownloadStatus) -> None:
    """Raise InvalidTransition unless `current` may move to `status`."""
    if status not in _ALLOWED[current]:
        raise InvalidTransition(f"{download_id}: {current.value} -> {status.value}")
