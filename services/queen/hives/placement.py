"""Where the queen starts a download (README, "The queen's API"). Pure: no I/O.

1. A request that names a hive goes there.
2. An `hf:` ref whose revision some healthy hive holds complete (the fleet inventory says so) goes
   there: that hive answers `complete` at once (`present_hive`). Ties: by id.
3. An `hf:` ref — one file or the whole model — whose repository at the same revision
   (`hf:{org}/{repo}@{rev}` or `hf:{repo}@{rev}`, `main` when none is given) already has an active download on some hive
   goes to that hive, so the files of one model started one by one all land on one node. Where
   several hives hold active downloads of it, the one holding most of them (ties: by id).
4. An `hf:` ref some healthy hive holds part of goes to the one holding most of its bytes (`present_hive`).
5. Anything else goes to the least busy healthy hive (`HiveRegistry.least_busy`).

Rule 2 keys on the revision as written: `@main` and a commit hash are different keys even when the
branch points at that commit, since the queen does not ask the hub.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from shared.wire.models import ModelBody, RevisionBody

__all__ = ["holding_hive", "present_hive", "repo_id_of", "repo_key"]

_FILE_MARK = "::file="


def repo_key(model_ref: str) -> str | None:
    """`org/repo@rev` (`repo@rev` for an id without a namespace) of an `hf:` ref (with or without
    `::file=`), `rev` defaulting to `main`; else None.

    Lenient on purpose: the hive validates refs; a key only has to be equal for refs to the same
    repository and revision.
    """
    if not model_ref.startswith("hf:"):
        return None
    repo = model_ref[3:].split(_FILE_MARK, 1)[0]
    name, _, rev = repo.partition("@")
    if name.count("/") > 1 or not all(name.split("/")):
        return None
    return f"{name}@{rev or 'main'}"


def holding_hive(model_ref: str, active: Iterable[tuple[str, str]]) -> str | None:
    """The hive that holds active downloads of `model_ref`'s repository and revision, or None.

    `active` is (hive_id, model_ref) of every download known to be queued or running.
    """
    key = repo_key(model_ref)
    if key is None:
        return None
    counts = Counter(hive_id for hive_id, ref in active if repo_key(ref) == key)
    if not counts:
        return None
    return min(counts, key=lambda hive_id: (-counts[hive_id], hive_id))


def repo_id_of(model_ref: str) -> tuple[str, str] | None:
    """(repo id, revision as written, `main` when none) of an `hf:` ref, else None."""
    key = repo_key(model_ref)
    if key is None:
        return None
    repo_id, _, rev = key.partition("@")
    return repo_id, rev


def _names(revision: RevisionBody, rev: str) -> bool:
    return rev == revision.commit or rev in revision.refs


def present_hive(model_ref: str, holdings: Mapping[str, ModelBody], complete: bool) -> str | None:
    """Among `holdings` (hive_id -> that hive's entry of the ref's repository; the eligible hives only):
    with `complete`, a hive holding the ref's revision complete; else the one holding most of the
    repository's bytes at that revision (all of its bytes when no revision of it is named so). Ties: by id."""
    parsed = repo_id_of(model_ref)
    if parsed is None:
        return None
    rev = parsed[1]
    sizes: dict[str, int] = {}
    for hive_id, model in holdings.items():
        named = [r for r in model.revisions if _names(r, rev)]
        if complete:
            if any(r.complete for r in named):
                sizes[hive_id] = 1
        elif model.size_on_disk > 0:
            sizes[hive_id] = max((r.size_on_disk for r in named), default=model.size_on_disk)
    if not sizes:
        return None
    return min(sizes, key=lambda hive_id: (-sizes[hive_id], hive_id))
