"""What a test server sends: an `Answer` (status and headers, then a body or a slice of a file).

Stdlib only. The model server (`handler.py`) and the hub and its CDN (`loopback.py`) send the same
type. `text_answer` is the short text/plain answer that names a status; `file_answer` is the one
Range/If-Range rule the hub and its CDN share.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from services.modelserver.faults import Cut
from services.modelserver.ranges import select_range

__all__ = ["Answer", "file_answer", "text_answer"]


@dataclass
class Answer:
    """What to send: status and headers, then `data[start:stop]` or the slice [start, stop) of `file`.

    The model server may pace the body (`rate_bps`) or end it early on purpose (`cut`).
    """

    status: int
    headers: dict[str, str]
    data: bytes = b""
    file: Path | None = None
    start: int = 0
    stop: int = 0
    rate_bps: int | None = None
    cut: Cut | None = None

    @classmethod
    def of(cls, status: int, headers: dict[str, str], body: bytes = b"") -> Answer:
        return cls(status, {**headers, "Content-Length": str(len(body))}, body, None, 0, len(body))


def text_answer(status: int, extra: dict[str, str] | None = None) -> Answer:
    """A short text/plain answer naming the status, e.g. "503 Service Unavailable"."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body = f"{status} {phrase}\n".encode()
    headers = {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body)), **(extra or {})}
    return Answer(status, headers, body, None, 0, len(body))


def file_answer(
    size: int, etag: str, request: dict[str, str], headers: dict[str, str], data: bytes = b"", file: Path | None = None
) -> Answer:
    """200, 206 or 416 for a body of `size` bytes: one `bytes=` range, honoured only if If-Range matches."""
    out = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream", "ETag": etag, **headers}
    if_range_ok = request.get("if-range", etag) == etag
    sel = select_range(request.get("range") if if_range_ok else None, size)
    out.update(sel.headers)
    if sel.status == 416:
        return Answer(416, out)
    return Answer(sel.status, out, data, file, sel.start, sel.stop)
