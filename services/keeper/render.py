"""How rbee-keeper shows a download while it follows the stream: a rich bar, plain lines or JSON lines.

The renderers only decide *when* and *where* to print; what they print comes from `services/keeper/format.py`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from services.keeper.client import StreamEvent
from services.keeper.format import (
    Snapshot,
    progress_line,
    stats_text,
)

__all__ = ["BarRenderer", "JsonRenderer", "PlainRenderer", "Renderer", "json_line"]


class Renderer(Protocol):
    """Shows one download's progress while the keeper follows its stream."""

    def start(self, snap: Snapshot) -> None: ...

    def update(self, event: StreamEvent, snap: Snapshot) -> None:
        """Called after `snap` has absorbed `event`."""

    def note(self, message: str) -> None:
        """A side remark such as `reconnecting...`."""

    def stop(self) -> None: ...


class BarRenderer:
    """A live rich progress bar; indeterminate (pulsing) while the total is unknown."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            # explicit colours: rich's default "finished" green degrades to grey on 16-colour terminals
            BarColumn(bar_width=None, complete_style="magenta", finished_style="green", pulse_style="cyan"),
            TextColumn("{task.fields[stats]}"),
            console=console,
            refresh_per_second=8,
            expand=True,
        )
        self.task: TaskID | None = None

    def start(self, snap: Snapshot) -> None:
        self.progress.start()
        self.task = self.progress.add_task(snap.name, total=snap.total, completed=snap.bytes, stats=stats_text(snap))

    def update(self, event: StreamEvent, snap: Snapshot) -> None:
        if self.task is None:
            return
        completed = snap.bytes
        if snap.status == "complete" and snap.total is None:
            self.progress.update(self.task, total=snap.bytes)
        self.progress.update(self.task, total=snap.total, completed=completed, stats=stats_text(snap))
        if event.is_terminal:
            self.progress.refresh()

    def note(self, message: str) -> None:
        self.progress.console.print(f"[yellow]{message}[/yellow]", highlight=False)

    def stop(self) -> None:
        self.progress.stop()


class PlainRenderer:
    """One line per update for logs: at most one per `interval` seconds, plus every status change."""

    def __init__(self, out: TextIO, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.interval = interval
        self.clock = clock
        self._last_line_at: float | None = None
        self._last_status: str | None = None

    def _print(self, snap: Snapshot) -> None:
        self.out.write(progress_line(snap) + "\n")
        self.out.flush()
        self._last_line_at = self.clock()
        self._last_status = snap.status

    def start(self, snap: Snapshot) -> None:
        self._print(snap)

    def update(self, event: StreamEvent, snap: Snapshot) -> None:
        if event.is_terminal:
            return  # the caller prints the terminal message
        due = self._last_line_at is None or self.clock() - self._last_line_at >= self.interval
        if due or snap.status != self._last_status:
            self._print(snap)

    def note(self, message: str) -> None:
        self.out.write(message + "\n")
        self.out.flush()

    def stop(self) -> None:
        pass


class JsonRenderer:
    """Each event as one JSON line `{"id": 7, "event": "progress", "data": <the payload exactly as received>}`."""

    def __init__(self, out: TextIO, err: TextIO | None = None) -> None:
        self.out = out
        self.err = err  # side remarks go here, never into the JSON lines

    def start(self, snap: Snapshot) -> None:
        pass

    def update(self, event: StreamEvent, snap: Snapshot) -> None:
        self.out.write(json_line(event) + "\n")
        self.out.flush()

    def note(self, message: str) -> None:
        if self.err is not None:
            self.err.write(message + "\n")
            self.err.flush()

    def stop(self) -> None:
        pass


def json_line(event: StreamEvent) -> str:
    """The JSON-lines form of an event; `data` is spliced in verbatim, so the payload is byte-for-byte the queen's."""
    raw = event.raw if "\n" not in event.raw else json.dumps(event.data, separators=(",", ":"))
    return f'{{"id":{json.dumps(event.id)},"event":{json.dumps(event.event)},"data":{raw}}}'
