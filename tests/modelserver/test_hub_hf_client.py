"""huggingface_hub itself against the test hub (services/modelserver/hub.py), on loopback, offline.

huggingface_hub reads HF_ENDPOINT and HF_HOME when it is imported, so each test runs it in a
subprocess with HF_ENDPOINT at the hub, a temporary HF_HOME and telemetry off; the script prints one
JSON line. The hub's LFS redirects name a Xet hash and a `xet-auth` link, as the real hub's do; the
test hub does not speak Xet's own protocol (CAS), so huggingface_hub runs with HF_HUB_DISABLE_XET=1
and fetches through the redirect, as it does without hf_xet. Written against huggingface_hub 2.4.0
(what pip gave); it only uses the public API and imports the error classes from wherever the
installed version keeps them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.modelserver.hub import Hub
from services.modelserver.hub_repo import git_blob_sha1
from tests.hub_fixtures import REPO, Revisions, build_repo, running_hub

pytest.importorskip("huggingface_hub")

PRELUDE = """
import json, os, sys
import huggingface_hub as hf
try:
    from huggingface_hub.errors import (
        EntryNotFoundError, GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError)
except ImportError:  # older releases
    from huggingface_hub.utils import (
        EntryNotFoundError, GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError)

def error_of(call):
    try:
        call()
    except HfHubHTTPError as exc:
        kinds = [k.__name__ for k in (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError,
                                      EntryNotFoundError) if isinstance(exc, k)]
        return {"kinds": kinds, "status": exc.response.status_code, "message": str(exc)}
    return None
