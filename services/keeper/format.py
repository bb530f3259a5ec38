"""What rbee-keeper prints, as text: pure formatting of sizes, speeds, times, names and tables, for the
Snapshot of one download (`services/keeper/snapshot.py`) the renderers (`services/keeper/render.py`)
show. No I/O here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.keeper.snapshot import Snapshot, display_name, percent_of

__all__ = [
    "Amount",
    "Snapshot",
    "display_name",
    "files_text",
    "format_table",
    "human_bytes",
    "human_duration",
    "human_eta",
    "human_speed",
    "percent_of",
    "progress_cell",
    "progress_line",
    "size_text",
    "speed_text",
    "stats_text",
    "terminal_message",
]

_UNITS = ("kB", "MB", "GB", "TB", "PB")


def human_bytes(n: int | float | None) -> str:
    """Decimal (SI) units, one decimal above a kilobyte: 512 B, 1.5 kB, 45.2 MB, 1.1 GB."""
    if n is None:
        return "?"
    value = float(n)
    if abs(value) < 1000:
        return f"{int(value)} B"
    for unit in _UNITS:
        value /= 1000.0
        if abs(value) < 999.95 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def human_speed(bps: int | float | None) -> str:
    """Bytes per second as `45.2 MB/s`; `-` when unknown."""
    if bps is None:
        return "-"
    return f"{human_bytes(bps)}/s"


def human_eta(secs: int | float | None) -> str:
    """Remaining time: `42s`, `3m05s`, `2h07m`, `3d04h`; `-` when unknown."""
    if secs is None or secs < 0:
        return "-"
    s = round(secs)
    if s < 60:
        return f"{s}s"
    minutes, s = divmod(s, 60)
    if minutes < 60:
        return f"{minutes}m{s:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def human_duration(secs: float | None) -> str:
    """An elapsed time: `0.8s`, `12.3s`, else like `human_eta`."""
    if secs is None:
        return "-"
    if secs < 60:
        return f"{secs:.1f}s"
    return human_eta(secs)


def files_text(snap: Snapshot) -> str | None:
    """`3/7` (files in place of a whole model's files), or None for one file."""
    if snap.files_total is None:
        return None
    return f"{snap.files_done or 0}/{snap.files_total}"


def _status_word(snap: Snapshot) -> str:
    if snap.status == "queued" and snap.queue_position is not None:
        return f"queued #{snap.queue_position}"
    return snap.status


class Amount(Protocol):
    """How far something has got: one download's Snapshot, or a fleet pull's total."""

    @property
    def bytes(self) -> int: ...

    @property
    def total(self) -> int | None: ...

    @property
    def percent_value(self) -> float | None: ...


def size_text(amount: Amount, sep: str) -> str:
    """`108.0 MB{sep}256.0 MB`, or only the bytes while the total is unknown."""
    if amount.total is None:
        return human_bytes(amount.bytes)
    return f"{human_bytes(amount.bytes)}{sep}{human_bytes(amount.total)}"


def progress_cell(amount: Amount) -> str:
    """A table's PROGRESS cell: `42.0% 108.0 MB/256.0 MB`, or only the bytes while the total is unknown."""
    pct = amount.percent_value
    size = size_text(amount, "/")
    return f"{pct:.1f}% {size}" if pct is not None else size


def speed_text(snap: Snapshot) -> str:
    """`45.2 MB/s`; under a bandwidth cap `45.2 MB/s (capped 50.0 MB/s: schedule)`."""
    cap = f" (capped {human_speed(snap.capped_bps)}: {snap.cap_reason})" if snap.capped_bps else ""
    return human_speed(snap.speed_bps or 0) + cap


def stats_text(snap: Snapshot, with_hive: bool = True) -> str:
    """The text beside the bar: `42.0% • 108.0 MB / 256.0 MB • 45.2 MB/s • ETA 3s • hive-a`; a whole model
    shows `files 3/7` before the hive. Without `with_hive` (the bar is named after the hive) no hive."""
    parts: list[str] = []
    pct = snap.percent_value
    if pct is not None:
        parts.append(f"{pct:5.1f}%")
    parts.append(size_text(snap, " / "))
    running = snap.status == "downloading"
    if running:
        parts.append(speed_text(snap))
        if snap.total is not None:
            parts.append(f"ETA {human_eta(snap.eta_secs)}")
    if not running:
        parts.append(_status_word(snap))
    if (files := files_text(snap)) is not None:
        parts.append(f"files {files}")
    if snap.hive_id and with_hive:
        parts.append(snap.hive_id)
    return " • ".join(parts)


def progress_line(snap: Snapshot) -> str:
    """One log-friendly ASCII line: `hive-a model.bin downloading 42.0% 108.0 MB/256.0 MB 45.2 MB/s ETA 3s`
    (a whole model adds `files 3/7`)."""
    parts = [snap.hive_id or "-", snap.name, _status_word(snap)]
    pct = snap.percent_value
    if pct is not None:
        parts.append(f"{pct:.1f}%")
    parts.append(size_text(snap, "/"))
    if snap.status == "downloading":
        parts.append(speed_text(snap))
        if snap.total is not None:
            parts.append(f"ETA {human_eta(snap.eta_secs)}")
    if (files := files_text(snap)) is not None:
        parts.append(f"files {files}")
    return " ".join(parts)


def terminal_message(snap: Snapshot) -> str:
    """The one line printed when a download ends."""
    if snap.status == "complete":
        took = f" in {human_duration(snap.duration_secs)}" if snap.duration_secs is not None else ""
        where = f" -> {snap.path}" if snap.path else ""
        sha = f" (sha256 {snap.sha256})" if snap.sha256 else ""
        files = f" ({snap.files_total} files)" if snap.files_total is not None else ""
        return f"complete: {snap.name} {human_bytes(snap.bytes)}{files}{took} on {snap.hive_id or '?'}{where}{sha}"
    if snap.status == "failed":
        return f"{snap.code or 'DOWNLOAD_FAILED'}: {snap.error or 'the download failed'}"
    if snap.status == "cancelled":
        return f"cancelled: {snap.name} ({snap.download_id}) at {human_bytes(snap.bytes)}"
    return f"{snap.status}: {snap.name} ({snap.download_id})"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Plain left-aligned columns separated by two spaces, trailing spaces stripped."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in (headers, *rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return lines
