"""Reading the Hugging Face cache under `{models}/hub` as huggingface_hub's `scan_cache_dir` reads it
(README, "The model store"): `scan_repo` reads one model's folder into a `RepoScan`, `stamp_of` says
cheaply whether a folder changed since (the mtimes of the folders a change touches), `model_folders`
lists the models' folders.

Where huggingface_hub gives up on a repo (a snapshot's link points at no blob, a ref names a commit
with no snapshot, no `snapshots/` at all) and only warns, this reads what is there: the revision with a
missing blob is listed as not complete, a ref to a missing commit is left out, a folder without
snapshots is a model with no revision. So the hive still lists, and can delete, what another tool
left half done; on a cache huggingface_hub reads without warnings both agree exactly.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from services.hive.cache.layout import MODEL_FOLDER_PREFIX, repo_id_of
from services.hive.store.sizes import RepoScan, RevisionScan, repo_size

__all__ = ["model_folders", "scan_repo", "stamp_of"]

# what huggingface_hub skips among a repo's snapshots and refs (its FILES_TO_IGNORE)
_IGNORED = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def model_folders(hub: Path) -> dict[str, os.DirEntry[str]]:
    """The models' folders in the cache (`models--*`), by name; datasets and spaces are not ours."""
    try:
        with os.scandir(hub) as entries:
            return {e.name: e for e in entries if e.name.startswith(MODEL_FOLDER_PREFIX) and repo_id_of(e.name)}
    except OSError:
        return {}


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


def stamp_of(root: Path) -> tuple[int, ...]:
    """The mtimes of the folder, its `blobs/`, `refs/`, `snapshots/` and each snapshot: a file added
    or removed by anyone (a blob, a link at a snapshot's top, a ref, a revision) changes one of them.
    (A link added deep inside a snapshot whose blob was already there is seen at the next change.)"""
    base = str(root)
    stamp = [_mtime(base), _mtime(f"{base}/blobs"), _mtime(f"{base}/refs"), _mtime(f"{base}/snapshots")]
    try:
        with os.scandir(f"{base}/snapshots") as entries:
            stamp.extend(sorted(e.stat(follow_symlinks=False).st_mtime_ns for e in entries))
    except OSError:
        pass
    return tuple(stamp)


def _refs(refs_dir: Path) -> dict[str, set[str]]:
    """commit -> the refs naming it (`main`, `refs/pr/1`), the file's text as it is (as huggingface_hub reads it)."""
    by_commit: dict[str, set[str]] = defaultdict(set)
    for dirpath, _dirs, names in os.walk(refs_dir):
        for name in names:
            if name in _IGNORED:
                continue
            path = os.path.join(dirpath, name)
            try:
                with open(path) as f:
                    commit = f.read()
            except (OSError, UnicodeDecodeError):
                continue
            by_commit[commit].add(os.path.relpath(path, refs_dir).replace(os.sep, "/"))
    return by_commit


def _revision(snapshot: str, commit: str, refs: set[str], sizes: dict[str, int], mtimes: list[float]) -> RevisionScan:
    files = 0
    blobs: set[str] = set()
    broken = False
    for dirpath, _dirs, names in os.walk(snapshot):  # (a link to a folder is a folder, as huggingface_hub sees it)
        for name in names:
            path = os.path.join(dirpath, name)
            try:  # (a file removed while this reads is a missing one)
                blob = os.path.abspath(os.path.join(dirpath, os.readlink(path))) if os.path.islink(path) else path
                st = os.stat(blob)
            except OSError:
                broken = True
                continue
            files += 1
            blobs.add(blob)
            if blob not in sizes:
                sizes[blob] = st.st_size
                mtimes.append(st.st_mtime)
    return RevisionScan(commit, tuple(sorted(refs)), files, frozenset(blobs), broken)


def scan_repo(root: Path) -> RepoScan | None:
    """One model's folder as it is now; None when it is no model's folder (or is gone)."""
    repo_id = repo_id_of(root.name)
    if repo_id is None or not root.is_dir():
        return None
    stamp = stamp_of(root)
    by_commit = _refs(root / "refs")
    sizes: dict[str, int] = {}
    mtimes: list[float] = []
    revisions = []
    try:
        with os.scandir(root / "snapshots") as entries:
            snapshots = sorted((e.name, e.path) for e in entries if e.name not in _IGNORED and e.is_dir())
    except OSError:
        snapshots = []
    for commit, path in snapshots:
        revisions.append(_revision(path, commit, by_commit.get(commit, set()), sizes, mtimes))
    last_modified = max(mtimes) if mtimes else stamp[0] / 1e9
    return RepoScan(repo_id, tuple(revisions), sizes, repo_size(revisions, sizes), last_modified, stamp)
