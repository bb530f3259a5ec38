"""Which files of a repository a whole-model download takes: `include` / `exclude` globs. Pure.

The patterns mean what huggingface_hub's `allow_patterns` / `ignore_patterns` mean (its
`filter_repo_objects`): `fnmatch.fnmatchcase` on the whole path, case-sensitive, `*` matching
across `/` (so `*.json` also takes `sub/x.json`), backslashes read as `/`, and a pattern ending in
`/` taking everything below that folder. No include list takes every file; an empty one takes none.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

from shared.limits import MAX_PATTERN_LENGTH, MAX_PATTERNS

__all__ = ["MAX_PATTERNS", "MAX_PATTERN_LENGTH", "normalize_patterns", "select_paths"]


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