"""


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    with running_hub(tmp_path) as h:
        yield h


@pytest.fixture
def revs(hub: Hub) -> Revisions:
    return build_repo(hub)


def run_hf(hub: Hub, hf_home: Path, script: str, **env: str) -> Any:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    environ.update(
        HF_ENDPOINT=hub.url,
        HF_HOME=str(hf_home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_XET="1",
    )
    environ.update(env)
    code = PRELUDE + textwrap.dedent(script)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=90, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cache_dir(hf_home: Path) -> Path:
    return hf_home / "hub" / f"models--{REPO.replace('/', '--')}"


@pytest.mark.parametrize("small_file_redirect", [False, True], ids=["direct", "resolve-cache-307"])
def test_hf_hub_download_small_and_lfs_files(
    hub: Hub, revs: Revisions, tmp_path: Path, small_file_redirect: bool
) -> None:
    hub.switches.small_file_redirect = small_file_redirect
    home = tmp_path / "hf"
    paths = run_hf(
        hub,
        home,
        f"""
        print(json.dumps([hf.hf_hub_download({REPO!r}, name) for name in ("config.json", "model.safetensors")]))
        """,
    )
    small, lfs = hub.file(REPO, "config.json"), hub.file(REPO, "model.safetensors")
    assert Path(paths[0]).read_bytes() == small.content()
    assert hashlib.sha256(Path(paths[1]).read_bytes()).hexdigest() == lfs.sha256
    cache = cache_dir(home)
    assert Path(paths[0]) == cache / "snapshots" / revs.main / "config.json"
    assert Path(paths[0]).resolve() == cache / "blobs" / git_blob_sha1(small.content())
    assert Path(paths[1]).resolve() == cache / "blobs" / lfs.sha256
    assert (cache / "refs" / "main").read_text() == revs.main
    assert hub.cdn.wait_idle()
    assert hub.cdn.total_bytes_sent() == lfs.size  # the LFS bytes came from the CDN, once
    cached = [r for r in hub.records() if r.path.startswith("/api/resolve-cache/")]
    assert bool(cached) is small_file_redirect


@pytest.mark.parametrize("which", ["main", "first", "pr"])
def test_snapshot_download_at_a_branch_a_commit_and_a_pr(hub: Hub, revs: Revisions, tmp_path: Path, which: str) -> None:
    revision = {"main": "main", "first": revs.first, "pr": "refs/pr/1"}[which]
    commit = {"main": revs.main, "first": revs.first, "pr": revs.pr}[which]
    home = tmp_path / "hf"
    folder = run_hf(hub, home, f"print(json.dumps(hf.snapshot_download({REPO!r}, revision={revision!r})))")
    assert Path(folder) == cache_dir(home) / "snapshots" / commit
    expected = hub.repo(REPO).commits[commit].files
    got = sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())
    assert got == sorted(expected)
    for path, f in expected.items():
        assert hashlib.sha256((Path(folder) / path).read_bytes()).hexdigest() == f.sha256, path


def test_model_info_with_files_metadata(hub: Hub, revs: Revisions, tmp_path: Path) -> None:
    info = run_hf(
        hub,
        tmp_path / "hf",
        f"""
        info = hf.HfApi().model_info({REPO!r}, revision="refs/pr/1", files_metadata=True)
        print(json.dumps({{"id": info.id, "sha": info.sha, "siblings": [
            [s.rfilename, s.size, s.blob_id, s.lfs.sha256 if s.lfs else None] for s in info.siblings]}}))
        """,
    )
    assert info["id"] == REPO and info["sha"] == revs.pr
    files = hub.repo(REPO).commits[revs.pr].files
    assert info["siblings"] == [[p, f.size, f.blob_id, f.sha256 if f.lfs else None] for p, f in sorted(files.items())]


def test_list_repo_tree_recursive_across_pages(hub: Hub, revs: Revisions, tmp_path: Path) -> None:
    entries = run_hf(
        hub,
        tmp_path / "hf",
        f"""
        tree = hf.HfApi().list_repo_tree({REPO!r}, recursive=True)
        print(json.dumps([[e.path, type(e).__name__, getattr(e, "size", None)] for e in tree]))
        """,
    )
    files = hub.repo(REPO).commits[revs.main].files
    assert sorted(e[0] for e in entries if e[1] == "RepoFile") == sorted(files)
    assert {e[0] for e in entries if e[1] == "RepoFolder"} == {"sub", "sub/dir"}
    assert all(e[2] == files[e[0]].size for e in entries if e[1] == "RepoFile")
    pages = [r for r in hub.records() if "/tree/" in r.path]
    assert len(pages) == -(-len(entries) // 2) >= 3  # page size 2: every page was fetched, once
    assert all("cursor=" in r.query for r in pages[1:])


def test_hub_errors_raise_huggingface_hub_error_classes(hub: Hub, revs: Revisions, tmp_path: Path) -> None:
    hub.add_repo("org/gated", gated=True)
    hub.commit("org/gated", {"config.json": b"{}"})
    hub.add_repo("org/private", private=True)
    hub.add_token("hf_valid")
    hub.grant("org/gated", "hf_approved")
    errors = run_hf(
        hub,
        tmp_path / "hf",
        f"""
        dl = hf.hf_hub_download
        out = {{
          "gated-anonymous": error_of(lambda: dl("org/gated", "config.json")),
          "gated-not-approved": error_of(lambda: dl("org/gated", "config.json", token="hf_valid")),
          "gated-approved": error_of(lambda: dl("org/gated", "config.json", token="hf_approved")),
          "missing-anonymous": error_of(lambda: dl("org/nope", "config.json")),
          "missing-with-token": error_of(lambda: dl("org/nope", "config.json", token="hf_valid")),
          "private": error_of(lambda: hf.HfApi().model_info("org/private")),
          "revision": error_of(lambda: dl({REPO!r}, "config.json", revision="no-such-branch")),
          "entry": error_of(lambda: dl({REPO!r}, "no-such-file.json")),
          "tree-entry": error_of(lambda: list(hf.HfApi().list_repo_tree({REPO!r}, path_in_repo="nope"))),
          "bad-token": error_of(lambda: hf.HfApi().model_info({REPO!r}, token="hf_unknown")),
        }}
        print(json.dumps(out))
        """,
    )
    assert errors["gated-anonymous"]["kinds"] == ["GatedRepoError", "RepositoryNotFoundError"]
    assert errors["gated-anonymous"]["status"] == 401
    assert errors["gated-not-approved"]["status"] == 403
    assert "GatedRepoError" in errors["gated-not-approved"]["kinds"]
    assert f"{hub.url}/org/gated" in errors["gated-not-approved"]["message"]  # where to ask for access
    assert errors["gated-approved"] is None
    assert errors["missing-anonymous"]["kinds"] == ["RepositoryNotFoundError"]
    assert errors["missing-anonymous"]["status"] == 401
    assert errors["missing-with-token"]["status"] == 404
    assert errors["private"]["kinds"] == ["RepositoryNotFoundError"]
    assert errors["revision"]["kinds"] == ["RevisionNotFoundError"]
    assert errors["entry"]["kinds"] == ["EntryNotFoundError"]
    assert errors["tree-entry"]["kinds"] == ["EntryNotFoundError"]
    assert errors["bad-token"]["kinds"] == [] and errors["bad-token"]["status"] == 401
