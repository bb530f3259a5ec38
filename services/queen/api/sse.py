"""How the queen's routes answer with a stream: every SSE route the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Response
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask

from services.queen.settings import QueenSettings

__all__ = ["event_stream"]


def event_stream(events: AsyncIterator[bytes], settings: QueenSettings, cleanup: BackgroundTask) -> Response:
    """`events` as SSE with the queen's keep-alive and send timeout; `cleanup` runs when the response ends,
    even when the stream never started (HEAD, a client gone at once)."""
    return EventSourceResponse(
        events,
        ping=settings.keepalive_secs,
        send_timeout=settings.send_timeout,
        headers={"Cache-Control": "no-store"},
        background=cleanup,
    )
