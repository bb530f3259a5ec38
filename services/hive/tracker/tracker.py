"""DownloadTracker: the state of every download on this hive and the events its streams carry.

Pure Python (asyncio only for waking subscribers). Every method is meant to be called on the
event-loop thread. The rules it keeps (README, "Progress events (SSE)"):

- statuses move forward only; nothing leaves a terminal status (statuses.py);
- bytes never go backwards; speed is an EMA (alpha 0.3) of speed measured over whole intervals;
- one progress event per download per `progress_interval` while bytes move, one on every status
  change and when a wait (`waiting_until`) begins or ends, exactly one terminal event; per-download
  event ids strictly increase;
- bytes that came in after the last event are sent when no more come for half an interval, once the
  last event is an interval old (`flush_due`): the latest event is the state, about one and a half
  intervals behind at most, so a reader that joins from it (the queen serving its clients from this
  hive's aggregated stream) starts from the current state as a reader of the hive would;
- each subscriber holds at most one pending event per download (latest wins), and a terminal event
  is never replaced, so a slow reader never blocks `update_progress` nor grows memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime

from services.hive.tracker.entry import Entry
from services.hive.tracker.listeners import EventListener, Listeners
from services.hive.tracker.speed import SpeedMeter
from services.hive.tracker.statuses import InvalidTransition, UnknownDownload, check_transition
from services.hive.tracker.subscribers import Readers, StreamDecision, Subscriber, events_until_terminal
from shared.models import DownloadState, DownloadStatus, ErrorCode, ProgressEvent

__all__ = ["DownloadTracker", "InvalidTransition", "StreamDecision", "Subscriber", "UnknownDownload"]


class DownloadTracker:
    def __init__(
        self,
        progress_interval: float = 0.5,
        alpha: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.progress_interval = progress_interval
        self.alpha = alpha
        self._clock = clock
        self._entries: dict[str, Entry] = {}
        self._readers = Readers()
        self._listeners = Listeners()
        self._dirty: set[str] = set()  # downloads whose bytes moved since their last event

    # -- lifecycle -------------------------------------------------------------------------

    def start_download(
        self,
        download_id: str,
        model_ref: str,
        total_bytes: int | None = None,
        *,
        status: DownloadStatus = DownloadStatus.QUEUED,
        path: str | None = None,
        first_event_id: int = 1,
        pull_id: str | None = None,
    ) -> DownloadState:
        if download_id in self._entries:
            raise ValueError(f"download {download_id} is already tracked")
        state = DownloadState(
            download_id, model_ref, status=status, total_bytes=total_bytes, path=path, pull_id=pull_id
        )
        entry = Entry.new(state, self._clock(), first_event_id, SpeedMeter(self.alpha))
        self._entries[download_id] = entry
        self._emit(entry)
        return replace(state)

    def restore(self, state: DownloadState, next_event_id: int) -> None:
        """Re-create a download from history after a restart, ids continuing from `next_event_id`.

        A finished one comes back with its terminal event (id `next_event_id - 1`) and emits
        nothing; an unfinished one emits its current state with id `next_event_id`.
        """
        if state.download_id in self._entries:
            raise ValueError(f"download {state.download_id} is already tracked")
        entry = Entry.new(replace(state), self._clock(), next_event_id, SpeedMeter(self.alpha))
        self._entries[state.download_id] = entry
        if state.status.is_terminal:
            entry.restore_terminal_event()
        else:
            self._emit(entry)

    def set_status(self, download_id: str, status: DownloadStatus) -> None:
        """Move between running statuses; ending a download is complete/fail/cancel_download's job."""
        if status.is_terminal:
            raise InvalidTransition(f"{download_id}: use complete/fail/cancel_download to end a download")
        entry = self._entry(download_id)
        if entry.state.status is status:
            return
        self._transition(entry, status)
        if status is DownloadStatus.DOWNLOADING:
            entry.meter.reset(self._clock(), entry.state.bytes_downloaded)
            entry.state.queue_position = None
        elif status is DownloadStatus.STARTING:
            entry.state.queue_position = None
        self._emit(entry)

    def set_total(self, download_id: str, total_bytes: int | None) -> None:
        self._entry(download_id).note(total_bytes=total_bytes)

    def set_commit(self, download_id: str, commit: str) -> None:
        """The commit the hub named for the file."""
        self._entry(download_id).note(commit=commit)

    def set_path(self, download_id: str, path: str) -> None:
        """Where the download lands, once known (a hub download's, once its commit is pinned)."""
        self._entry(download_id).note(path=path)

    def set_files(self, download_id: str, total: int, done: int) -> None:
        """A whole model's file count and how many are in place."""
        self._entry(download_id).note(files_total=total, files_done=done)

    def set_warning(self, download_id: str, warning: str | None) -> None:
        self._entry(download_id).note(warning=warning)

    def set_cap(self, download_id: str, bps: int | None, reason: str | None) -> None:  # (its next event says)
        self._entry(download_id).note(capped_bps=bps, cap_reason=reason)

    def set_queue_position(self, download_id: str, position: int | None) -> None:
        entry = self._entry(download_id)
        if entry.state.queue_position != position and entry.state.status is DownloadStatus.QUEUED:
            entry.state.queue_position = position
            self._emit(entry)

    def set_waiting(self, download_id: str, until: datetime | None, reason: str | None = None) -> None:
        """A running download waits till `until` (and why), or no more (None); emits on a change."""
        entry = self._entry(download_id)
        state = entry.state
        reason = reason if until is not None else None
        if state.status.is_terminal or (state.waiting_until, state.waiting_reason) == (until, reason):
            return
        state.waiting_until, state.waiting_reason = until, reason
        self._emit(entry)

    def update_progress(self, download_id: str, bytes_downloaded: int) -> None:
        """Hot path: O(1); emits at most one event per progress interval."""
        entry = self._entries.get(download_id)
        if entry is None:
            raise UnknownDownload(download_id)
        state = entry.state
        if bytes_downloaded <= state.bytes_downloaded or state.status.is_terminal:
            return
        state.bytes_downloaded = bytes_downloaded
        now = self._clock()
        if now - entry.last_emit >= self.progress_interval:
            entry.measure(now)
            self._emit(entry, now)
        else:
            entry.dirty, entry.last_update = True, now
            self._dirty.add(download_id)

    def flush_due(self) -> int:
        """The trailing edge of the progress interval: an event for every download whose bytes moved
        since its last event, once that is an interval old and no bytes came for half an interval
        (bytes still coming send it themselves, fresher). Returns how many were sent."""
        if not self._dirty:
            return 0
        now = self._clock()
        sent = 0
        for download_id in list(self._dirty):
            entry = self._entries.get(download_id)
            if entry is None or not entry.dirty or entry.state.status.is_terminal:
                self._dirty.discard(download_id)
            elif (
                now - entry.last_emit >= self.progress_interval
                and now - entry.last_update >= self.progress_interval / 2
            ):
                entry.measure(now)
                self._emit(entry, now)
                sent += 1
        return sent

    async def flush_forever(self) -> None:
        """Run `flush_due` every half interval (the hive's lifespan runs this)."""
        while True:
            await asyncio.sleep(max(self.progress_interval / 2, 0.01))
            self.flush_due()

    def complete_download(self, download_id: str, sha256: str | None = None, path: str | None = None) -> None:
        entry = self._entry(download_id)
        self._transition(entry, DownloadStatus.COMPLETE)
        state = entry.state
        if state.total_bytes is not None:
            state.bytes_downloaded = max(state.bytes_downloaded, state.total_bytes)
        else:
            state.total_bytes = state.bytes_downloaded
        state.sha256 = sha256 or state.sha256
        state.path = path or state.path
        self._finish(entry)

    def fail_download(self, download_id: str, error: str, code: str = ErrorCode.DOWNLOAD_FAILED) -> None:
        entry = self._entry(download_id)
        self._transition(entry, DownloadStatus.FAILED)
        entry.state.error, entry.state.error_code = error, str(code)
        self._finish(entry)

    def cancel_download(self, download_id: str) -> None:
        entry = self._entry(download_id)
        self._transition(entry, DownloadStatus.CANCELLED)
        self._finish(entry)

    def forget(self, download_id: str) -> None:
        """Drop a finished download from memory (history pruning)."""
        entry = self._entry(download_id)
        if not entry.state.status.is_terminal:
            raise InvalidTransition(f"download {download_id} is still {entry.state.status.value}")
        del self._entries[download_id]

    # -- queries ---------------------------------------------------------------------------

    def get_download(self, download_id: str) -> DownloadState | None:
        entry = self._entries.get(download_id)
        return replace(entry.state) if entry else None

    def list_active(self) -> list[DownloadState]:
        return [replace(e.state) for e in self._entries.values() if not e.state.status.is_terminal]

    def list_all(self) -> list[DownloadState]:
        """Every tracked download, newest first."""
        return [replace(e.state) for e in reversed(self._entries.values())]

    def last_event_id(self, download_id: str) -> int:
        entry = self._entry(download_id)
        return entry.next_id - 1

    def subscriber_count(self) -> int:
        return self._readers.count()

    def add_listener(self, listener: EventListener) -> None:
        """Called with (state, event) after every emitted event, e.g. to persist or count."""
        self._listeners.add(listener)

    # -- streaming -------------------------------------------------------------------------

    def stream_decision(self, download_id: str, last_event_id: int | None) -> str:
        entry = self._entries.get(download_id)
        if entry is None:
            return StreamDecision.NOT_FOUND
        return StreamDecision.ENDED if entry.ended_by(last_event_id) else StreamDecision.STREAM

    def subscribe(self, download_id: str | None, last_event_id: int | None = None) -> Subscriber:
        """A subscriber primed with the current state (one download, or every active one)."""
        if download_id is None:
            live = [e for e in self._entries.values() if not e.state.status.is_terminal]
            return self._readers.of_all([self._current_event(e) for e in live])
        entry = self._entry(download_id)
        ended = entry.state.status.is_terminal
        return self._readers.of_one(download_id, last_event_id, self._current_event(entry), ended)

    def unsubscribe(self, sub: Subscriber) -> None:
        self._readers.discard(sub)

    def broadcast(self, event: ProgressEvent) -> None:
        """An event of no download (the model store's) for the readers of every download only."""
        self._readers.offer_all(event)

    async def stream_progress(self, download_id: str, last_event_id: int | None = None) -> AsyncIterator[ProgressEvent]:
        """Events of one download, current state first, ending after its terminal event."""
        sub = self.subscribe(download_id, last_event_id)
        try:
            async for event in events_until_terminal(sub):
                yield event
        finally:
            self.unsubscribe(sub)

    # -- internals -------------------------------------------------------------------------

    def _entry(self, download_id: str) -> Entry:
        try:
            return self._entries[download_id]
        except KeyError:
            raise UnknownDownload(download_id) from None

    def _transition(self, entry: Entry, status: DownloadStatus) -> None:
        check_transition(entry.state.download_id, entry.state.status, status)
        entry.state.status = status

    def _current_event(self, entry: Entry) -> ProgressEvent:
        if entry.dirty or entry.last_event is None:
            self._emit(entry)
        assert entry.last_event is not None
        return entry.last_event

    def _finish(self, entry: Entry) -> None:
        entry.finished()
        self._emit(entry)
        self._readers.end(entry.state.download_id)

    def _emit(self, entry: Entry, now: float | None = None) -> None:
        event = entry.next_event(self._clock() if now is None else now)
        self._dirty.discard(entry.state.download_id)
        self._readers.offer(entry.state.download_id, event)
        self._listeners.tell(entry.state, event)
