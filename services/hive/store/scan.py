"""Reading the Hugging Face cache under `{models}/hub` as huggingface_hub's `scan_cache_dir` reads it
(README, "The model store"): `scan_repo` reads one model's folder into a `RepoScan`, with the mtime
of each of its folders; `stamp_of` says cheaply whether any changed since (a stat per folder, no
listing); `model_folders` lists the models' folders.

Where huggingface_hub gives up on a repo (a snapshot's link points at no blob, a ref names a commit
with no snapshot, no `snapshots/` at all) and only warns, this reads what is there: the revision with a
missing blob is listed as not complete, a ref to a missing commit is left out, a folder without
snapshots is a model with no revision. So the hive still lists, and can delete, what another tool
left half done; on a cache huggingface_hub reads without warnings both agree exactly.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from services.hive.cache.layout import MODEL_FOLDER_PREFIX, repo_id_of
from services.hive.store.sizes import RepoScan, RevisionScan, repo_size

__all__ = ["Stamp", "model_folders", "scan_repo", "stamp_of"]

# what huggingface_hub skips among a repo's snapshots and refs (its FILES_TO_IGNORE)
_IGNORED = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def model_folders(hub: Path) -> dict[str, os.DirEntry[str]]:
    """The models' folders in the cache (`models--*`), by name; datasets and spaces are not ours."""
    try:
        with os.scandir(hub) as entries:
            return {e.name: e for e in entries if e.name.startswith(MODEL_FOLDER_PREFIX) and repo_id_of(e.name)}
    except OSError:
        return {}


Stamp = tuple[tuple[str, int], ...]  # (a folder of the model's, relative; its mtime), sorted


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


def stamp_of(root: Path, stamp: Stamp) -> Stamp:
    """The folders of `stamp` as they are now: equal to it when nobody added or removed a file in any of
    them (a blob, a link at any depth of a snapshot, a ref, a revision), a stat per folder. A new folder
    changes its parent's mtime."""
    base = str(root)
    return tuple((rel, _mtime(os.path.join(base, rel))) for rel, _ in stamp)


def _walk(top: str, base: str, mtimes: dict[str, int]) -> Iterator[tuple[str, list[str]]]:
    """(folder, the names in it that are not folders) for `top` and every folder under it, each folder's
    mtime noted in `mtimes` before it is listed (a change while this reads shows in the stamp). A link
    to a folder is a folder, as huggingface_hub sees it, and is not followed."""
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            mtimes[os.path.relpath(folder, base)] = os.stat(folder).st_mtime_ns
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            mtimes.setdefault(os.path.relpath(folder, base), -1)
            continue
        names = []
        for e in entries:
            if e.is_dir():
                if not e.is_symlink():
                    stack.append(e.path)
            else:
                names.append(e.name)
        yield folder, names


def _refs(refs_dir: str, base: str, mtimes: dict[str, int]) -> dict[str, set[str]]:
    """commit -> the refs naming it (`main`, `refs/pr/1`), the file's text as it is (as huggingface_hub reads it)."""
    by_commit: dict[str, set[str]] = defaultdict(set)
    for folder, names in _walk(refs_dir, base, mtimes):
        for name in names:
            if name in _IGNORED:
                continue
            path = os.path.join(folder, name)
            try:
                with open(path) as f:
                    commit = f.read()
            except (OSError, UnicodeDecodeError):
                continue
            by_commit[commit].add(os.path.relpath(path, refs_dir).replace(os.sep, "/"))
    return by_commit


def _revision(
    snapshot: str, commit: str, refs: set[str], sizes: dict[str, int], mtimes: dict[str, float], seen: dict[str, int]
) -> RevisionScan:
    files = 0
    blobs: set[str] = set()
    broken = False
    for folder, names in _walk(snapshot, os.path.dirname(os.path.dirname(snapshot)), seen):
        for name in names:
            path = os.path.join(folder, name)
            try:  # (a file removed while this reads is a missing one)
                blob = os.path.abspath(os.path.join(folder, os.readlink(path))) if os.path.islink(path) else path
                st = os.stat(blob)
            except OSError:
                broken = True
                continue
            files += 1
            blobs.add(blob)
            if blob not in sizes:
                sizes[blob] = st.st_size
                mtimes[blob] = st.st_mtime
    return RevisionScan(commit, tuple(sorted(refs)), files, frozenset(blobs), broken)


def scan_repo(root: Path) -> RepoScan | None:
    """One model's folder as it is now; None when it is no model's folder (or is gone)."""
    repo_id = repo_id_of(root.name)
    if repo_id is None or not root.is_dir():
        return None
    base = str(root)
    seen = {rel: _mtime(os.path.join(base, rel)) for rel in (".", "blobs", "snapshots")}  # (before reading)
    by_commit = _refs(os.path.join(base, "refs"), base, seen)
    sizes: dict[str, int] = {}
    mtimes: dict[str, float] = {}
    revisions = []
    try:
        with os.scandir(root / "snapshots") as entries:
            snapshots = sorted((e.name, e.path) for e in entries if e.name not in _IGNORED and e.is_dir())
    except OSError:
        snapshots = []
    for commit, path in snapshots:
        revisions.append(_revision(path, commit, by_commit.get(commit, set()), sizes, mtimes, seen))
    last_modified = max(mtimes.values()) if mtimes else seen["."] / 1e9
    stamp = tuple(sorted(seen.items()))
    return RepoScan(repo_id, tuple(revisions), sizes, repo_size(revisions, sizes), last_modified, stamp)
