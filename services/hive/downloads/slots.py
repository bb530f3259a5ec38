"""SlotQueue: at most `size` holders at a time; the rest wait their turn in arrival order.

Each waiter is told its queue position through `on_position` whenever the queue moves; a
position counts only those that will really wait for a slot (None for one that will not).
Nothing here knows what a slot is for: the manager holds one per running transfer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["SlotQueue"]


class SlotQueue:
    def __init__(self, size: int, on_position: Callable[[str, int | None], None]) -> None:
        self.size = size
        self._on_position = on_position
        self._waiting: list[str] = []  # in arrival order
        self._active = 0
        self._changed = asyncio.Condition()

    @property
    def active(self) -> int:
        return self._active

    @property
    def waiting(self) -> list[str]:
        return list(self._waiting)

    def join(self, key: str) -> None:
        """Take a place at the end of the queue."""
        self._waiting.append(key)
        self._publish()

    async def acquire(self, key: str) -> None:
        """Wait until `key` is first in line and a slot is free, then hold it."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._active < self.size and self._waiting[0] == key)
            self._waiting.pop(0)
            self._active += 1
            self._changed.notify_all()
        self._publish()

    async def leave(self, key: str, held: bool) -> None:
        """Give back a held slot, or a place in the queue, and let the next in line re-check."""
        was_waiting = key in self._waiting
        if was_waiting:
            self._waiting.remove(key)
            self._publish()
        if held or was_waiting:
            async with self._changed:
                if held:
                    self._active -= 1
                self._changed.notify_all()

    def _publish(self) -> None:
        free = max(0, self.size - self._active)
        for index, key in enumerate(self._waiting):
            position = index + 1 - free
            self._on_position(key, position if position > 0 else None)
