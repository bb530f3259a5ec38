"""Whole models (`hf:org/repo[@rev]`) on a real hive against the test hub, proved with huggingface_hub.

After the hive pulls a multi-file model, huggingface_hub itself, offline, finds it in
`{HIVE_MODELS_DIR}/hub`: `snapshot_download(..., local_files_only=True)` returns the snapshot with
every file byte-identical to the hub's, `hf_hub_download(..., local_files_only=True)` finds each
file, and `scan_cache_dir` lists the repository without a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download

from services.modelserver.hub import Hub, HubSwitches
from services.modelserver.hub_repo import Generated
from tests.conftest import hive_factory
from tests.hive.hub.support import pull
from tests.hub_fixtures import HubSetup
from tests.support import ServerThread, ServiceProcess, free_port, wait_until

MiB = 1024 * 1024
REPO = "org/llama"
TERMINAL_STATUSES = {"complete", "failed", "cancelled"}
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
def hub_setup() -> HubSetup:
    return HubSetup(
        (REPO,), cdn_max_unranged_bytes=MiB, switches=HubSwitches(tree_page_size=3), hive={"range_limit_bytes": MiB}
    )


def content(hub: Hub, path: str, revision: str = "main") -> bytes:
    return hub.file(REPO, path, revision).content()


def hub_files(hub: Hub, revision: str = "main") -> dict[str, int]:
    """Every file of the commit as the hub holds it (its own .gitattributes too): path -> size."""
    commit = hub.repo(REPO).resolve(revision)
    assert commit is not None
    return {path: f.size for path, f in commit.files.items()}


def size_of(value: bytes | Generated) -> int:
    return len(value) if isinstance(value, bytes) else value.size


def test_a_whole_model_lands_in_the_hf_cache_and_huggingface_hub_loads_it(
    hub: Hub, make_hub_hive: Callable[..., ServerThread], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = hub.commit(REPO, FILES)
    hive = make_hub_hive(model_files_concurrent=3)
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
    hub: Hub, make_hub_hive: Callable[..., ServerThread]
) -> None:
    commit = hub.commit(REPO, FILES)
    hive = make_hub_hive()
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
    hub: Hub, make_hub_hive: Callable[..., ServerThread]
) -> None:
    hub.commit(REPO, FILES)
    hive = make_hub_hive()
    _, first, _ = pull(hive.url, f"hf:{REPO}", include=["*.json"])
    assert first["status"] == "complete", first
    sent = hub.cdn.total_bytes_sent()
    new = hub.commit(REPO, {"README.md": b"# llama, again\n"})  # main moves; the shards stay the same blobs
    _, state, _ = pull(hive.url, f"hf:{REPO}")
    assert state["status"] == "complete" and state["commit"] == new
    shards = sum(size_of(v) for k, v in FILES.items() if k.endswith(".safetensors"))
    assert hub.cdn.total_bytes_sent() - sent == shards  # the json files were not fetched again


def test_a_revision_and_a_commit_pin_one_commit(hub: Hub, make_hub_hive: Callable[..., ServerThread]) -> None:
    first = hub.commit(REPO, FILES)
    second = hub.commit(REPO, {"config.json": b'{"hidden": 128}\n'})
    hive = make_hub_hive()
    _, at_first, _ = pull(hive.url, f"hf:{REPO}@{first}", include=["config.json"])
    _, at_main, _ = pull(hive.url, f"hf:{REPO}@main", include=["config.json"])
    assert (at_first["commit"], at_main["commit"]) == (first, second)
    assert (Path(at_first["path"]) / "config.json").read_bytes() == b'{"hidden": 64}\n'
    assert (Path(at_main["path"]) / "config.json").read_bytes() == b'{"hidden": 128}\n'


def test_a_selection_matching_nothing_fails_clearly(hub: Hub, make_hub_hive: Callable[..., ServerThread]) -> None:
    hub.commit(REPO, FILES)
    hive = make_hub_hive()
    _, state, _ = pull(hive.url, f"hf:{REPO}", include=["*.gguf"])
    assert state["status"] == "failed" and state["error_code"] == "NOT_FOUND"
    assert "*.gguf" in state["error"]


def test_include_on_a_file_ref_is_refused(hub: Hub, make_hub_hive: Callable[..., ServerThread]) -> None:
    hive = make_hub_hive()
    resp = httpx.post(f"{hive.url}/v2/downloads", json={"model_ref": f"hf:{REPO}::file=config.json", "include": ["*"]})
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "INVALID_MODEL_REF"


def test_cancel_stops_every_file_and_removes_their_partials(
    hub: Hub, make_hub_hive: Callable[..., ServerThread], tmp_path: Path
) -> None:
    hub.commit(REPO, FILES)
    hive = make_hub_hive(bandwidth_limit=256 * 1024)
    with httpx.Client(base_url=hive.url, timeout=10) as client:
        download_id = client.post("/v2/downloads", json={"model_ref": f"hf:{REPO}"}).json()["download_id"]
        partials = tmp_path / "models-0" / ".rbee" / "partial"
        wait_until(lambda: any(partials.rglob("*.part")), timeout=30)
        state = client.delete(f"/v2/downloads/{download_id}").json()
        assert state["status"] == "cancelled"
        assert not list(partials.rglob("*.part")) and not list(partials.rglob("*.json"))
        files = client.get(f"/v2/downloads/{download_id}").json()["files"]
        assert {f["status"] for f in files} <= {"complete", "cancelled"}


def test_the_same_model_asked_again_while_running_joins_it(
    hub: Hub, make_hub_hive: Callable[..., ServerThread]
) -> None:
    hub.commit(REPO, FILES)
    hive = make_hub_hive(bandwidth_limit=MiB)
    with httpx.Client(base_url=hive.url, timeout=10) as client:
        first = client.post("/v2/downloads", json={"model_ref": f"hf:{REPO}"})
        again = client.post("/v2/downloads", json={"model_ref": f"hf:{REPO}"})
        other = client.post("/v2/downloads", json={"model_ref": f"hf:{REPO}", "include": ["*.json"]})
        assert (first.status_code, again.status_code, other.status_code) == (202, 200, 202)
        assert again.json()["download_id"] == first.json()["download_id"] != other.json()["download_id"]
        client.put("/v2/settings/bandwidth", json={"bandwidth_limit": 0})
        for download_id in (first.json()["download_id"], other.json()["download_id"]):
            wait_until(
                lambda d=download_id: client.get(f"/v2/downloads/{d}").json()["status"] == "complete", timeout=60
            )
    # the two downloads shared their json blobs: each was fetched from the hub once
    for name in ("config.json", "tokenizer.json"):
        fetched = [r for r in hub.records() if r.path.endswith(f"/{name}") and "/resolve/" in r.path]
        assert len(fetched) == 1, [(r.headers.get("range"), getattr(r, "status", None), r.client) for r in fetched]


def test_a_file_that_fails_fails_the_model_with_its_path_and_code(
    hub: Hub, make_hub_hive: Callable[..., ServerThread], tmp_path: Path
) -> None:
    hub.commit(REPO, FILES)
    hub.switches.damaged.add("tokenizer.json")  # served with a flipped byte under the right ETag
    hive = make_hub_hive()
    _, state, events = pull(hive.url, f"hf:{REPO}")
    assert state["status"] == "failed" and state["error_code"] == "CHECKSUM_MISMATCH", state
    assert "tokenizer.json" in state["error"]
    assert [kind for kind, _ in events].count("error") == 1
    models = tmp_path / "models-0"
    assert not list((models / ".rbee" / "partial").rglob("*.part"))
    snapshot = models / "hub" / "models--org--llama" / "snapshots" / state["commit"]
    assert not (snapshot / "tokenizer.json").exists()  # bytes that fail the digest never reach the cache
    assert not (models / "hub" / "models--org--llama" / "refs" / "main").exists()  # no half snapshot named


def test_a_gated_repo_fails_before_any_file_starts(hub: Hub, make_hub_hive: Callable[..., ServerThread]) -> None:
    hub.commit(REPO, FILES)
    hub.repo(REPO).gated = True
    hive = make_hub_hive()
    _, state, _ = pull(hive.url, f"hf:{REPO}")
    assert state["status"] == "failed" and state["error_code"] == "GATED_REPO", state
    assert f"{hub.url}/{REPO}" in state["error"]
    assert hub.cdn.total_bytes_sent() == 0 and state["bytes_downloaded"] == 0


def test_a_model_bigger_than_the_free_disk_fails_before_the_first_byte(
    hub: Hub, make_hub_hive: Callable[..., ServerThread], tmpfs: Path
) -> None:
    hub.commit(REPO, FILES)  # ~5.5 MiB on a 3 MiB disk
    hive = make_hub_hive(models_dir=tmpfs / "models")
    _, state, _ = pull(hive.url, f"hf:{REPO}")
    assert state["status"] == "failed" and state["error_code"] == "INSUFFICIENT_DISK", state
    assert hub.cdn.total_bytes_sent() == 0


def test_when_the_hub_cannot_be_asked_a_model_on_disk_is_used_and_the_state_says_so(
    tmp_path: Path, make_hub_hive: Callable[..., ServerThread], hub: Hub
) -> None:
    commit = hub.commit(REPO, FILES)
    models = tmp_path / "offline-models"
    hive = make_hub_hive(models_dir=models)
    _, state, _ = pull(hive.url, f"hf:{REPO}", include=["*.json"])
    assert state["status"] == "complete"
    hive.stop()
    with hive_factory(tmp_path, f"http://127.0.0.1:{free_port()}", connect_timeout=1.0) as make_offline:
        offline = make_offline(models_dir=models)
        status, again, _ = pull(offline.url, f"hf:{REPO}", include=["*.json"])
    assert status == 200 and again["status"] == "complete" and again["commit"] == commit
    assert "could not be asked" in again["warning"]


def test_after_kill_9_the_model_resumes_file_by_file(hub: Hub, tmp_path: Path) -> None:
    commit = hub.commit(REPO, FILES)
    models = tmp_path / "models-k"
    port = free_port()
    env = {
        "HIVE_ID": "hive-k",
        "HIVE_MODELS_DIR": str(models),
        "HF_ENDPOINT": hub.url,
        "HIVE_RANGE_LIMIT_BYTES": str(MiB),
        "HIVE_PROGRESS_INTERVAL": "0.05",
        "HIVE_RETRY_BASE_DELAY": "0.01",
        "HIVE_RETRY_MAX_DELAY": "0.05",
        "HIVE_MODEL_FILES_CONCURRENT": "2",
        "HIVE_SEGMENTS": "1",
        "HIVE_WRITE_BATCH_BYTES": str(64 * 1024),  # so the partials hold what came before the kill
    }
    hive = ServiceProcess("services.hive.main", port, {**env, "HIVE_BANDWIDTH_LIMIT": str(2 * MiB)}, tmp_path / "k.log")
    hive.start()
    try:
        with httpx.Client(base_url=hive.url, timeout=10) as client:
            download_id = client.post("/v2/downloads", json={"model_ref": f"hf:{REPO}"}).json()["download_id"]

            def state() -> dict[str, Any]:
                return dict(client.get(f"/v2/downloads/{download_id}").json())

            partial_dir = models / ".rbee" / "partial"

            def on_disk() -> int:
                return max((p.stat().st_size for p in partial_dir.rglob("*.part")), default=0)

            wait_until(lambda: (state()["files_done"] or 0) >= 1 and on_disk() > 256 * 1024, timeout=30)
            before = state()
        hive.kill()
        asked_before = len(hub.records())
        partials = list((models / ".rbee" / "partial").rglob("*.part"))
        assert partials, "a file was on its way at the kill"
        done_before = [f["path"] for f in before["files"] if f["status"] == "complete"]
        hive = ServiceProcess("services.hive.main", port, env, tmp_path / "k.log").start()
        with httpx.Client(base_url=hive.url, timeout=10) as client:
            wait_until(lambda: state()["status"] in TERMINAL_STATUSES, timeout=60, what="the resumed model to end")
            final = state()
    finally:
        hive.stop()
    assert final["status"] == "complete", final
    assert final["commit"] == commit and final["files_done"] == final["files_total"]
    assert "download_resuming_partial" in (tmp_path / "k.log").read_text()
    assert done_before
    after = hub.records()[asked_before:]
    for path in done_before:  # a file in place before the kill is not fetched again
        assert not [r for r in after if r.path.endswith(f"/{path}")], path
    resumed = [r for r in after if "/resolve/" in r.path and r.headers.get("range", "bytes=0-") != "bytes=0-"]
    assert resumed, [(r.path.rsplit("/", 1)[-1], r.headers.get("range")) for r in after]
    snapshot = Path(final["path"])
    found = snapshot_download(REPO, cache_dir=models / "hub", local_files_only=True)
    assert Path(found) == snapshot
    for name in hub_files(hub):
        assert (snapshot / name).read_bytes() == content(hub, name), name
    assert not list((models / ".rbee" / "partial").rglob("*.part"))
