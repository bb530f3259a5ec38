"""The disk budget on a real hive and the test hub (README, "The model store"): a download evicts the
least recently used models to fit HIVE_CACHE_MAX_BYTES, never a pinned one or one in use, and fails
before its first byte with INSUFFICIENT_DISK when only those hold the space."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from services.modelserver.hub import Hub
from services.modelserver.hub_repo import Generated
from tests.hive.api.test_models_api import StreamReader, models_of
from tests.hive.hub.support import pull
from tests.hive.store.cache_trees import hf_view
from tests.hub_fixtures import HubSetup
from tests.support import Hold, ServerThread, wait_until

MiB = 1024 * 1024
A, B, C = "org/a", "org/b", "org/c"
# three models of 1 MiB and a few bytes each: two fit in the budget, a third makes one go
BUDGET = 2 * MiB + MiB // 2


@pytest.fixture
def hub_setup() -> HubSetup:
    return HubSetup((A, B, C), hive={"cache_max_bytes": str(BUDGET)})


@pytest.fixture
def commits(hub: Hub) -> dict[str, str]:
    return {
        repo: hub.commit(repo, {"w.safetensors": Generated(MiB, seed=i), "config.json": b"{}"})
        for i, repo in enumerate((A, B, C))
    }


def present(hive: ServerThread) -> set[str]:
    return {m["repo_id"] for m in models_of(hive)}


def test_a_download_evicts_the_least_recently_used_model_to_fit_the_budget(
    hub: Hub, make_hub_hive: Callable[..., ServerThread], commits: dict[str, str], tmp_path: Path
) -> None:
    hive = make_hub_hive(models_dir=tmp_path / "models")
    for repo in (A, B):
        assert pull(hive.url, f"hf:{repo}")[1]["status"] == "complete"
    assert httpx.post(f"{hive.url}/v2/models/{A}/used").status_code == 200  # b is now the least recently used
    # a fleet pull's preflight learns the room the hive can make, evictions counted
    plan = httpx.post(f"{hive.url}/v2/plans", json={"model_ref": f"hf:{C}"}).json()
    used = httpx.get(f"{hive.url}/v2/models").json()["disk"]["used"]
    assert plan["fits"] and plan["free_bytes"] == BUDGET > plan["needed_bytes"] > BUDGET - used, (plan, used)
    with StreamReader(hive.url) as stream:
        _, state, _ = pull(hive.url, f"hf:{C}")
        assert state["status"] == "complete", state
        assert present(hive) == {A, C}
        wait_until(lambda: ("evicted", B, None) in stream.models(), 10, what="the eviction event")
    body = httpx.get(f"{hive.url}/v2/models").json()
    assert body["disk"]["budget"] == BUDGET and body["disk"]["used"] <= BUDGET
    assert set(hf_view(tmp_path / "models" / "hub")) == {A, C}  # and valid for huggingface_hub
    metrics = httpx.get(f"{hive.url}/metrics").text
    assert "rbee_hive_model_evictions_total 1.0" in metrics and "rbee_hive_models 2.0" in metrics


def test_pinned_and_in_use_models_are_never_evicted_and_the_download_fails_before_a_byte(
    hub: Hub, make_hub_hive: Callable[..., ServerThread], commits: dict[str, str], tmp_path: Path
) -> None:
    hive = make_hub_hive(models_dir=tmp_path / "models")
    for repo in (A, B):
        assert pull(hive.url, f"hf:{repo}")[1]["status"] == "complete"
    assert httpx.put(f"{hive.url}/v2/models/{A}/pin").status_code == 200
    hub.commit(B, {"w.safetensors": Generated(MiB // 4, seed=9)})  # a new commit of b, which a download fills
    with Hold(hive.url):
        running = httpx.post(f"{hive.url}/v2/downloads", json={"model_ref": f"hf:{B}"}).json()
        wait_until(
            lambda: httpx.get(f"{hive.url}/v2/downloads/{running['download_id']}").json()["status"] == "downloading",
            15,
            what="b's download under way",
        )
        plan = httpx.post(f"{hive.url}/v2/plans", json={"model_ref": f"hf:{C}"}).json()
        assert not plan["fits"] and plan["free_bytes"] < plan["needed_bytes"], plan
        calls_before = hub.resolver_calls(C)
        _, state, _ = pull(hive.url, f"hf:{C}")
        assert state["status"] == "failed" and state["error_code"] == "INSUFFICIENT_DISK", state
        message = state["error"]
        assert f"pinned: {A}" in message and f"in use: {B}" in message, message
        assert hub.resolver_calls(C) == calls_before == 0  # not one file of c asked for
        assert present(hive) == {A, B}
        httpx.delete(f"{hive.url}/v2/downloads/{running['download_id']}")
    # unpinned, a is the one that may go (b is the more recently used: its download)
    assert httpx.delete(f"{hive.url}/v2/models/{A}/pin").status_code == 200
    assert pull(hive.url, f"hf:{C}")[1]["status"] == "complete"
    assert present(hive) == {B, C}
