"""A real hive keeps within the hub's resolver quota: it reads `RateLimit` on every answer and waits
out the window before the hub has to refuse it, one quota for all its downloads (net/quota.py).
The test hub's quota here: 8 resolves per 3 s per client address.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from services.modelserver.hub import Hub, HubSwitches
from tests.hive.conftest import MakeHive
from tests.hub_fixtures import HubSetup
from tests.support import wait_until

QUOTA, WINDOW = 8, 3


@pytest.fixture
def hub_setup() -> HubSetup:
    return HubSetup(switches=HubSwitches())


def model(hub: Hub, repo: str, files: int) -> None:
    """A repository of `files` small files, `.gitattributes` among them."""
    hub.add_repo(repo)
    shards = {f"shard-{i:02d}.json": f'{{"repo": "{repo}", "shard": {i}}}\n'.encode() for i in range(files - 1)}
    hub.commit(repo, shards)


def start(hive_url: str, ref: str) -> str:
    """The URL of the new download's state."""
    started = httpx.post(f"{hive_url}/v2/downloads", json={"model_ref": ref}, timeout=10)
    assert started.status_code == 202, started.text
    return f"{hive_url}/v2/downloads/{started.json()['download_id']}"


def state(url: str) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(url, timeout=10).json()
    return result


def finished(url: str, timeout: float = 60) -> dict[str, Any]:
    return wait_until(lambda: (s := state(url))["status"] not in ("queued", "starting", "downloading") and s, timeout)


def refused(hub: Hub) -> int:
    return sum(1 for r in hub.records() if r.status == 429)


def test_a_24_file_model_waits_out_the_window_before_the_hub_refuses(hub: Hub, make_hub_hive: MakeHive) -> None:
    model(hub, "org/many", 24)
    hub.limits.set_quota(QUOTA, window=WINDOW)
    hive = make_hub_hive(max_attempts=1)
    url = start(hive.url, "hf:org/many")
    waiting = wait_until(lambda: (s := state(url))["waiting_reason"] and s, 20, what="a wait in the state")
    assert waiting["waiting_reason"] == "rate limited by the hub (resolvers), r=0" and waiting["waiting_until"]
    final = finished(url)
    assert final["status"] == "complete", final
    assert (final["files_total"], final["files_done"], final["waiting_reason"]) == (24, 24, None)
    assert hub.resolver_calls("org/many") == 24
    assert refused(hub) == 0


def test_two_downloads_at_once_share_one_quota(hub: Hub, make_hub_hive: MakeHive) -> None:
    for repo in ("org/left", "org/right"):
        model(hub, repo, 12)
    hub.limits.set_quota(QUOTA, window=WINDOW)
    hive = make_hub_hive(max_attempts=1)
    urls = [start(hive.url, f"hf:{repo}") for repo in ("org/left", "org/right")]
    finals = [finished(url) for url in urls]
    assert [f["status"] for f in finals] == ["complete", "complete"], finals
    assert hub.resolver_calls() == 24
    assert refused(hub) == 0
