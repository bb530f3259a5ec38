"""A real hive given URLs rather than `hf:` refs: a hub `resolve` address pasted as it is, and a plain
URL whose server's ETag looks like a sha256 but is not one (README, "Model refs" and "The hub's
behaviours"). The test CDN's ETag is a Xet-like hash, 64 hex digits that are not the sha256.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.modelserver.cdn import cdn_etag
from services.modelserver.hub import Hub, HubSwitches
from services.modelserver.hub_repo import Generated
from services.modelserver.server import ModelServer
from tests import layout
from tests.hive.conftest import MakeHive
from tests.hive.hub.support import pull
from tests.hub_fixtures import HubSetup

MiB = 1024 * 1024
REPO = "org/model"


@pytest.fixture
def hub_setup() -> HubSetup:
    return HubSetup((REPO,), switches=HubSwitches())


def test_a_pasted_resolve_url_is_the_hub_file_verified_and_cached_as_hf_files_are(
    hub: Hub, make_hub_hive: MakeHive, tmp_path: Path
) -> None:
    commit = hub.commit(REPO, {"config.json": b'{"hidden": 64}\n', "model.safetensors": Generated(2 * MiB + 3, 5)})
    xet = cdn_etag(hub.file(REPO, "model.safetensors")).strip('"')
    assert len(xet) == 64 and xet != hub.file(REPO, "model.safetensors").sha256  # what the CDN's ETag says
    hub.add_token("hf_pasted_secret")
    models = tmp_path / "models"
    hive = make_hub_hive(hf_token="hf_pasted_secret", models_dir=models)
    for path in ("model.safetensors", "config.json"):  # an LFS file behind the CDN, and a small one
        _, state, _ = pull(hive.url, f"{hub.url}/{REPO}/resolve/main/{path}?download=true")
        served = hub.file(REPO, path)
        assert state["status"] == "complete", state
        assert state["sha256"] == served.sha256 and state["commit"] == commit
        assert Path(state["path"]) == layout.snapshot_file(models, commit, path, repo=REPO)
        assert Path(state["path"]).read_bytes() == served.content()
    assert any(r.status in (200, 206) for r in hub.cdn.records())
    assert all("authorization" not in r.headers for r in hub.cdn.records())
    assert all(r.headers.get("authorization") == "Bearer hf_pasted_secret" for r in hub.records())


def test_a_plain_urls_64_hex_etag_is_not_taken_for_its_sha256(tmp_path: Path, make_hub_hive: MakeHive) -> None:
    with ModelServer(tmp_path / "files", etag="xet") as server:
        sha = server.add_file("blobs/weights.bin", MiB)
        hive = make_hub_hive()
        _, state, _ = pull(hive.url, f"{server.url}/blobs/weights.bin")
        assert state["status"] == "complete", state
        assert state["sha256"] == sha
