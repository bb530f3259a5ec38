"""What a server answered, parsed: pure functions over response headers, no I/O.

Content-Range (`bytes start-end/total`, and a 416's `bytes */total`), Retry-After (seconds or an
HTTP date), and the strong validator If-Range may use. An ETag is a validator, never a digest: only
the hub's own headers name one (`hub_headers.linked_digest`).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping

from shared.digits import is_ascii_digits

__all__ = [
    "content_length",
    "content_range",
    "content_range_end",
    "parse_retry_after",
    "unsatisfied_total",
    "validator_of",
]

_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RE = re.compile(r"bytes \*/(\d+)")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if is_ascii_digits(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, float(when.timestamp()) - (time.time() if now is None else now))


def validator_of(headers: Mapping[str, str]) -> str | None:
    """A strong validator for If-Range: a strong ETag, else Last-Modified."""
    etag = headers.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("last-modified")


def content_range(headers: Mapping[str, str]) -> tuple[int, int | None] | None:
    """(start, total) from `Content-Range: bytes start-end/total`."""
    m = _CONTENT_RANGE_RE.fullmatch(headers.get("content-range", "").strip())
    if m is None:
        return None
    return int(m[1]), None if m[3] == "*" else int(m[3])


def content_range_end(headers: Mapping[str, str]) -> int | None:
    """The last byte a 206 answers (`Content-Range: bytes start-end/total`)."""
    m = _CONTENT_RANGE_RE.fullmatch(headers.get("content-range", "").strip())
    return int(m[2]) if m else None


def unsatisfied_total(headers: Mapping[str, str]) -> int | None:
    """The size a 416 states (`Content-Range: bytes */total`), if it states one."""
    m = _UNSATISFIED_RE.fullmatch(headers.get("content-range", "").strip())
    return int(m[1]) if m else None


def content_length(headers: Mapping[str, str]) -> int | None:
    length = headers.get("content-length")
    return int(length) if length and is_ascii_digits(length) else None
