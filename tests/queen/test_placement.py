"""Placement: the pure rule (`services/queen/hives/placement.py`) and QueenService following it against
respx-mocked hives. The same rule with two real hives: tests/e2e/test_queen_e2e.py."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
import respx

from services.queen.hives.client import HiveClient
from services.queen.hives.placement import holding_hive, repo_key
from services.queen.hives.registry import HiveRegistry
from services.queen.service import QueenService
from services.queen.settings import QueenSettings
from services.queen.streams.aggregate import AggregateConfig, AggregateHub
from services.queen.streams.upstream import RelayStats
from shared.errors import ApiError
from shared.models import EventType, ProgressEvent
from shared.wire.hive import StartDownload

T = TypeVar("T")


@pytest.mark.parametrize(
    ("ref", "key"),
    [
        ("hf:org/repo", "org/repo@main"),
        ("hf:org/repo@main", "org/repo@main"),
        ("hf:org/repo::file=model-00001-of-00002.safetensors", "org/repo@main"),
        ("hf:org/repo@v1.0::file=sub/dir/config.json", "org/repo@v1.0"),
        ("hf:org/repo@refs/pr/1", "org/repo@refs/pr/1"),
        ("hf:org/repo@refs/pr/1::file=a@b.json", "org/repo@refs/pr/1"),
        ("https://example.com/org/repo/model.bin", None),
        ("hf:repo-without-org::file=x", "repo-without-org@main"),
        ("hf:gpt2@v1", "gpt2@v1"),
        ("hf:a/b/c::file=x", None),
        ("hf:/repo", None),
    ],
)
def test_repo_key_is_the_repository_at_its_revision(ref: str, key: str | None) -> None:
    assert repo_key(ref) == key


def test_holding_hive_is_where_the_repository_runs_at_that_revision() -> None:
    active = [
        ("hive-a", "hf:org/llama::file=model-00001-of-00004.safetensors"),
        ("hive-b", "https://example.com/org/llama/x.bin"),
        ("hive-c", "hf:org/llama@v2::file=config.json"),
        ("hive-d", "hf:org/other"),
    ]
    assert holding_hive("hf:org/llama::file=model-00002-of-00004.safetensors", active) == "hive-a"
    assert holding_hive("hf:org/llama@main", active) == "hive-a"  # the whole model joins its shards
    assert holding_hive("hf:org/llama@v2", active) == "hive-c"  # another revision, another key
    assert holding_hive("hf:org/llama@v3", active) is None
    assert holding_hive("https://example.com/org/llama/x.bin", active) is None  # URLs are placed by load
    assert holding_hive("hf:org/new::file=a", active) is None
    assert holding_hive("hf:org/new", []) is None


def test_holding_hive_prefers_the_hive_with_most_of_the_model() -> None:
    active = [("hive-b", "hf:o/m::file=1"), ("hive-a", "hf:o/m::file=2"), ("hive-b", "hf:o/m::file=3")]
    assert holding_hive("hf:o/m::file=4", active) == "hive-b"
    assert holding_hive("hf:o/m::file=4", active[:2]) == "hive-a"  # a tie: by id


# -- QueenService ------------------------------------------------------------------------------

_ids = itertools.count(1)


def answer(request: httpx.Request) -> httpx.Response:
    """A hive's 202 to POST /v2/downloads: a queued download of the ref it was sent."""
    body = json.loads(request.content)
    download_id = f"dl-{next(_ids):032x}"
    return httpx.Response(202, json={"download_id": download_id, "model_ref": body["model_ref"], "status": "queued"})


def event(hive_id: str, download_id: str, model_ref: str, event_id: int, kind: EventType) -> ProgressEvent:
    data: dict[str, Any] = {"download_id": download_id, "bytes": 0, "total": 10, "hive_id": hive_id}
    if kind is EventType.PROGRESS:
        data.update(status="downloading", model_ref=model_ref)
    return ProgressEvent(event_id, kind, data)


def with_service(fn: Callable[[QueenService, AggregateHub], Awaitable[T]], busy: dict[str, int] | None = None) -> T:
    """Run `fn` on a QueenService whose registry holds hive-a (busier) and hive-b (idler), both healthy."""
    registry = HiveRegistry()
    for hive_id, active in (busy or {"hive-a": 4, "hive-b": 0}).items():
        registry.add(hive_id, f"http://{hive_id}.test", "static")
        registry.mark_healthy(hive_id, active)

    async def run() -> T:
        async with httpx.AsyncClient() as client:
            hives = HiveClient(client, None, timeout=1.0, stream_read_timeout=5.0)
            hub = AggregateHub(hives, registry.record_download, AggregateConfig("q", 10, 0.1, 0.1, 1.0), RelayStats())
            return await fn(QueenService(QueenSettings(), registry, hives, hub), hub)

    return asyncio.run(run())


async def place(service: QueenService, ref: str, hive_id: str | None = None) -> str:
    _, state = await service.start_download(StartDownload(model_ref=ref), hive_id)
    return str(state["hive_id"])


