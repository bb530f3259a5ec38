"""ModelStore against respx-mocked hives: what it loads and asks for again as the hives' streams say, and
the results of a change across hives. The whole flow with real hives: tests/e2e/test_fleet_models.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import respx

from services.queen.hives.client import HiveClient
from services.queen.hives.registry import HiveRegistry
from services.queen.models.inventory import FleetInventory
from services.queen.models.store import ModelStore
from shared.models import EventType

T = TypeVar("T")
C1 = "c" * 40


def entry(repo_id: str, size: int = 10, pinned: bool = False) -> dict[str, Any]:
    revision = {"commit": C1, "refs": ["main"], "files": 1, "size_on_disk": size, "complete": True}
    return {
        "repo_id": repo_id,
        "size_on_disk": size,
        "revisions": [revision],
        "last_used": None,
        "pinned": pinned,
        "in_use": False,
    }


def listing(hive_id: str, *models: dict[str, Any]) -> dict[str, Any]:
    used = sum(m["size_on_disk"] for m in models)
    return {"models": list(models), "disk": {"used": used, "budget": None, "free": 1000}, "hive_id": hive_id}


def with_store(fn: Callable[[ModelStore, HiveRegistry], Awaitable[T]]) -> T:
    registry = HiveRegistry()
    for hive_id in ("hive-a", "hive-b"):
        registry.add(hive_id, f"http://{hive_id}.test", "static")
        registry.mark_healthy(hive_id, 0)

    async def run() -> T:
        async with httpx.AsyncClient() as client:
            hives = HiveClient(client, None, 1.0, 5.0)
            store = ModelStore(registry, hives, FleetInventory(), 1.0, "queen-t", retry_initial=0.01)
            try:
                return await fn(store, registry)
            finally:
                await store.close()

    return asyncio.run(run())


async def settled(store: ModelStore) -> None:
    """Until the store's background questions are answered (bounded)."""
    for _ in range(100):
        if not store._background:
            return
        await asyncio.wait(list(store._background), timeout=5)
    raise AssertionError("the store kept asking")


def repos(store: ModelStore) -> dict[str, list[str]]:
    return {m.repo_id: [h.hive_id for h in m.hives] for m in store.fleet().models}


@respx.mock
def test_a_connect_loads_the_list_and_events_keep_it() -> None:
    respx.get("http://hive-a.test/v2/models").respond(json=listing("hive-a", entry("org/x")))
    respx.get("http://hive-b.test/v2/models").respond(json=listing("hive-b"))
    one = respx.get("http://hive-a.test/v2/models/org/new").respond(json=entry("org/new", 5))

    async def scenario(store: ModelStore, registry: HiveRegistry) -> None:
        assert store.fleet().unreachable_hives == ["hive-a", "hive-b"]  # nothing loaded yet
        for hive_id in ("hive-a", "hive-b"):
            store.connected(registry.get(hive_id))  # type: ignore[arg-type]
        await settled(store)
        assert repos(store) == {"org/x": ["hive-a"]} and store.fleet().unreachable_hives == []

        relayed = store.on_model_event("hive-a", json.dumps({"action": "added", "repo_id": "org/new", "commit": C1}))
        assert relayed is not None and relayed.event is EventType.MODEL
        assert relayed.data["hive_id"] == "hive-a" and relayed.data["orchestrator_id"] == "queen-t"
        await settled(store)
        assert one.call_count == 1 and repos(store) == {"org/new": ["hive-a"], "org/x": ["hive-a"]}
        assert store.fleet().hives[0].used == 15

        gone = store.on_model_event("hive-a", json.dumps({"action": "evicted", "repo_id": "org/x"}))
        assert gone is not None and gone.id > relayed.id  # the queen's own ids
        assert repos(store) == {"org/new": ["hive-a"]}  # said all there is: nothing asked
        assert store.on_model_event("hive-a", "not json") is None
        assert store.on_model_event("hive-a", json.dumps({"action": "melted", "repo_id": "x"})) is None

        store.disconnected("hive-a")  # not shown until its list is loaded again
        assert store.fleet().unreachable_hives == ["hive-a"] and repos(store) == {}
        store.connected(registry.get("hive-a"))  # type: ignore[arg-type]
        await settled(store)
        assert repos(store) == {"org/x": ["hive-a"]}  # (what the hive lists now)

    with_store(scenario)


