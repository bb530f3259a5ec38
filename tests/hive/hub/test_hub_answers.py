"""Real hives against the test hub answering as huggingface.co does in 2026 (README, "The hub's behaviours").

- a gated repo's tree and revision answer 200 to a caller without access, every LFS digest masked as
  64 `*`: the pull ends `GATED_REPO` before a byte, and its plan says so; with access it completes;
- a small file comes by a relative 307 to `/api/resolve-cache/...` (its git sha1 on that 200's ETag),
  an LFS file by a 302 with no ETag of its own, from a CDN whose ETag is the Xet hash: both verified
  against the hub's digest;
- a repo id without a namespace (`hf:gpt2`) lands in `models--gpt2`, where huggingface_hub finds it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse
from huggingface_hub import snapshot_download

from services.modelserver.hub import Hub
from services.modelserver.hub_repo import Generated, git_blob_sha1
from tests.hive.conftest import MakeHive
from tests.hub_fixtures import LFS_SIZE, REPO, build_repo

GATED = "org/gated-llama"
GRANTED = "hf_granted_0a1b2c3d"
MASK = "*" * 64
FILES: dict[str, bytes | Generated] = {
    "config.json": b'{"hidden": 64}\n',
    "w.safetensors": Generated(LFS_SIZE, seed=5),
}


def pull(base: str, model_ref: str) -> dict[str, Any]:
    """Start a download and follow its stream to the end: its final state."""
    with httpx.Client(base_url=base, timeout=httpx.Timeout(10, read=60)) as client:
        started = client.post("/v2/downloads", json={"model_ref": model_ref})
        assert started.status_code in (200, 202), started.text
        download_id = started.json()["download_id"]
        with connect_sse(client, "GET", f"/v2/downloads/{download_id}/stream") as source:
            for sse in source.iter_sse():
                if sse.event in ("complete", "error", "cancelled"):
                    break
        result: dict[str, Any] = client.get(f"/v2/downloads/{download_id}").json()
        return result


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_a_gated_model_without_access_is_gated_repo_before_any_byte_and_with_access_completes(
    hub: Hub, make_hub_hive: MakeHive, tmp_path: Path
) -> None:
    hub.add_repo(GATED, gated=True)
    commit = hub.commit(GATED, FILES)
    hub.grant(GATED, GRANTED)
    info = httpx.get(f"{hub.url}/api/models/{GATED}/revision/main?blobs=true", timeout=10)
    assert info.status_code == 200 and MASK in info.text  # what the hive is shown: 200, digests masked

    hive = make_hub_hive()
    state = pull(hive.url, f"hf:{GATED}")
    assert state["status"] == "failed" and state["error_code"] == "GATED_REPO", state
    assert f"{hub.url}/{GATED}" in state["error"]  # where access is asked for
    assert hub.cdn.total_bytes_sent() == 0 and state["bytes_downloaded"] == 0
    models = tmp_path / "models-0"
    assert not files_under(models / "hub" / "models--org--gated-llama" / "blobs")
    assert not files_under(models / ".rbee" / "trees")  # a masked listing is never kept

    plan = httpx.post(f"{hive.url}/v2/plans", json={"model_ref": f"hf:{GATED}"}, timeout=10).json()
    assert plan["access_error"]["code"] == "GATED_REPO" and f"{hub.url}/{GATED}" in plan["access_error"]["message"]
    assert plan["commit"] == commit and {f["path"] for f in plan["files"]} >= set(FILES)
    assert all(f["digest"] != MASK for f in plan["files"])  # a mask is never taken for a digest
    assert hub.cdn.total_bytes_sent() == 0

    granted = make_hub_hive(hf_token=GRANTED)
    state = pull(granted.url, f"hf:{GATED}")
    assert state["status"] == "complete" and state["commit"] == commit, state
    snapshot = Path(state["path"])
    lfs = hub.file(GATED, "w.safetensors")
    assert (snapshot / "w.safetensors").resolve().name == lfs.sha256


def test_a_small_file_through_the_resolve_cache_and_an_lfs_file_through_a_302_are_verified(
    hub: Hub, make_hub_hive: MakeHive
) -> None:
    revs = build_repo(hub)
    hive = make_hub_hive()
    small, lfs = hub.file(REPO, "config.json"), hub.file(REPO, "model.safetensors")
    state = pull(hive.url, f"hf:{REPO}::file=config.json")
    assert state["status"] == "complete" and state["commit"] == revs.main, state
    assert Path(state["path"]).resolve().name == git_blob_sha1(small.content())
    assert state["sha256"] == hashlib.sha256(small.content()).hexdigest()
    assert any(r.path.startswith(f"/api/resolve-cache/models/{REPO}/{revs.main}/") for r in hub.records())

    state = pull(hive.url, f"hf:{REPO}::file=model.safetensors")
    assert state["status"] == "complete", state
    assert Path(state["path"]).resolve().name == state["sha256"] == lfs.sha256 != lfs.xet_hash
    assert hub.cdn.wait_idle() and hub.cdn.total_bytes_sent() == 1 + LFS_SIZE  # the one-byte probe, the file

    # each is checked against the hub's digest: damaged bytes under the right headers fail
    hub.switches.damaged.add("tokenizer.json")
    assert pull(hive.url, f"hf:{REPO}::file=tokenizer.json")["error_code"] == "CHECKSUM_MISMATCH"
    blob = hub.file(REPO, "model.safetensors", revs.first)
    assert blob.disk is not None
    with blob.disk.open("r+b") as f:  # the CDN serves damaged bytes under the right headers
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))
    state = pull(hive.url, f"hf:{REPO}@{revs.first}::file=model.safetensors")
    assert state["error_code"] == "CHECKSUM_MISMATCH", state


@pytest.mark.parametrize("whole", [False, True], ids=["one-file", "whole-model"])
def test_a_repo_id_without_a_namespace_lands_in_its_cache_folder(
    hub: Hub, make_hub_hive: MakeHive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whole: bool
) -> None:
    hub.add_repo("gpt2")
    commit = hub.commit("gpt2", FILES)
    hive = make_hub_hive()
    state = pull(hive.url, "hf:gpt2" if whole else "hf:gpt2::file=w.safetensors")
    assert state["status"] == "complete" and state["commit"] == commit, state
    cache = tmp_path / "models-0" / "hub"
    assert (cache / "models--gpt2" / "refs" / "main").read_text() == commit
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    found = Path(snapshot_download("gpt2", cache_dir=cache, local_files_only=True))
    assert found == cache / "models--gpt2" / "snapshots" / commit
    wanted = set(hub.repo("gpt2").commits[commit].files) if whole else {"w.safetensors"}
    assert {str(p.relative_to(found)) for p in found.rglob("*") if p.is_file()} == wanted
    sha = hashlib.sha256((found / "w.safetensors").read_bytes()).hexdigest()
    assert sha == hub.file("gpt2", "w.safetensors").sha256
    if whole:
        assert json.loads((found / "config.json").read_bytes()) == {"hidden": 64}
