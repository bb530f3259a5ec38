"""Byte ranges: the one Range rule the model server, the test hub and its CDN all answer by.

Pure and I/O-free. `parse_range` reads a single ``bytes=`` range; `select_range` turns it into the
status (200, 206 or 416), the slice to send and the Content-Range / Content-Length headers. Whether a
Range applies at all (If-Range, a fault that ignores it) is the caller's decision: it passes None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeNotSatisfiable(Exception):
    """The Range starts at or past the end of the file."""


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """A single `bytes=` range as a half-open (start, stop), or None to ignore it (multi-range, malformed).

    Raises RangeNotSatisfiable when the range starts at or beyond `size`.
    """
    m = _RANGE_RE.fullmatch(value.strip())
    if m is None or (not m[1] and not m[2]):
        return None
    if not m[1]:  # suffix range: the last N bytes
        suffix = int(m[2])
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(value)
        return max(0, size - suffix), size
    start = int(m[1])
    end = int(m[2]) if m[2] else size - 1
    if m[2] and end < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(value)
    return start, min(end + 1, size)


@dataclass(frozen=True)
class Selection:
    """What a Range asks of a body: the status, the slice [start, stop) and the length headers to send."""

    status: int  # 200, 206 or 416 (then the slice is empty)
    start: int
    stop: int
    headers: dict[str, str]  # Content-Range (206 and 416) and Content-Length


def select_range(range_header: str | None, size: int) -> Selection:
    """Answer `range_header` (None or empty: no range) for a body of `size` bytes."""
    try:
        span = parse_range(range_header, size) if range_header else None
    except RangeNotSatisfiable:
        return Selection(416, 0, 0, {"Content-Range": f"bytes */{size}", "Content-Length": "0"})
    if span is None:
        return Selection(200, 0, size, {"Content-Length": str(size)})
    start, stop = span
    headers = {"Content-Range": f"bytes {start}-{stop - 1}/{size}", "Content-Length": str(stop - start)}
    return Selection(206, start, stop, headers)
