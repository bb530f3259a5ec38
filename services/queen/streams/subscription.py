"""Subscription: one download's shared upstream as its clients see it. Pure: the relay drives it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from shared.mailbox import Mailbox
from shared.models import ProgressEvent

__all__ = ["Subscription"]


@dataclass(eq=False, slots=True)
class Subscription:
    download_id: str
    hive_id: str
    last_id: int = 0  # the last event id relayed (or the first client's Last-Event-ID)
    lost_at: float | None = None  # when the hive went away, unless an event came through since
    latest: ProgressEvent | None = None
    done: bool = False
    clients: set[Mailbox] = field(default_factory=set)
    task: asyncio.Task[None] | None = None

    def join(self, after: int | None) -> Mailbox | None:
        """A client queue primed with the latest event; None when `after` is at or past the terminal one."""
        latest = self.latest
        if after is not None and latest is not None and latest.is_terminal and after >= latest.id:
            return None
        queue = Mailbox(maxsize=1, after_id=after)
        if latest is not None:
            queue.offer(latest)
        if self.done:
            queue.close()
        else:
            self.clients.add(queue)
        return queue

    def publish(self, event: ProgressEvent) -> None:
        self.last_id, self.latest = event.id, event
        for queue in self.clients:
            queue.offer(event)

    def finish(self) -> None:
        self.done = True
        for queue in self.clients:
            queue.close()
        self.clients.clear()
