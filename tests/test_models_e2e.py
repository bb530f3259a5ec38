"""Whole models (`hf:org/repo[@rev]`) on a real hive against the test hub, proved with huggingface_hub.

After the hive pulls a multi-file model, huggingface_hub itself, offline, finds it in
`{HIVE_MODELS_DIR}/hub`: `snapshot_download(..., local_files_only=True)` returns the snapshot with
every file byte-identical to the hub's, `hf_hub_download(..., local_files_only=True)` finds each
file, and `scan_cache_dir` lists the repository without a warning.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse
from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download

from services.modelserver.hub import Hub, HubSwitches
from services.modelserver.hub_repo import Generated
from tests.conftest import hive_factory
from tests.support import ServerThread, wait_until

MiB = 1024 * 1024
REPO = "org/llama"
TERMINAL = {"complete", "error", "cancelled"}
FILES: dict[str, bytes | Generated] = {
    "config.json": b'{"hidden": 64}\n',
    "tokenizer.json": b'{"vocab": ["a", "b", "c"]}\n',
    "model.safetensors.index.json": b'{"weight_map": {}}\n',
    "model-00001-of-00003.safetensors": Generated(3 * MiB + 11, seed=1),
    "model-00002-of-00003.safetensors": Generated(2 * MiB + 5, seed=2),
    "model-00003-of-00003.safetensors": Generated(MiB // 2, seed=3),
    "original/params.json": b'{"dim": 4}\n',
    "README.md": b"# llama\n",
}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    with Hub(tmp_path / "hub-store", cdn_max_unranged_bytes=MiB, switches=HubSwitches(tree_page_size=3)) as h:
        h.add_repo(REPO)
        yield h


@pytest.fixture
def make_hive(tmp_path: Path, hub: Hub) -> Iterator[Callable[..., ServerThread]]:
    with hive_factory(tmp_path, hub.url, range_limit_bytes=MiB) as make:
        yield make


def content(hub: Hub, path: str, revision: str = "main") -> bytes:
    return hub.file(REPO, path, revision).content()


def hub_files(hub: Hub, revision: str = "main") -> dict[str, int]:
    """Every file of the commit as the hub holds it (its own .gitattributes too): path -> size."""
    commit = hub.repo(REPO).resolve(revision)
    assert commit is not None
    return {path: f.size for path, f in commit.files.items()}


def size_of(value: bytes | Generated) -> int:
    return len(value) if isinstance(value, bytes) else value.size


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


def test_a_whole_model_lands_in_the_hf_cache_and_huggingface_hub_loads_it(
    hub: Hub, make_hive: Callable[..., ServerThread], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = hub.commit(REPO, FILES)
    hive = make_hive(model_files_concurrent=3)
    status, state, events = pull(hive.url, f"hf:{REPO}")
    assert status == 202
    assert state["status"] == "complete", state
    listing = hub_files(hub)
    assert set(FILES) < set(listing)
    total = sum(listing.values())
    assert state["total_bytes"] == state["bytes_downloaded"] == total
    assert state["commit"] == commit
    assert (state["files_total"], state["files_done"]) == (len(listing), len(listing))
    assert sorted(f["path"] for f in state["files"]) == sorted(listing)
    assert all(f["status"] == "complete" and f["bytes"] == f["size"] for f in state["files"])
    kinds = [kind for kind, _ in events]
    assert kinds.count("complete") == 1 and kinds[-1] == "complete"
    progress = [data for kind, data in events if kind == "progress"]
    moving = [p for p in progress if p["status"] == "downloading"]
    assert moving and all(p["total"] == total and p["files_total"] == len(listing) for p in moving)
    assert [p["bytes"] for p in progress] == sorted(p["bytes"] for p in progress)
    done = events[-1][1]
    models = tmp_path / "models-0"
    snapshot = models / "hub" / "models--org--llama" / "snapshots" / commit
    assert done["path"] == str(snapshot) and done["files_done"] == len(listing)

    # huggingface_hub, offline, finds every file, byte-identical
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache_dir = models / "hub"
    found = snapshot_download(REPO, cache_dir=cache_dir, local_files_only=True)
    assert Path(found) == snapshot
    for name in listing:
        assert (snapshot / name).read_bytes() == content(hub, name), name
        assert (snapshot / name).is_symlink()
        assert Path(hf_hub_download(REPO, name, cache_dir=cache_dir, local_files_only=True)) == snapshot / name
    info = scan_cache_dir(cache_dir)
    assert info.warnings == []
    (repo,) = info.repos
    assert repo.repo_id == REPO and {r.commit_hash for r in repo.revisions} == {commit}
    assert (models / "hub" / "models--org--llama" / "refs" / "main").read_text() == commit


def test_include_and_exclude_pick_files_and_a_second_request_is_complete_at_once(
    hub: Hub, make_hive: Callable[..., ServerThread]
) -> None:
    commit = hub.commit(REPO, FILES)
    hive = make_hive()
    picked = {"include": ["*.json", "*.safetensors"], "exclude": ["original/*", "*-00003-of-*"]}
    _, state, _ = pull(hive.url, f"hf:{REPO}", **picked)
    assert state["status"] == "complete", state
    expected = {"config.json", "tokenizer.json", "model.safetensors.index.json"} | {
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
    }
    assert {f["path"] for f in state["files"]} == expected
    snapshot = Path(state["path"])
    assert sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if not p.is_dir()) == sorted(expected)
    resolves = hub.resolver_calls()

    status, again, events = pull(hive.url, f"hf:{REPO}", **picked)
    assert status == 200 and again["status"] == "complete" and again["commit"] == commit
    assert again["download_id"] != state["download_id"] and again["files_done"] == len(expected)
    assert [kind for kind, _ in events] == ["complete"]
    assert hub.resolver_calls() == resolves  # one question (the revision API), no file fetched


def test_files_already_in_the_cache_count_as_done_without_a_byte(
    hub: Hub, make_hive: Callable[..., ServerThread]
) -> None:
    hub.commit(REPO, FILES)
    hive = make_hive()
    _, first, _ = pull(hive.url, f"hf:{REPO}", include=["*.json"])
    assert first["status"] == "complete", first
    sent = hub.cdn.total_bytes_sent()
    new = hub.commit(REPO, {"README.md": b"# llama, again\n"})  # main moves; the shards stay the same blobs
    _, state, _ = pull(hive.url, f"hf:{REPO}")
    assert state["status"] == "complete" and state["commit"] == new
    shards = sum(size_of(v) for k, v in FILES.items() if k.endswith(".safetensors"))
    assert hub.cdn.total_bytes_sent() - sent == shards  # the json files were not fetched again


def test_a_revision_and_a_commit_pin_one_commit(hub: Hub, make_hive: Callable[..., ServerThread]) -> None:
    first = hub.commit(REPO, FILES)
    second = hub.commit(REPO, {"config.json": b'{"hidden": 128}\n'})
    hive = make_hive()
    _, at_first, _ = pull(hive.url, f"hf:{REPO}@{first}", include=["config.json"])
    _, at_main, _ = pull(hive.url, f"hf:{REPO}@main", include=["config.json"])
    assert (at_first["commit"], at_main["commit"]) == (first, second)
    assert (Path(at_first["path"]) / "config.json").read_bytes() == b'{"hidden": 64}\n'
    assert (Path(at_main["path"]) / "config.json").read_bytes() == b'{"hidden": 128}\n'


def test_a_selection_matching_nothing_fails_clearly(hub: Hub, make_hive: Callable[..., ServerThread]) -> None:
    hub.commit(REPO, FILES)
    hive = make_hive()
    _, state, _ = pull(hive.url, f"hf:{REPO}", include=["*.gguf"])
    assert state["status"] == "failed" and state["error_code"] == "NOT_FOUND"
    assert "*.gguf" in state["error"]


def test_include_on_a_file_ref_is_refused(hub: Hub, make_hive: Callable[..., ServerThread]) -> None:
    hive = make_hive()
    resp = httpx.post(
        f"{hive.url}/v2/downloads", json={"model_ref": f"hf:{REPO}::file=config.json", "include": ["*"]}
    )
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "INVALID_MODEL_REF"


def test_cancel_stops_every_file_and_removes_their_partials(
    hub: Hub, make_hive: Callable[..., ServerThread], tmp_path: Path
) -> None:
    hub.commit(REPO, FILES)
    hive = make_hive(bandwidth_limit=256 * 1024)
    with httpx.Client(base_url=hive.url, timeout=10) as client:
        download_id = client.post("/v2/downloads", json={"model_ref": f"hf:{REPO}"}).json()["download_id"]
        partials = tmp_path / "models-0" / ".rbee" / "partial"
        wait_until(lambda: any(partials.rglob("*.part")), timeout=30)
        state = client.delete(f"/v2/downloads/{download_id}").json()
        assert state["status"] == "cancelled"
        assert not list(partials.rglob("*.part")) and not list(partials.rglob("*.json"))
        files = client.get(f"/v2/downloads/{download_id}").json()["files"]
        assert {f["status"] for f in files} <= {"complete", "cancelled"}
