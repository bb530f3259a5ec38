"""Reading a hive's SSE stream: decoding its events, the relay counters, one followed stream, what else
it feeds (`StreamWatcher`). Pure."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from services.queen.hives.registry import HiveInfo
from shared.digits import is_ascii_digits
from shared.models import EventType, ProgressEvent

__all__ = [
    "NoWatcher",
    "RelayStats",
    "StreamWatcher",
    "Upstream",
    "bytes_went_back",
    "decode_event",
    "decode_payload",
    "ended_after",
    "enrich",
    "is_event_stream",
]


def decode_event(event: str, data: str, event_id: str) -> ProgressEvent | None:
    """A hive's SSE event as a ProgressEvent, or None for what is not one of ours.

    httpx-sse yields an empty `message` (the previous id, no data) after a keep-alive comment;
    those, and anything without an integer id, a known type and a JSON object naming its
    download, are dropped.
    """
    if not data or not is_ascii_digits(event_id):
        return None
    try:
        kind = EventType(event)
        payload: Any = json.loads(data)
    except ValueError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("download_id"), str):
        return None
    return ProgressEvent(int(event_id), kind, payload)


def decode_payload(data: str) -> dict[str, Any] | None:
    """An event's JSON object (a `model` event's), or None."""
    try:
        payload: Any = json.loads(data) if data else None
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def ended_after(completed_at: object, since: float) -> bool:
    """Whether a download's `completed_at` (RFC 3339) is at or after `since` (a POSIX time)."""
    if not isinstance(completed_at, str):
        return False
    try:
        return datetime.fromisoformat(completed_at).timestamp() >= since
    except ValueError:
        return False


def bytes_went_back(latest: ProgressEvent | None, event: ProgressEvent) -> bool:
    """True for a progress event with fewer bytes than the last one relayed (streams never go back)."""
    if latest is None or event.is_terminal:
        return False
    before, now = latest.data.get("bytes"), event.data.get("bytes")
    return isinstance(before, int) and isinstance(now, int) and now < before


def is_event_stream(content_type: str) -> bool:
    return content_type.partition(";")[0].strip().lower() == "text/event-stream"


def enrich(event: ProgressEvent, **extra: Any) -> ProgressEvent:
    return ProgressEvent(event.id, event.event, {**event.data, **extra})


@dataclass(slots=True)
class RelayStats:
    """Counters the relay keeps for /metrics."""

    reconnects: int = 0  # an upstream stream connected again after a drop
    reconnect_failures: int = 0  # an attempt to reconnect that failed
    gave_up: int = 0  # per-download relays that ran out of budget (HIVE_UNREACHABLE sent)


@dataclass(slots=True)
class Upstream:
    """One hive's stream as the AggregateHub follows it: the task, whether it is connected, its helpers."""

    url: str
    task: asyncio.Task[None] | None = None
    connected: bool = False
    helpers: set[asyncio.Task[None]] = field(default_factory=set)

    def help(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` beside the stream (cancelled with it)."""
        task = asyncio.create_task(work)
        self.helpers.add(task)
        task.add_done_callback(self.helpers.discard)


class StreamWatcher(Protocol):
    """What else a hive's one stream feeds (the ModelStore, README "The model store")."""

    def connected(self, hive: HiveInfo) -> None:
        """The hive's stream (re)connected."""

    def disconnected(self, hive_id: str) -> None:
        """The hive's stream dropped."""

    def on_model_event(self, hive_id: str, data: str) -> ProgressEvent | None:
        """A `model` event's data; the event to relay, or None."""

    def download_changed(self, hive_id: str, model_ref: object) -> None:
        """A download of `model_ref` began or ended on the hive."""


class NoWatcher:
    """A StreamWatcher that watches nothing (and relays no `model` event)."""

    def connected(self, hive: HiveInfo) -> None:
        pass

    def disconnected(self, hive_id: str) -> None:
        pass

    def on_model_event(self, hive_id: str, data: str) -> ProgressEvent | None:
        return None

    def download_changed(self, hive_id: str, model_ref: object) -> None:
        pass
