"""One download as the tracker holds it: its state, its speed meter and its last event. Pure: the
clock's readings come in as arguments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from services.hive.tracker.speed import SpeedMeter, eta_secs
from shared.models import DownloadState, DownloadStatus, ProgressEvent

__all__ = ["Entry"]


@dataclass(slots=True)
class Entry:
    state: DownloadState
    started_mono: float
    next_id: int
    meter: SpeedMeter
    last_event: ProgressEvent | None = None
    last_emit: float = 0.0
    last_update: float = 0.0  # when bytes last moved without an event
    dirty: bool = False  # the state changed since the last event

    @classmethod
    def new(cls, state: DownloadState, now: float, next_id: int, meter: SpeedMeter) -> Entry:
        return cls(state, now, next_id, meter)

    def ended_by(self, last_event_id: int | None) -> bool:
        """A reader that has seen `last_event_id` has seen this download's terminal event."""
        last = self.last_event
        return last_event_id is not None and last is not None and last.is_terminal and last_event_id >= last.id

    def note(self, **fields: object) -> None:
        """Set fields the next event carries, unless the download has ended or nothing changes."""
        state = self.state
        if state.status.is_terminal or all(getattr(state, k) == v for k, v in fields.items()):
            return
        for name, value in fields.items():
            setattr(state, name, value)
        self.dirty = True

    def measure(self, now: float) -> None:
        """Speed (the meter's EMA) and ETA as of `now`."""
        state = self.state
        speed = self.meter.sample(now, state.bytes_downloaded)
        state.speed_bps = round(speed)
        remaining = None if state.total_bytes is None else state.total_bytes - state.bytes_downloaded
        state.eta_secs = eta_secs(remaining, speed)

    def finished(self) -> None:
        """The download has ended: nothing moves or waits any more."""
        state = self.state
        state.completed_at = datetime.now(UTC)
        state.speed_bps, state.eta_secs, state.queue_position = 0, None, None
        state.waiting_until = state.waiting_reason = None

    def next_event(self, now: float) -> ProgressEvent:
        """The event of the state now, with the next id."""
        complete = self.state.status is DownloadStatus.COMPLETE
        duration = round(now - self.started_mono, 3) if complete else None
        event = ProgressEvent.from_state(self.next_id, self.state, duration)
        self.next_id += 1
        self.last_event, self.last_emit, self.dirty = event, now, False
        return event

    def restore_terminal_event(self) -> None:
        """An ended download restored from history: its terminal event, with the id it had."""
        state, duration = self.state, None
        if state.completed_at is not None and state.status is DownloadStatus.COMPLETE:
            duration = round((state.completed_at - state.started_at).total_seconds(), 3)
        self.last_event = ProgressEvent.from_state(self.next_id - 1, state, duration)
