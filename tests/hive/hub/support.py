"""What the hub tests share: a download started on a hive and its stream read to the end."""

from __future__ import annotations

import json
from typing import Any

import httpx
from httpx_sse import connect_sse

TERMINAL = {"complete", "error", "cancelled"}


def pull(
    base: str, model_ref: str, timeout: float = 60, **body: Any
) -> tuple[int, dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """Start a download and read its stream to the end: (POST status, final state, every event)."""
    with httpx.Client(base_url=base, timeout=httpx.Timeout(10, read=timeout)) as client:
        started = client.post("/v2/downloads", json={"model_ref": model_ref, **body})
        assert started.status_code in (200, 202), started.text
        download_id = started.json()["download_id"]
        events = []
        with connect_sse(client, "GET", f"/v2/downloads/{download_id}/stream") as source:
            for sse in source.iter_sse():
                events.append((sse.event, json.loads(sse.data)))
                if sse.event in TERMINAL:
                    break
        return started.status_code, client.get(f"/v2/downloads/{download_id}").json(), events
