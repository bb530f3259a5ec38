"""Who else hears of each download event (the history mirror, the model store's watch, counters):
called in order after every event, each on its own, so one that fails (a full disk, say) is logged
and never stops the others, the stream or the download."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from shared.models import DownloadState, ProgressEvent

__all__ = ["EventListener", "Listeners"]

log = structlog.get_logger(__name__)

EventListener = Callable[[DownloadState, ProgressEvent], None]


class Listeners:
    def __init__(self) -> None:
        self._all: list[EventListener] = []

    def add(self, listener: EventListener) -> None:
        self._all.append(listener)

    def tell(self, state: DownloadState, event: ProgressEvent) -> None:
        for listener in self._all:
            try:
                listener(state, event)
            except Exception:
                log.exception("tracker_listener_failed", download_id=state.download_id, kind=event.event.value)
