"""SSE helpers both services use: Last-Event-ID parsing and ProgressEvent -> ServerSentEvent."""

from __future__ import annotations

import json
from typing import Any

from sse_starlette import ServerSentEvent

from shared.models import ProgressEvent

__all__ = ["dumps", "parse_last_event_id", "to_sse"]


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


def parse_last_event_id(value: str | None) -> int | None:
    """The numeric Last-Event-ID a client sent, or None when absent or not ours."""
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 18:
        return None
    return int(value)


def to_sse(event: ProgressEvent, extra: dict[str, Any] | None = None) -> ServerSentEvent:
    data = event.data if not extra else {**event.data, **extra}
    return ServerSentEvent(data=dumps(data), event=event.event.value, id=str(event.id))
