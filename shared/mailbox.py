"""Mailbox: one SSE reader's bounded queue of events. Pure Python (asyncio only to wake the reader).

The hive's tracker and the queen's relay offer every event to every reader without waiting, so a
slow reader never slows the others, the download or the upstream. Per download at most one event
waits (latest wins, never an older id), a terminal event is never replaced (a `model` event is news
of its own: none replaces another), and at most `maxsize` events may wait at once (None: no limit
beyond the number of downloads; `model` events at most MAX_MODEL_EVENTS): a reader that falls
further behind than that is closed (it reconnects and gets the current state) instead of growing
memory. So a connected reader never loses a terminal event.
"""

from __future__ import annotations

import asyncio

from shared.models import EventType, ProgressEvent

__all__ = ["MAX_MODEL_EVENTS", "Mailbox"]

MAX_MODEL_EVENTS = 1024  # `model` events waiting for one reader (each is news: they do not coalesce)


class Mailbox:
    def __init__(self, maxsize: int | None = 1, after_id: int | None = None) -> None:
        self.maxsize = maxsize
        self.after_id = after_id  # a per-download client's Last-Event-ID: nothing at or below it
        self.closed = False
        self.overflowed = False
        self._pending: dict[str, ProgressEvent] = {}
        self._models = 0  # how many of them are `model` events
        self._wake = asyncio.Event()

    def offer(self, event: ProgressEvent) -> bool:
        """Queue `event` without waiting; False when the client is (now) closed."""
        if self.closed:
            return False
        if self.after_id is not None and event.id <= self.after_id:
            return True
        key = event.key
        current = self._pending.get(key)
        if current is not None:
            if current.is_terminal or event.id <= current.id:
                return True
        elif (self.maxsize is not None and len(self._pending) >= self.maxsize) or (
            event.event is EventType.MODEL and self._models >= MAX_MODEL_EVENTS
        ):
            self.overflowed = True
            self.close()
            return False
        elif event.event is EventType.MODEL:
            self._models += 1
        self._pending[key] = event
        self._wake.set()
        return True

    def close(self) -> None:
        """No more events will come; the reader still gets what is pending, then an empty batch."""
        self.closed = True
        self._wake.set()

    def pending(self) -> int:
        return len(self._pending)

    async def next_batch(self) -> list[ProgressEvent]:
        """Wait for and take every pending event; an empty list means closed and drained."""
        while not self._pending:
            if self.closed:
                return []
            self._wake.clear()
            await self._wake.wait()
        batch = list(self._pending.values())
        self._pending.clear()
        self._models = 0
        return batch
