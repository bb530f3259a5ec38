"""HIVE_BANDWIDTH_SCHEDULE: time windows of the day with their own cap (README, "Bandwidth").

`22:00-06:00=0,06:00-22:00=50MB`: comma-separated `HH:MM-HH:MM=RATE` windows, each from its start
(inclusive) to its end (exclusive) in the schedule's zone; a window whose end is before its start
wraps midnight, `24:00` is the end of the day. Windows may not overlap; hours no window covers have
no cap of their own (HIVE_BANDWIDTH_LIMIT applies). A rate is bytes/s: `0` (no cap), `1000`,
`50kB`/`50MB`/`1GB` (powers of 1000; `K`/`M`/`G` alone mean the same), `50KiB`/`50MiB`/`1GiB`
(powers of 1024), an optional `/s`. Pure: no clock is read here, the caller gives the time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["DAY", "InForce", "Schedule", "ScheduleError", "Window", "parse_rate", "parse_schedule"]

DAY = 24 * 3600
MAX_RATE = 10**12  # as shared.limits.MAX_BPS

_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*(|k|m|g|ki|mi|gi)b?(?:/s)?", re.IGNORECASE)
_POWERS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "ki": 2**10, "mi": 2**20, "gi": 2**30}
_TIME = re.compile(r"(\d{1,2}):(\d{2})")


class ScheduleError(ValueError):
    """A schedule or rate that cannot be read; the message says what and where."""


def parse_rate(text: str) -> int:
    """Bytes/s from `0`, `1500`, `50MB`, `50MiB/s`, `2.5G` (see the module's docstring)."""
    m = _RATE.fullmatch(text.strip())
    if m is None:
        raise ScheduleError(f"bad rate {text.strip()[:40]!r}: bytes/s such as 0, 1000, 50MB or 50MiB")
    rate = round(float(m[1]) * _POWERS[m[2].lower()])
    if rate > MAX_RATE:
        raise ScheduleError(f"rate {text.strip()!r} is over {MAX_RATE} bytes/s")
    return rate


def _seconds(text: str) -> int:
    m = _TIME.fullmatch(text.strip())
    if m is None or int(m[1]) > 24 or int(m[2]) > 59 or (int(m[1]) == 24 and int(m[2]) != 0):
        raise ScheduleError(f"bad time {text.strip()[:20]!r}: HH:MM from 00:00 to 24:00")
    return int(m[1]) * 3600 + int(m[2]) * 60


def _clock(secs: int) -> str:
    return f"{secs // 3600:02d}:{secs % 3600 // 60:02d}"


@dataclass(frozen=True, slots=True)
class Window:
    start: int  # seconds after midnight, [0, DAY)
    end: int  # (0, DAY]; below start: the window wraps midnight
    rate: int  # bytes/s, 0 = no cap

    @property
    def wraps(self) -> bool:
        return self.end <= self.start

    def covers(self, secs: float) -> bool:
        """Whether `secs` after midnight lies in the window."""
        if self.wraps:
            return secs >= self.start or secs < self.end
        return self.start <= secs < self.end

    def spans(self) -> list[tuple[int, int]]:
        """The window as [start, end) spans within one day."""
        return [(self.start, DAY), (0, self.end)] if self.wraps else [(self.start, self.end)]

    @property
    def text(self) -> str:
        return f"{_clock(self.start)}-{_clock(self.end)}"


@dataclass(frozen=True, slots=True)
class InForce:
    """What a schedule says at one moment: the window in force (None between windows), its cap, and
    when that ends (the window's end, or the next window's start; None if nothing ever changes)."""

    window: Window | None
    until: datetime | None

    @property
    def rate(self) -> int:
        return 0 if self.window is None else self.window.rate


@dataclass(frozen=True, slots=True)
class Schedule:
    windows: tuple[Window, ...]

    @property
    def text(self) -> str:
        return ",".join(f"{w.text}={w.rate}" for w in self.windows)

    def at(self, now: datetime) -> InForce:
        """The window in force at `now` (an aware datetime in the schedule's zone) and until when."""
        secs = now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6
        window = next((w for w in self.windows if w.covers(secs)), None)
        boundaries = {w.start for w in self.windows} | {w.end % DAY for w in self.windows}
        ahead = [(b - secs) % DAY or DAY for b in boundaries]
        # the next boundary where what is in force changes (a boundary between two abutting windows of
        # the same rate still ends the window: `window` and `until` describe the one in force)
        for step in sorted(ahead):
            later = (secs + step) % DAY
            if next((w for w in self.windows if w.covers(later)), None) != window:
                return InForce(window, now + timedelta(seconds=step))
        return InForce(window, None)


def parse_schedule(text: str) -> Schedule:
    """`HH:MM-HH:MM=RATE,...` -> Schedule; ScheduleError names the bad part (empty text: no windows)."""
    windows: list[Window] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        span, eq, rate = part.partition("=")
        first, dash, last = span.partition("-")
        if not eq or not dash:
            raise ScheduleError(f"bad window {part[:40]!r}: HH:MM-HH:MM=RATE, e.g. 22:00-06:00=0")
        start, end = _seconds(first), _seconds(last)
        if start == DAY:
            raise ScheduleError(f"window {part[:40]!r} starts at 24:00: write 00:00")
        if start == end:
            raise ScheduleError(f"window {part[:40]!r} is empty: use 00:00-24:00 for the whole day")
        windows.append(Window(start, end, parse_rate(rate)))
    for i, a in enumerate(windows):
        for b in windows[i + 1 :]:
            if any(s1 < e2 and s2 < e1 for s1, e1 in a.spans() for s2, e2 in b.spans()):
                raise ScheduleError(f"windows {a.text} and {b.text} overlap")
    return Schedule(tuple(sorted(windows, key=lambda w: w.start)))
