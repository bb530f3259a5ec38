"""How rbee-keeper shows a download while it follows the stream: a rich bar, plain lines or JSON lines.

The renderers only decide *when* and *where* to print; what they print comes from `services/keeper/format.py`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TextIO, TypeVar

from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, ProgressColumn, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from services.keeper.events import StreamEvent
from services.keeper.format import (
    Snapshot,
    progress_line,
    stats_text,
)
from services.keeper.pull_view import PullView, pull_line, pull_stats_text

__all__ = [
    "BarRenderer",
    "JsonRenderer",
    "PlainPullRenderer",
    "PlainRenderer",
    "PullBarRenderer",
    "Renderer",
    "json_line",
]

T_contra = TypeVar("T_contra", contravariant=True)


class Renderer(Protocol[T_contra]):
    """Shows what the keeper follows (one download's Snapshot, or a pull's PullView) while it reads the stream."""

    def start(self, snap: T_contra) -> None: ...

    def update(self, event: StreamEvent, snap: T_contra) -> None:
        """Called after `snap` has absorbed `event`."""

    def note(self, message: str) -> None:
        """A side remark such as `reconnecting...`."""

    def stop(self) -> None: ...


_MIN_BAR = 16  # cells: below this the stats move to a line of their own


class _Progress(Progress):
    """Name, bar and stats on one line; on a terminal too narrow for all three (a whole model's stats are
    long, and 80 columns are common) the stats go on a line of their own below the name and bar, whole."""

    def __init__(self, *columns: ProgressColumn, console: Console, **options: Any) -> None:
        self.terminal = console  # (rich asks for the renderables before `self.console` exists)
        super().__init__(*columns, console=console, **options)

    def get_renderables(self) -> Iterable[RenderableType]:
        tasks = [t for t in self.tasks if t.visible]
        width = self.terminal.width
        if all(cell_len(t.description) + cell_len(t.fields["stats"]) + 2 + _MIN_BAR <= width for t in tasks):
            yield self.make_tasks_table(tasks)
            return
        shown = [c for c in self.columns[:2] if isinstance(c, ProgressColumn)]
        for task in tasks:  # each bar with its stats below it (names of one width keep the bars aligned)
            table = Table.grid(*(c.get_table_column().copy() for c in shown), padding=(0, 1), expand=self.expand)
            table.add_row(*(column(task) for column in shown))
            yield table
            yield Text(task.fields["stats"], no_wrap=True, overflow="ellipsis")


def _bars(console: Console) -> _Progress:
    return _Progress(
        TextColumn("[bold]{task.description}"),
        # explicit colours: rich's default "finished" green degrades to grey on 16-colour terminals
        BarColumn(bar_width=None, complete_style="magenta", finished_style="green", pulse_style="cyan"),
        TextColumn("{task.fields[stats]}"),
        console=console,
        refresh_per_second=8,
        expand=True,
    )


def _show(progress: _Progress, task: TaskID, snap: Snapshot | PullView, stats: str) -> None:
    """A bar at the snapshot's bytes; indeterminate while its total is unknown, full once complete."""
    total = snap.bytes if snap.total is None and snap.status == "complete" else snap.total
    progress.update(task, total=total, completed=snap.bytes, stats=stats)


class _LiveBars:
    """Live rich bars on a console; notes print above them."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = _bars(console)

    def note(self, message: str) -> None:
        self.progress.console.print(f"[yellow]{message}[/yellow]", highlight=False)

    def stop(self) -> None:
        self.progress.stop()


class BarRenderer(_LiveBars):
    """A live rich progress bar; indeterminate (pulsing) while the total is unknown."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self.task: TaskID | None = None

    def start(self, snap: Snapshot) -> None:
        self.progress.start()
        self.task = self.progress.add_task(snap.name, total=snap.total, completed=snap.bytes, stats=stats_text(snap))

    def update(self, event: StreamEvent, snap: Snapshot) -> None:
        if self.task is None:
            return
        _show(self.progress, self.task, snap, stats_text(snap))
        if event.is_terminal:
            self.progress.refresh()


class PullBarRenderer(_LiveBars):
    """A fleet pull: a live bar per hive, named after it, and one for the pull's total below them."""

    TOTAL = "total"

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self.tasks: dict[str, TaskID] = {}

    def start(self, snap: PullView) -> None:
        width = max(len(self.TOTAL), *(len(h) for h in snap.hives))
        for key in (*snap.hives, self.TOTAL):
            self.tasks[key] = self.progress.add_task(key.ljust(width), total=None, stats="")
        self._show(snap)
        self.progress.start()

    def update(self, event: StreamEvent, snap: PullView) -> None:
        if self.TOTAL not in self.tasks:
            return
        self._show(snap)
        if event.is_terminal:
            self.progress.refresh()

    def _show(self, view: PullView) -> None:
        for hive_id, hive in view.hives.items():
            if hive_id in self.tasks:  # (a hive the start did not know of counts in the total only)
                _show(self.progress, self.tasks[hive_id], hive, stats_text(hive, with_hive=False))
        _show(self.progress, self.tasks[self.TOTAL], view, pull_stats_text(view))


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


class PlainPullRenderer:
    """A fleet pull for logs: at most once per `interval` a line for every hive that moved and one for the
    total; a hive's status change at once."""

    def __init__(self, out: TextIO, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.interval = interval
        self.clock = clock
        self._round_at: float | None = None
        self._printed: dict[str, str] = {}  # hive id (or "") -> its last line
        self._status: dict[str, str] = {}

    def _print(self, key: str, line: str) -> None:
        if self._printed.get(key) != line:
            self.out.write(line + "\n")
            self._printed[key] = line

    def _round(self, view: PullView) -> None:
        for hive_id, hive in view.hives.items():
            self._print(hive_id, progress_line(hive))
            self._status[hive_id] = hive.status
        self._print("", pull_line(view))
        self.out.flush()
        self._round_at = self.clock()

    def start(self, snap: PullView) -> None:
        self._round(snap)

    def update(self, event: StreamEvent, snap: PullView) -> None:
        if event.is_terminal:
            return  # the caller prints how the pull ended
        if self._round_at is None or self.clock() - self._round_at >= self.interval:
            self._round(snap)
            return
        hive_id = event.data.get("hive_id")
        if not isinstance(hive_id, str) or hive_id not in snap.hives:
            return
        hive = snap.hives[hive_id]
        if hive.status != self._status.get(hive_id):
            self._status[hive_id] = hive.status
            self._print(hive_id, progress_line(hive))
            self.out.flush()

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

    def start(self, snap: object) -> None:
        pass

    def update(self, event: StreamEvent, snap: object) -> None:
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
