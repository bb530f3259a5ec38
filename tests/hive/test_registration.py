"""Hive self-registration against a respx-mocked queen: the request, retries while it is down, heartbeats."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import respx

from services.hive.registration import register_forever
from services.hive.settings import HiveSettings

QUEEN = "http://queen.test:9100"


def settings(**fields: Any) -> HiveSettings:
    base: dict[str, Any] = {
        "id": "hive-a",
        "queen_url": QUEEN + "/",
        "public_url": "http://hive-a.test:9200/",
        "heartbeat_secs": 0.02,
    }
    return HiveSettings(**{**base, **fields})


class Queen:
    """The queen's POST /v1/hives: answers in turn (then 200s), and a wake-up after `wanted` requests."""

    def __init__(self, wanted: int, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.wanted = wanted
        self.enough = asyncio.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self.requests) >= self.wanted:
            self.enough.set()
        answer = self.answers.pop(0) if self.answers else httpx.Response(200, json={})
        if isinstance(answer, Exception):
            raise answer
        return answer


def register(hive: HiveSettings, wanted: int, *answers: httpx.Response | Exception) -> list[httpx.Request]:
    """Run register_forever until the queen has seen `wanted` requests; the requests it saw."""

    async def go() -> list[httpx.Request]:
        queen = Queen(wanted, *answers)
        with respx.mock:
            respx.post(f"{QUEEN}/v1/hives").mock(side_effect=queen)
            async with httpx.AsyncClient() as client:
                task = asyncio.create_task(register_forever(hive, client))
                try:
                    await asyncio.wait_for(queen.enough.wait(), timeout=10)
                finally:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                assert task.cancelled(), "register_forever ended by itself"
        return queen.requests

    return asyncio.run(go())


def test_registers_with_its_id_advertised_url_token_and_a_correlation_id() -> None:
    (request,) = register(settings(api_token="secret"), 1)
    assert json.loads(request.content) == {"hive_id": "hive-a", "url": "http://hive-a.test:9200"}
    assert request.headers["authorization"] == "Bearer secret"
    assert request.headers["x-correlation-id"]


def test_without_a_token_no_authorization_header_is_sent() -> None:
    (request,) = register(settings(), 1)
    assert "authorization" not in request.headers


def test_keeps_trying_while_the_queen_is_down_then_beats() -> None:
    requests = register(settings(), 5, httpx.ConnectError("refused"), httpx.Response(503))
    assert len(requests) >= 5  # down twice, registered, then heartbeats: never gave up, never raised
    ids = [request.headers["x-correlation-id"] for request in requests]
    assert len(set(ids)) == len(ids)  # a fresh correlation id per request


def test_without_a_queen_url_it_returns_at_once() -> None:
    async def go() -> None:
        async with httpx.AsyncClient() as client:
            await asyncio.wait_for(register_forever(settings(queen_url=None), client), timeout=5)

    asyncio.run(go())
