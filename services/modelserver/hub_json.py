"""The JSON of the test hub's metadata API, shaped as huggingface_hub's `ModelInfo` and `RepoFile` parse it.

No HTTP here. `model_info` is ``GET /api/models/{repo}/revision/{rev}``: ``id``, ``sha``, ``siblings``
(``rfilename``; with ``blobs`` also ``size``, ``blobId`` and for LFS files ``lfs: {sha256, size,
pointerSize}``). `tree_entries` is ``GET /api/models/{repo}/tree/{rev}[/{path}]``: files
``{type: "file", oid, size, path, lfs?: {oid, size, pointerSize}}`` and folders ``{type: "directory",
oid, size: 0, path}``, folders before their content, sorted by path. `page` cuts a listing into pages
with an opaque cursor, as the hub's ``Link: <...&cursor=...>; rel="next"`` does.

An LFS file's tree entry carries its ``xetHash`` too (the hub's files are Xet-backed). `masked`: what a
caller without access to a gated repo is shown, every LFS sha256 and Xet hash as 64 ``*`` (`MASKED`).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

from services.modelserver.hub_repo import Commit, HubFile, HubRepo

MASKED = "*" * 64


def iso_date(unix: float) -> str:
    """The hub's timestamp format, e.g. 2024-05-01T12:00:00.000Z."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(unix * 1000) % 1000:03d}Z"


def model_info(repo: HubRepo, commit: Commit, blobs: bool, masked: bool = False) -> dict[str, Any]:
    siblings: list[dict[str, Any]] = []
    for path in sorted(commit.files):
        f = commit.files[path]
        sibling: dict[str, Any] = {"rfilename": path}
        if blobs:
            sibling.update(size=f.size, blobId=f.blob_id)
            if f.lfs:
                sha256 = MASKED if masked else f.sha256
                sibling["lfs"] = {"sha256": sha256, "size": f.size, "pointerSize": f.pointer_size}
        siblings.append(sibling)
    first = min(c.date for c in repo.commits.values())
    return {
        "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
        "id": repo.repo_id,
        "modelId": repo.repo_id,
        "author": repo.repo_id.split("/")[0],
        "sha": commit.sha,
        "lastModified": iso_date(commit.date),
        "createdAt": iso_date(first),
        "private": repo.private,
        "gated": "manual" if repo.gated else False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "library_name": None,
        "siblings": siblings,
    }


def _file_entry(f: HubFile, masked: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path}
    if f.lfs:
        entry["lfs"] = {"oid": MASKED if masked else f.sha256, "size": f.size, "pointerSize": f.pointer_size}
        entry["xetHash"] = MASKED if masked else f.xet_hash
    return entry


def _folder_oid(commit: Commit, folder: str) -> str:
    digest = hashlib.sha1(f"tree {folder}\0".encode())
    for path in sorted(p for p in commit.files if p.startswith(folder + "/")):
        digest.update(f"{path}\0{commit.files[path].blob_id}\n".encode())
    return digest.hexdigest()


def tree_entries(commit: Commit, path: str, recursive: bool, masked: bool = False) -> list[dict[str, Any]] | None:
    """The listing of folder `path` ("" = root), or None if no such folder exists in the commit."""
    prefix = f"{path.strip('/')}/" if path.strip("/") else ""
    under = sorted(p for p in commit.files if p.startswith(prefix))
    if prefix and not under:
        return None
    folders: set[str] = set()
    files: list[str] = []
    for p in under:
        parts = p[len(prefix) :].split("/")
        depth = len(parts) if recursive else 1
        for i in range(1, min(depth, len(parts) - 1) + 1):
            folders.add(prefix + "/".join(parts[:i]))
        if recursive or len(parts) == 1:
            files.append(p)
    entries = [{"type": "directory", "oid": _folder_oid(commit, d), "size": 0, "path": d} for d in folders]
    entries += [_file_entry(commit.files[p], masked) for p in files]
    entries.sort(key=lambda e: (str(e["path"]).split("/")[:-1], e["type"] != "directory", e["path"]))
    return entries


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f'{{"file_offset":{offset}}}'.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return max(0, int(raw.split(":", 1)[1].rstrip("}")))
    except (ValueError, IndexError):
        return 0


def page(entries: list[dict[str, Any]], cursor: str | None, size: int) -> tuple[list[dict[str, Any]], str | None]:
    """One page of `entries` from `cursor`, and the cursor of the next page (None on the last)."""
    start = decode_cursor(cursor)
    stop = start + max(1, size)
    return entries[start:stop], encode_cursor(stop) if stop < len(entries) else None