@respx.mock
def test_shards_started_one_by_one_follow_the_first_even_before_its_events_arrive() -> None:
    for hive_id in ("hive-a", "hive-b"):
        respx.post(f"http://{hive_id}.test/v2/downloads").mock(side_effect=answer)

    async def scenario(service: QueenService, hub: AggregateHub) -> list[str]:
        # the first shard goes to the busier hive-a by name; the rest follow it, not the idle hive-b
        first = await place(service, "hf:org/llama::file=model-00001-of-00003.safetensors", "hive-a")
        rest = [await place(service, f"hf:org/llama::file=model-0000{i}-of-00003.safetensors") for i in (2, 3)]
        whole = await place(service, "hf:org/llama")
        other = await place(service, "hf:org/other::file=config.json")
        return [first, *rest, whole, other]

    assert with_service(scenario) == ["hive-a", "hive-a", "hive-a", "hive-a", "hive-b"]


@respx.mock
def test_files_of_one_model_asked_at_once_are_placed_one_after_the_other() -> None:
    arrived, answered = asyncio.Event(), asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        arrived.set()
        await answered.wait()
        return answer(request)

    respx.post("http://hive-a.test/v2/downloads").mock(side_effect=slow)
    respx.post("http://hive-b.test/v2/downloads").mock(side_effect=answer)

    async def scenario(service: QueenService, hub: AggregateHub) -> list[str]:
        first = asyncio.create_task(place(service, "hf:org/llama::file=model-1.safetensors"))
        await arrived.wait()  # the first request has reached the idle hive-a, which has not answered yet
        service.registry.mark_healthy("hive-a", 9)  # meanwhile a health check finds hive-a busy
        second = asyncio.create_task(place(service, "hf:org/llama::file=model-2.safetensors"))
        other = await place(service, "hf:org/other::file=x")  # another model is not held up
        answered.set()
        return [await first, await second, other]

    assert with_service(scenario, busy={"hive-a": 0, "hive-b": 1}) == ["hive-a", "hive-a", "hive-b"]


@respx.mock
def test_the_aggregated_streams_pin_a_model_until_its_downloads_end() -> None:
    respx.post("http://hive-a.test/v2/downloads").mock(side_effect=answer)
    respx.post("http://hive-b.test/v2/downloads").mock(side_effect=answer)
    running = "dl-" + "a" * 32

    async def scenario(service: QueenService, hub: AggregateHub) -> list[str]:
        # started on hive-a by someone else (straight on the hive): the queen knows it from the stream only
        hub.publish(
            "hive-a", event("hive-a", running, "hf:org/llama@main::file=model-1.safetensors", 3, EventType.PROGRESS)
        )
        pinned = await place(service, "hf:org/llama::file=model-2.safetensors")
        revision = await place(service, "hf:org/llama@v2::file=model-2.safetensors")
        url = await place(service, "https://example.com/org/llama/model-2.safetensors")
        hub.publish("hive-a", event("hive-a", running, "", 4, EventType.COMPLETE))
        # the pin from the queen's own placement goes once the stream has shown that download, too
        placed = str(respx.calls[0].response.json()["download_id"])
        hub.publish("hive-a", event("hive-a", placed, "hf:org/llama::file=model-2.safetensors", 1, EventType.PROGRESS))
        hub.publish("hive-a", event("hive-a", placed, "", 2, EventType.CANCELLED))
        free = await place(service, "hf:org/llama::file=model-3.safetensors")
        return [pinned, revision, url, free]

    assert with_service(scenario) == ["hive-a", "hive-b", "hive-b", "hive-b"]


@respx.mock
def test_a_named_hive_wins_over_the_pin() -> None:
    respx.post("http://hive-a.test/v2/downloads").mock(side_effect=answer)
    named = respx.post("http://hive-b.test/v2/downloads").mock(side_effect=answer)

    async def scenario(service: QueenService, hub: AggregateHub) -> list[str]:
        return [await place(service, "hf:o/m", "hive-a"), await place(service, "hf:o/m::file=x", "hive-b")]

    assert with_service(scenario) == ["hive-a", "hive-b"]
    assert named.call_count == 1


@respx.mock
def test_an_unhealthy_holder_is_503_and_the_model_never_spreads() -> None:
    respx.post("http://hive-a.test/v2/downloads").mock(side_effect=answer)
    other = respx.post("http://hive-b.test/v2/downloads").mock(side_effect=answer)

    async def scenario(service: QueenService, hub: AggregateHub) -> ApiError:
        await place(service, "hf:o/m::file=1", "hive-a")
        service.registry.mark_unhealthy("hive-a", "down")
        with pytest.raises(ApiError) as caught:
            await place(service, "hf:o/m::file=2")
        return caught.value

    error = with_service(scenario)
    assert (error.status, error.code, error.extra["hive_id"]) == (503, "HIVE_UNREACHABLE", "hive-a")
    assert "hive_id" in error.message and not other.called


@respx.mock
def test_a_download_that_is_already_complete_pins_nothing() -> None:
    done = {"download_id": "dl-" + "c" * 32, "model_ref": "hf:o/m::file=1", "status": "complete"}
    respx.post("http://hive-a.test/v2/downloads").respond(200, json=done)
    respx.post("http://hive-b.test/v2/downloads").mock(side_effect=answer)

    async def scenario(service: QueenService, hub: AggregateHub) -> list[str]:
        return [await place(service, "hf:o/m::file=1", "hive-a"), await place(service, "hf:o/m::file=2")]

    assert with_service(scenario) == ["hive-a", "hive-b"]
