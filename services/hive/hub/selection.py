"""Which files of a repository a whole-model download takes (`include` / `exclude` globs), and in
which order it fetches them (`fetch_order`). Pure.

The patterns mean what huggingface_hub's `allow_patterns` / `ignore_patterns` mean (its
`filter_repo_objects`): `fnmatch.fnmatchcase` on the whole path, case-sensitive, `*` matching
across `/` (so `*.json` also takes `sub/x.json`), backslashes read as `/`, and a pattern ending in
`/` taking everything below that folder. No include list takes every file; an empty one takes none.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from fnmatch import fnmatchcase
from typing import Protocol, TypeVar

from shared.limits import MAX_PATTERN_LENGTH, MAX_PATTERNS

__all__ = ["MAX_PATTERNS", "MAX_PATTERN_LENGTH", "SMALL_FILE", "fetch_order", "normalize_patterns", "select_paths"]

SMALL_FILE = 16 * 1024 * 1024  # a file under this is fetched before the large ones (see fetch_order)


def normalize_patterns(patterns: Sequence[str] | None) -> tuple[str, ...] | None:
    """The patterns as matched: separators as `/`, a trailing `/` as the folder's contents."""
    if patterns is None:
        return None
    normalized = []
    for pattern in patterns:
        pattern = pattern.replace("\\", "/")
        normalized.append(pattern + "*" if pattern.endswith("/") else pattern)
    return tuple(normalized)


def select_paths(
    paths: Iterable[str], include: Sequence[str] | None = None, exclude: Sequence[str] | None = None
) -> list[str]:
    """The paths that match some `include` pattern (all, without a list) and no `exclude` one, in order."""
    allow, ignore = normalize_patterns(include), normalize_patterns(exclude)
    chosen = []
    for path in paths:
        name = path.replace("\\", "/")
        if allow is not None and not any(fnmatchcase(name, p) for p in allow):
            continue
        if ignore is not None and any(fnmatchcase(name, p) for p in ignore):
            continue
        chosen.append(path)
    return chosen


class Sized(Protocol):
    @property
    def digest(self) -> str | None: ...

    @property
    def size(self) -> int: ...


F = TypeVar("F", bound=Sized)


def fetch_order(files: Iterable[F], hub_first: Collection[str] = ()) -> list[F]:
    """The order a download's files start in (README, "Whole models"): the blobs this hive seeds for a
    fleet (`hub_first`), then the small files, smallest first (the config and tokenizer are there in a
    moment, for this hive and for the peers that take them from it), then the large ones, largest first
    (the longest transfers begin first). The small files also have slots of their own beside the large
    ones' (hub/fetch.py), so neither waits for the other. In a fleet pull of 8 hives a tokenizer left
    after the shards kept the last hives waiting 2 s for it, peer after peer."""

    def key(f: F) -> tuple[bool, bool, int]:
        small = f.size < SMALL_FILE
        return f.digest not in hub_first, not small, f.size if small else -f.size

    return sorted(files, key=key)
