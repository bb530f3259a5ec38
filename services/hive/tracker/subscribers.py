"""Who reads the tracker's events: one download's subscriber, or one of every download's; the
registry of them (`Readers`) that the tracker offers each event to, and how one download's stream ends."""

from __future__ import annotations

from collections.abc import AsyncIterator

from shared.mailbox import Mailbox
from shared.models import ProgressEvent

__all__ = ["Readers", "StreamDecision", "Subscriber", "events_until_terminal"]


class Subscriber(Mailbox):
    """A reader of one download (download_id) or of every download on the hive (None)."""

    def __init__(self, download_id: str | None, after_id: int | None = None) -> None:
        super().__init__(maxsize=None, after_id=after_id)
        self.download_id = download_id


class StreamDecision:
    NOT_FOUND = "not_found"
    ENDED = "ended"  # Last-Event-ID at or past the terminal event: 204
    STREAM = "stream"


class Readers:
    """The subscribers of every download and of each one."""

    def __init__(self) -> None:
        self._of_all: set[Subscriber] = set()
        self._of: dict[str, set[Subscriber]] = {}

    def of_all(self, current: list[ProgressEvent]) -> Subscriber:
        """A new reader of every download, primed with each running one's current event."""
        sub = Subscriber(None)
        for event in current:
            sub.offer(event)
        self._of_all.add(sub)
        return sub

    def of_one(self, download_id: str, after_id: int | None, current: ProgressEvent, ended: bool) -> Subscriber:
        """A new reader of one download, primed with its current event (closed after it if it has ended)."""
        sub = Subscriber(download_id, after_id)
        sub.offer(current)
        if ended:
            sub.close()
        else:
            self._of.setdefault(download_id, set()).add(sub)
        return sub

    def discard(self, sub: Subscriber) -> None:
        sub.close()
        if sub.download_id is None:
            self._of_all.discard(sub)
        elif (subs := self._of.get(sub.download_id)) is not None:
            subs.discard(sub)
            if not subs:
                del self._of[sub.download_id]

    def offer(self, download_id: str, event: ProgressEvent) -> None:
        for sub in self._of.get(download_id, ()):
            sub.offer(event)
        for sub in self._of_all:
            sub.offer(event)

    def offer_all(self, event: ProgressEvent) -> None:
        """An event that is no download's (a model event): for the readers of every download only."""
        for sub in self._of_all:
            sub.offer(event)

    def end(self, download_id: str) -> None:
        """The download has ended: its own subscribers are closed (after its terminal event)."""
        for sub in self._of.pop(download_id, ()):
            sub.close()

    def count(self) -> int:
        return len(self._of_all) + sum(len(subs) for subs in self._of.values())


async def events_until_terminal(sub: Subscriber) -> AsyncIterator[ProgressEvent]:
    """A subscriber's events, ending after the terminal one (or when it is closed)."""
    while True:
        batch = await sub.next_batch()
        if not batch:
            return
        for event in batch:
            yield event
            if event.is_terminal:
                return
