"""Hugging Face cache folders written directly on disk, laid out as huggingface_hub lays them out:
for the store's tests, which compare what the hive reads with what `scan_cache_dir` reads."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import scan_cache_dir

from services.hive.cache.layout import repo_folder

__all__ = ["View", "commit_of", "hf_view", "hive_view", "write_repo"]


def commit_of(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


def write_repo(
    hub: Path, repo_id: str, revisions: Mapping[str, Mapping[str, bytes]], refs: Mapping[str, str] | None = None
) -> Path:
    """`revisions`: commit -> {path: content}; a blob is named by its content's sha256, so equal files of
    two revisions share one. `refs`: name (`main`, `refs/pr/1`) -> commit."""
    root = hub / repo_folder(repo_id)
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "snapshots").mkdir(exist_ok=True)
    for commit, files in revisions.items():
        for path, content in files.items():
            blob = root / "blobs" / hashlib.sha256(content).hexdigest()
            if not blob.exists():
                blob.write_bytes(content)
            link = root / "snapshots" / commit / path
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
        (root / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    for name, commit in (refs or {}).items():
        ref = root / "refs" / name
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)
    return root


View = dict[str, tuple[int, dict[str, tuple[tuple[str, ...], int, int]]]]


def hf_view(hub: Path) -> View:
    """What huggingface_hub's scan_cache_dir reads there: repo -> (size, commit -> (refs, files, size));
    it must read it without a warning."""
    info = scan_cache_dir(hub)
    assert not info.warnings, info.warnings
    return {
        repo.repo_id: (
            repo.size_on_disk,
            {r.commit_hash: (tuple(sorted(r.refs)), len(r.files), r.size_on_disk) for r in repo.revisions},
        )
        for repo in info.repos
        if repo.repo_type == "model"
    }


def hive_view(models: list[dict[str, Any]]) -> View:
    """The same of a hive's `GET /v2/models` `models`."""
    return {
        m["repo_id"]: (
            m["size_on_disk"],
            {r["commit"]: (tuple(r["refs"]), r["files"], r["size_on_disk"]) for r in m["revisions"]},
        )
        for m in models
    }
