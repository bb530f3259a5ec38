"""PullService's error paths against respx-mocked hives: a start refused on one hive cancels the
parts started on the others, a plan that does not come in time names its hive, and a pull the queen
does not remember is rebuilt from the hives' download lists (the real processes: tests/e2e/test_fleet_pulls.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
import respx

from services.queen.hives.client import HiveClient
from services.queen.hives.registry import HiveRegistry
from services.queen.pulls.service import PullService
from services.queen.settings import QueenSettings
from shared.errors import ApiError
from shared.wire.queen import QueenStartPull

T = TypeVar("T")
A, B = "http://hive-a.test:9200", "http://hive-b.test:9200"
COMMIT = "c" * 40
DIGEST = "d" * 64
PULL = "pull-" + "e" * 32


def plan(hive_id: str, present: bool = False) -> dict[str, Any]:
    files = [{"path": "model.safetensors", "size": 10, "digest": DIGEST, "present": present}]
    return {
        "model_ref": "hf:org/model",
        "commit": COMMIT,
        "files": files,
        "total_bytes": 10,
        "needed_bytes": 0 if present else 10,
        "free_bytes": 1000,
        "fits": True,
        "access_error": None,
        "hive_id": hive_id,
    }


def run(fn: Callable[[PullService], Awaitable[T]], **settings: Any) -> T:
    registry = HiveRegistry()
    registry.add("hive-a", A, "static")
    registry.add("hive-b", B, "static")

    async def go() -> T:
        async with httpx.AsyncClient() as client:
            hives = HiveClient(client, None, timeout=1.0, stream_read_timeout=5.0)
            return await fn(PullService(QueenSettings(**settings), registry, hives))

    return asyncio.run(go())


def start(service: PullService) -> Awaitable[Any]:
    return service.start(QueenStartPull(model_ref="hf:org/model", hive_ids=["hive-a", "hive-b"]))


@respx.mock
def test_a_start_refused_on_one_hive_cancels_the_parts_started_on_the_others() -> None:
    respx.post(f"{A}/v2/plans").respond(200, json=plan("hive-a"))
    respx.post(f"{B}/v2/plans").respond(200, json=plan("hive-b"))
    started_a = respx.post(f"{A}/v2/downloads").respond(202, json={"download_id": "dl-a", "status": "queued"})
    respx.post(f"{B}/v2/downloads").respond(422, json={"error": {"code": "INVALID_REQUEST", "message": "no"}})
    cancelled = respx.delete(f"{A}/v2/downloads/dl-a").respond(200, json={"download_id": "dl-a"})
    with pytest.raises(ApiError) as caught:
        run(start)
    assert (caught.value.status, caught.value.code, caught.value.extra["hive_id"]) == (422, "INVALID_REQUEST", "hive-b")
    assert cancelled.called
    body = json.loads(started_a.calls.last.request.content)
    assert body["commit"] == COMMIT and body["pull_id"].startswith("pull-") and body["hub_first"] == [DIGEST]


@respx.mock
def test_a_plan_that_does_not_come_in_time_fails_the_preflight_naming_its_hive() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=plan("hive-b"))

    respx.post(f"{A}/v2/plans").respond(200, json=plan("hive-a"))
    respx.post(f"{B}/v2/plans").mock(side_effect=slow)
    started = respx.post(url__regex=r".*/v2/downloads")
    with pytest.raises(ApiError) as caught:
        run(start, plan_timeout=0.2)
    error = caught.value
    assert (error.status, error.code, error.extra["hive_id"]) == (503, "HIVE_UNREACHABLE", "hive-b")
    assert "no answer within 0.2s" in error.message and not started.called


@respx.mock
def test_a_pull_the_queen_does_not_remember_is_rebuilt_from_the_hives_lists() -> None:
    def listing(hive_id: str, download_id: str) -> dict[str, Any]:
        state = {"download_id": download_id, "model_ref": "hf:org/model", "status": "downloading", "pull_id": PULL}
        other = {"download_id": "dl-other", "model_ref": "hf:org/other", "status": "complete"}
        return {"hive_id": hive_id, "downloads": [{**state, "commit": COMMIT, "bytes_downloaded": 4}, other]}

    respx.get(f"{A}/v2/downloads").respond(200, json=listing("hive-a", "dl-a"))
    respx.get(f"{B}/v2/downloads").respond(200, json=listing("hive-b", "dl-b"))
    pull = run(lambda s: s.find(PULL))
    assert (pull.commit, pull.model_ref, pull.downloads) == (
        COMMIT,
        "hf:org/model",
        {"hive-a": "dl-a", "hive-b": "dl-b"},
    )

    respx.get(f"{B}/v2/downloads").mock(side_effect=httpx.ConnectError("down"))
    with pytest.raises(ApiError) as caught:
        run(lambda s: s.find("pull-" + "f" * 32))
    assert caught.value.status == 503 and caught.value.extra["unreachable_hives"] == ["hive-b"]
