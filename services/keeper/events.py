"""The events of the queen's streams as the keeper reads them, and the terminal event an ended state stands for.

Pure: no I/O. A stream the keeper comes back to after its end (204) is closed with the event its state
stands for, shaped like the one the stream would have sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared.models import TERMINAL_EVENT_OF, TERMINAL_EVENTS, EventType

__all__ = ["STREAM_EVENTS", "StreamEvent", "terminal_event_from_pull", "terminal_event_from_state"]

# the event types the keeper reads; anything else on a stream (a `model` event too) is skipped
STREAM_EVENTS = frozenset(EventType) - {EventType.MODEL}


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One SSE event as received: its numeric id, type, parsed payload and the payload's raw text."""

    id: int | None
    event: str
    data: dict[str, Any]
    raw: str

    @property
    def is_terminal(self) -> bool:
        return self.event in TERMINAL_EVENTS

    @classmethod
    def synthetic(cls, event: str, data: dict[str, Any]) -> StreamEvent:
        return cls(None, event, data, json.dumps(data, separators=(",", ":")))


def terminal_event_from_state(state: dict[str, Any]) -> StreamEvent | None:
    """The terminal event a finished download's state JSON stands for; None while it still runs."""
    kind = TERMINAL_EVENT_OF.get(str(state.get("status")))
    if kind is None:
        return None
    data = {
        "download_id": state.get("download_id"),
        "bytes": state.get("bytes_downloaded"),
        "total": state.get("total_bytes"),
    }
    if state.get("hive_id"):
        data["hive_id"] = state["hive_id"]
    if kind is EventType.COMPLETE:
        data.update(sha256=state.get("sha256"), path=state.get("path"))
    elif kind is EventType.ERROR:
        data.update(error=state.get("error"), code=state.get("error_code"))
    return StreamEvent.synthetic(kind, data)


def terminal_event_from_pull(body: dict[str, Any]) -> StreamEvent | None:
    """The terminal event an ended pull's state (GET /v1/pulls/{id}) stands for; None while it runs.
    Shaped like the pull stream's own: the totals under `pull`, each hive's status under `hives`."""
    kind = TERMINAL_EVENT_OF.get(str(body.get("status")))
    if kind is None:
        return None
    parts = [p for p in body.get("hives", []) if isinstance(p, dict)]
    failed = [p for p in parts if p.get("hive_id") in body.get("failed_hives", [])]
    totals = {key: body.get(key) for key in ("status", "bytes", "total", "percent", "speed_bps")}
    totals.update(
        hives_total=len(parts),
        hives_ended=len(parts),
        failed_hives=list(body.get("failed_hives", [])),
    )
    data: dict[str, Any] = {
        "pull_id": body.get("pull_id"),
        "bytes": body.get("bytes"),
        "total": body.get("total"),
        "pull": totals,
        "hives": {str(p.get("hive_id")): p.get("status") for p in parts},
    }
    if failed:
        data["code"] = failed[0].get("error_code")
        data["error"] = "; ".join(f"{p['hive_id']}: {p.get('error_code')}: {p.get('error')}" for p in failed)
    return StreamEvent.synthetic(kind, data)