@respx.mock
def test_changes_during_a_load_or_a_question_are_asked_for_once_more_after_it() -> None:
    release = asyncio.Event()

    async def slow_list(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, json=listing("hive-a", entry("org/x", 10)))

    respx.get("http://hive-a.test/v2/models").mock(side_effect=slow_list)
    asked = respx.get("http://hive-a.test/v2/models/org/x").respond(json=entry("org/x", 30, pinned=True))

    async def scenario(store: ModelStore, registry: HiveRegistry) -> None:
        store.connected(registry.get("hive-a"))  # type: ignore[arg-type]
        store.connected(registry.get("hive-a"))  # type: ignore[arg-type]  (one load at a time)
        for _ in range(3):  # while the list is on its way: remembered, asked for once after it
            store.on_model_event("hive-a", json.dumps({"action": "added", "repo_id": "org/x", "commit": C1}))
        await asyncio.sleep(0.05)
        assert asked.call_count == 0
        release.set()
        await settled(store)
        assert asked.call_count == 1
        (holder,) = store.fleet().models[0].hives
        assert holder.size_on_disk == 30 and holder.pinned  # the answer after the list wins

        store.download_changed("hive-a", "hf:org/x::file=config.json")  # an hf: download began or ended
        store.download_changed("hive-a", "https://example.com/f.bin")  # not a repository: nothing
        await settled(store)
        assert asked.call_count == 2

    with_store(scenario)


@respx.mock
def test_a_change_goes_to_the_holders_and_gives_a_result_per_hive() -> None:
    respx.get("http://hive-a.test/v2/models").respond(json=listing("hive-a", entry("org/x")))
    respx.get("http://hive-b.test/v2/models").respond(json=listing("hive-b", entry("org/x")))
    respx.delete("http://hive-a.test/v2/models/org/x").respond(
        json={"action": "deleted", "repo_id": "org/x", "hive_id": "hive-a"}
    )
    refused = {"error": {"code": "MODEL_PINNED", "message": "org/x is pinned"}}
    respx.delete("http://hive-b.test/v2/models/org/x").respond(409, json=refused)
    respx.get("http://hive-a.test/v2/models/org/x").respond(404, json={"error": {"code": "NOT_FOUND", "message": "-"}})
    respx.get("http://hive-b.test/v2/models/org/x").respond(json=entry("org/x"))

    async def scenario(store: ModelStore, registry: HiveRegistry) -> None:
        for hive_id in ("hive-a", "hive-b"):
            store.connected(registry.get(hive_id))  # type: ignore[arg-type]
        await settled(store)
        results = await store.change("org/x", None, "DELETE", "", {})
        assert [(r.hive_id, r.ok, r.status) for r in results.results] == [("hive-a", True, 200), ("hive-b", False, 409)]
        assert results.results[1].error == {"code": "MODEL_PINNED", "message": "org/x is pinned"}
        assert repos(store) == {"org/x": ["hive-b"]}  # asked again at once where it changed

    with_store(scenario)


@respx.mock
def test_a_list_that_fails_is_asked_for_again() -> None:
    failing = {"error": {"code": "BUSY", "message": "later"}}
    route = respx.get("http://hive-a.test/v2/models")
    route.side_effect = [
        httpx.Response(500, json=failing),
        httpx.Response(200, json={"not": "a list"}),
        httpx.Response(200, json=listing("hive-a", entry("org/x"))),
    ]

    async def scenario(store: ModelStore, registry: HiveRegistry) -> None:
        store.connected(registry.get("hive-a"))  # type: ignore[arg-type]
        await settled(store)
        assert route.call_count == 3 and repos(store) == {"org/x": ["hive-a"]}

    with_store(scenario)
