"""SSE helpers both services use: Last-Event-ID parsing and a ProgressEvent's SSE frame."""

from __future__ import annotations

import json
from typing import Any

from shared.digits import parse_uint
from shared.models import ProgressEvent

__all__ = ["dumps", "frame", "parse_last_event_id"]


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


def parse_last_event_id(value: str | None) -> int | None:
    """The numeric Last-Event-ID a client sent, or None when absent or not ours."""
    return parse_uint(value)


def frame(event: ProgressEvent, extra: dict[str, Any] | None = None) -> bytes:
    """The event as one SSE frame (`id`, `event`, `data` lines, CRLF as sse-starlette writes them), with
    `extra` fields added to its payload.

    Encoded once per event and extra fields, then shared: a thousand readers of one event cost one
    `json.dumps`, not a thousand (sse-starlette sends bytes as they are). The payload is compact JSON,
    so it is one `data:` line; the id is an integer and the type one of ours, so neither needs escaping.
    """
    key = tuple(extra.items()) if extra else ()
    cached = event.encoded
    if cached is not None and cached[0] == key:
        return cached[1]
    data = event.data if not extra else {**event.data, **extra}
    encoded = f"id: {event.id}\r\nevent: {event.event.value}\r\ndata: {dumps(data)}\r\n\r\n".encode()
    object.__setattr__(event, "encoded", (key, encoded))  # frozen: a cache, not a change of the event
    return encoded
