"""The cache layout, read back by huggingface_hub itself (offline) and by scan_cache_dir."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from services.hive.cache.repo import RepoCache, repo_folder

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def put(cache: RepoCache, commit: str, path: str, content: bytes) -> str:
    """Store `content` as a blob (sha256 name) and link it into the commit's snapshot."""
    digest = hashlib.sha256(content).hexdigest()
    blob = cache.blob(digest)
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(content)
    cache.link(commit, path, digest)
    return digest


def test_layout_names() -> None:
    assert repo_folder("meta-llama/Llama-3-8B") == "models--meta-llama--Llama-3-8B"
    cache = RepoCache(Path("/m"), "org/repo")
    assert cache.root == Path("/m/hub/models--org--repo")
    assert cache.snapshot_file(COMMIT_A, "sub/x.json") == Path(
        f"/m/hub/models--org--repo/snapshots/{COMMIT_A}/sub/x.json"
    )
    assert cache.ref("refs/pr/1") == Path("/m/hub/models--org--repo/refs/refs/pr/1")
    assert not cache.partial("c" * 64).is_relative_to(Path("/m/hub"))
    for bad in ("../x", "/etc/passwd", "a//b", "./a"):
        with pytest.raises(ValueError):
            cache.snapshot_file(COMMIT_A, bad)
    with pytest.raises(ValueError):
        cache.blob("../../etc")
    with pytest.raises(ValueError):
        cache.snapshot_dir("main")


def test_links_are_relative_atomic_and_shared(tmp_path: Path) -> None:
    cache = RepoCache(tmp_path, "org/repo")
    digest = put(cache, COMMIT_A, "sub/dir/w.bin", b"weights")
    link = cache.snapshot_file(COMMIT_A, "sub/dir/w.bin")
    assert os.readlink(link) == f"../../../../blobs/{digest}"
    assert cache.has(COMMIT_A, "sub/dir/w.bin", digest)
    cache.link(COMMIT_B, "sub/dir/w.bin", digest)  # the same blob in a second commit: stored once
    assert len(list((cache.root / "blobs").iterdir())) == 1
    cache.link(COMMIT_A, "sub/dir/w.bin", digest)  # relinking replaces, never fails or leaves a temp
    assert sorted(p.name for p in link.parent.iterdir()) == ["w.bin"]
    assert not cache.has(COMMIT_A, "missing.bin", digest)


def test_refs(tmp_path: Path) -> None:
    cache = RepoCache(tmp_path, "org/repo")
    assert cache.read_ref("main") is None
    cache.write_ref("main", COMMIT_A)
    cache.write_ref("refs/pr/1", COMMIT_B)
    cache.write_ref(COMMIT_A, COMMIT_A)  # a commit as revision has no ref file
    assert cache.read_ref("main") == COMMIT_A and cache.read_ref("refs/pr/1") == COMMIT_B
    assert not cache.ref(COMMIT_A).exists()
    cache.write_ref("main", COMMIT_B)
    assert cache.ref("main").read_text() == COMMIT_B


def test_huggingface_hub_loads_it_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = pytest.importorskip("huggingface_hub", reason="huggingface_hub is not installed")
    cache = RepoCache(tmp_path, "org/repo")
    files = {"config.json": b'{"a": 1}', "model.safetensors": b"\x00" * 1000, "sub/tok.json": b"{}"}
    for path, content in files.items():
        put(cache, COMMIT_A, path, content)
    cache.write_ref("main", COMMIT_A)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_dir = str(tmp_path / "hub")
    snapshot = hub.snapshot_download("org/repo", cache_dir=hub_dir, local_files_only=True)
    assert Path(snapshot) == cache.snapshot_dir(COMMIT_A)
    for path, content in files.items():
        assert (Path(snapshot) / path).read_bytes() == content
        found = hub.hf_hub_download("org/repo", path, cache_dir=hub_dir, local_files_only=True)
        assert Path(found).read_bytes() == content
    report = hub.scan_cache_dir(hub_dir)
    assert report.warnings == []
    assert [r.repo_id for r in report.repos] == ["org/repo"]
    assert {f.file_name for r in report.repos for rev in r.revisions for f in rev.files} == {
        "config.json",
        "model.safetensors",
        "tok.json",
    }
