"""What one model's folder holds, and its sizes counted as huggingface_hub's `scan_cache_dir` counts
them (README, "The model store"). Pure: the folder is read by `scan.py`.

- a revision is a `snapshots/{commit}` folder; its files are every entry under it that is not a folder;
- a file's blob is where its link's first hop points (the file itself when it is no link);
- a revision's size is the sum of its distinct blobs; a repo's, of the blobs any revision uses, each
  once: a blob no revision uses (left over, or a partial's) is not counted, as huggingface_hub does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["RepoScan", "RevisionScan", "blobs_only_in", "repo_size", "revision_size"]


@dataclass(frozen=True, slots=True)
class RevisionScan:
    commit: str
    refs: tuple[str, ...]  # the refs naming this commit, sorted
    files: int
    blobs: frozenset[str]  # the blobs its files point at (absolute paths)
    broken: bool = False  # a file points at no blob (huggingface_hub would call the repo corrupted)


@dataclass(frozen=True, slots=True)
class RepoScan:
    repo_id: str
    revisions: tuple[RevisionScan, ...]
    blob_sizes: Mapping[str, int]  # every blob a revision points at -> its size in bytes
    size_on_disk: int  # `repo_size` of its revisions
    last_modified: float  # the newest blob's mtime, else the folder's (huggingface_hub's last_modified)
    stamp: tuple[tuple[str, int], ...]  # its folders' mtimes when read (scan.stamp_of): another means read it again

    def revision(self, commit: str) -> RevisionScan | None:
        return next((r for r in self.revisions if r.commit == commit), None)


def revision_size(revision: RevisionScan, blob_sizes: Mapping[str, int]) -> int:
    return sum(blob_sizes.get(blob, 0) for blob in revision.blobs)


def repo_size(revisions: Iterable[RevisionScan], blob_sizes: Mapping[str, int]) -> int:
    used: set[str] = set()
    for revision in revisions:
        used |= revision.blobs
    return sum(blob_sizes.get(blob, 0) for blob in used)


def blobs_only_in(revisions: Iterable[RevisionScan], commit: str) -> frozenset[str]:
    """The blobs of `commit` that no other revision uses: what deleting that revision frees."""
    mine: frozenset[str] = frozenset()
    others: set[str] = set()
    for revision in revisions:
        if revision.commit == commit:
            mine = revision.blobs
        else:
            others |= revision.blobs
    return mine - others
