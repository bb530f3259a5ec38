"""HiveClient's error paths and headers, and placement's fallback, against respx-mocked hives."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
import respx
import structlog

from services.queen.hives.client import HiveClient
from services.queen.hives.registry import HiveInfo, HiveRegistry
from services.queen.service import QueenService
from services.queen.settings import QueenSettings
from services.queen.streams.aggregate import AggregateConfig, AggregateHub
from services.queen.streams.upstream import RelayStats
from shared.errors import ApiError
from shared.wire.hive import StartDownload

T = TypeVar("T")
HIVE = HiveInfo("hive-a", "http://hive-a.test:9200", "static")


def call(fn: Callable[[HiveClient], Awaitable[T]], token: str | None = "tok") -> T:
    async def run() -> T:
        async with httpx.AsyncClient() as client:
            return await fn(HiveClient(client, token, timeout=1.0, stream_read_timeout=5.0))

    return asyncio.run(run())


def api_error(fn: Callable[[HiveClient], Awaitable[Any]]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call(fn)
    return caught.value


@respx.mock
def test_calls_carry_the_token_and_the_bound_correlation_id() -> None:
    route = respx.get(f"{HIVE.url}/v2/downloads").respond(
        200, json={"hive_id": "hive-a", "downloads": [{"download_id": "dl-1"}]}
    )
    with structlog.contextvars.bound_contextvars(correlation_id="corr-42"):
        downloads = call(lambda c: c.list_downloads(HIVE, "complete"))
    assert downloads == [{"download_id": "dl-1", "hive_id": "hive-a"}]
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer tok"
    assert request.headers["x-correlation-id"] == "corr-42"
    assert request.url.params["status"] == "complete"


@respx.mock
def test_no_token_no_authorization_header_and_a_fresh_correlation_id() -> None:
    route = respx.get(f"{HIVE.url}/healthz").respond(200, json={"status": "ok", "active_downloads": 2})
    assert call(lambda c: c.health(HIVE, 1.0), token=None)["active_downloads"] == 2
    request = route.calls.last.request
    assert "authorization" not in request.headers
    assert len(request.headers["x-correlation-id"]) == 32


@respx.mock
@pytest.mark.parametrize(
    "side_effect", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("cut")]
)
def test_transport_failures_are_503_hive_unreachable(side_effect: Exception) -> None:
    respx.get(f"{HIVE.url}/v2/downloads/dl-1").mock(side_effect=side_effect)
    error = api_error(lambda c: c.get_download(HIVE, "dl-1"))
    assert (error.status, error.code, error.extra["hive_id"]) == (503, "HIVE_UNREACHABLE", "hive-a")


@respx.mock
def test_hive_4xx_errors_pass_through_as_they_are() -> None:
    respx.post(f"{HIVE.url}/v2/downloads").respond(
        422, json={"error": {"code": "INVALID_MODEL_REF", "message": "path escapes the models directory"}}
    )
    error = api_error(lambda c: c.start_download(HIVE, StartDownload(model_ref="hf:../x")))
    assert (error.status, error.code, error.message) == (422, "INVALID_MODEL_REF", "path escapes the models directory")
    respx.delete(f"{HIVE.url}/v2/downloads/dl-1").respond(
        409, json={"error": {"code": "ALREADY_FINISHED", "message": "complete", "state": {"status": "complete"}}}
    )
    error = api_error(lambda c: c.cancel_download(HIVE, "dl-1"))
    assert (error.status, error.code, error.extra["state"]) == (409, "ALREADY_FINISHED", {"status": "complete"})


@respx.mock
@pytest.mark.parametrize(
    ("status", "body"),
    [(401, {"error": {"code": "UNAUTHORIZED", "message": "no"}}), (500, None), (404, None), (503, None)],
)
def test_other_hive_failures_are_502_hive_error(status: int, body: dict[str, Any] | None) -> None:
    respx.post(f"{HIVE.url}/v2/downloads").mock(
        return_value=httpx.Response(status, json=body) if body else httpx.Response(status, text="oops")
    )
    error = api_error(lambda c: c.start_download(HIVE, StartDownload(model_ref="https://x/y")))
    assert (error.status, error.code, error.extra["hive_id"]) == (502, "HIVE_ERROR", "hive-a")


@respx.mock
def test_a_body_that_is_not_json_is_502() -> None:
    respx.get(f"{HIVE.url}/v2/downloads").respond(200, text="<html>")
    assert api_error(lambda c: c.list_downloads(HIVE)).status == 502
    respx.get(f"{HIVE.url}/v2/downloads/dl-1").respond(200, json=[1, 2])
    assert api_error(lambda c: c.get_download(HIVE, "dl-1")).status == 502


@respx.mock
def test_start_returns_the_hive_status_and_state_with_hive_id() -> None:
    route = respx.post(f"{HIVE.url}/v2/downloads").respond(200, json={"download_id": "dl-9", "status": "complete"})
    status, state = call(lambda c: c.start_download(HIVE, StartDownload(model_ref="https://x/y", sha256="a" * 64)))
    assert (status, state) == (200, {"download_id": "dl-9", "status": "complete", "hive_id": "hive-a"})
    assert route.calls.last.request.content == b'{"model_ref":"https://x/y","sha256":"' + b"a" * 64 + b'"}'


@respx.mock
def test_start_passes_include_and_exclude_on() -> None:
    route = respx.post(f"{HIVE.url}/v2/downloads").respond(202, json={"download_id": "dl-9", "status": "queued"})
    request = StartDownload(model_ref="hf:org/repo", include=["*.safetensors", "*.json"], exclude=["*.bin"])
    call(lambda c: c.start_download(HIVE, request))
    body = json.loads(route.calls.last.request.content)
    assert body == {"model_ref": "hf:org/repo", "include": ["*.safetensors", "*.json"], "exclude": ["*.bin"]}


@respx.mock
def test_an_unknown_download_is_none() -> None:
    respx.get(f"{HIVE.url}/v2/downloads/dl-0").respond(404, json={"error": {"code": "NOT_FOUND", "message": "?"}})
    assert call(lambda c: c.get_download(HIVE, "dl-0")) is None


def placement(side_effect: Exception) -> tuple[Any, HiveRegistry, respx.Route]:
    """QueenService.start_download with hive-a (least busy) failing as given and hive-b answering."""
    registry = HiveRegistry()
    for hive_id, active in (("hive-a", 0), ("hive-b", 5)):
        registry.add(hive_id, f"http://{hive_id}.test", "static")
        registry.mark_healthy(hive_id, active)
    respx.post("http://hive-a.test/v2/downloads").mock(side_effect=side_effect)
    other = respx.post("http://hive-b.test/v2/downloads").respond(202, json={"download_id": "dl-b", "status": "queued"})

    async def run() -> Any:
        async with httpx.AsyncClient() as client:
            hives = HiveClient(client, None, timeout=1.0, stream_read_timeout=5.0)
            hub = AggregateHub(hives, registry.record_download, AggregateConfig("q", 10, 0.1, 0.1, 1.0), RelayStats())
            service = QueenService(QueenSettings(), registry, hives, hub)
            try:
                return await service.start_download(StartDownload(model_ref="https://x/y"), None)
            except ApiError as exc:
                return exc

    return asyncio.run(run()), registry, other


@respx.mock
def test_placement_moves_on_when_the_chosen_hive_refuses_connections() -> None:
    result, registry, other = placement(httpx.ConnectError("refused"))
    assert result == (202, {"download_id": "dl-b", "status": "queued", "hive_id": "hive-b"})
    assert other.called and registry.owner("dl-b") == "hive-b"
    hive_a = registry.get("hive-a")
    assert hive_a is not None and hive_a.health.value == "unhealthy"


@respx.mock
def test_placement_never_starts_a_second_copy_when_the_first_hive_may_have_it() -> None:
    result, _, other = placement(httpx.ReadTimeout("no answer"))  # the request reached hive-a
    assert isinstance(result, ApiError) and (result.status, result.code) == (503, "HIVE_UNREACHABLE")
    assert not other.called


def test_a_registered_url_httpx_cannot_use_is_an_unreachable_hive() -> None:
    odd = HiveInfo("hive-x", "http://0g\u023a\u0100\u00d7\u00d6", "registered")  # IDNA refuses the host
    error = api_error(lambda c: c.list_downloads(odd))
    assert (error.status, error.code, error.extra["hive_id"]) == (503, "HIVE_UNREACHABLE", "hive-x")
    with pytest.raises(httpx.ConnectError):
        call(lambda c: c.open_stream(c.stream_url(odd.url)))
