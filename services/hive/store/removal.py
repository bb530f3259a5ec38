"""Deleting from the Hugging Face cache so that it stays valid for huggingface_hub if the hive is
killed at any point (README, "The model store"):

- a whole model: its folder is renamed into `{models}/.rbee/trash/` (one atomic step: the cache has it
  or has not), then removed there; what a kill leaves in the trash goes at the next start;
- one revision: first the refs naming it, then its snapshot (renamed into the trash, then removed),
  then the blobs no other revision uses. After each step the cache is one huggingface_hub reads
  without warnings: a snapshot without its ref, or a blob no snapshot links, is valid.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import structlog

from services.hive.store.sizes import RepoScan, blobs_only_in

__all__ = ["empty_trash", "remove_repo", "remove_revision"]

log = structlog.get_logger()


def _to_trash(path: Path, trash: Path) -> Path:
    """Move `path` out of the cache in one rename; where it is now."""
    trash.mkdir(parents=True, exist_ok=True)
    target = trash / f"{path.name}.{uuid.uuid4().hex[:12]}"
    try:
        os.replace(path, target)
    except OSError as exc:  # another filesystem than the trash's (a hub/ mounted apart): remove in place
        log.warning("model_trash_unavailable", path=str(path), error=str(exc))
        return path
    return target


def remove_repo(root: Path, trash: Path) -> None:
    """The whole folder of a model: out of the cache at once, then its files."""
    if not root.exists():
        return
    moved = _to_trash(root, trash)
    shutil.rmtree(moved, ignore_errors=True)


def remove_revision(root: Path, scan: RepoScan, commit: str, trash: Path) -> None:
    """One revision: its refs, its snapshot, then the blobs only it used (inside the model's folder)."""
    revision = scan.revision(commit)
    if revision is None:
        return
    for name in revision.refs:
        ref = root / "refs" / name
        try:
            if ref.read_text() == commit:  # (still: a ref moved meanwhile stays)
                ref.unlink()
        except OSError:
            pass
    snapshot = root / "snapshots" / commit
    if snapshot.exists():
        shutil.rmtree(_to_trash(snapshot, trash), ignore_errors=True)
    blobs = (root / "blobs").resolve()
    for blob in blobs_only_in(scan.revisions, commit):
        path = Path(blob)
        if path.parent.resolve() == blobs:  # never a file outside the model's own blobs
            path.unlink(missing_ok=True)


def empty_trash(trash: Path) -> int:
    """Remove what a killed deletion left in the trash; how many entries went."""
    try:
        entries = list(trash.iterdir())
    except OSError:
        return 0
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    return len(entries)
