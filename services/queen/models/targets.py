"""Which hives a fleet-wide delete, pin or unpin goes to, and what a repository id may be. Pure.

`?hives=all` is every registered hive; `?hives=a,b` those (each must be registered: 404 otherwise);
no `hives` is every hive the inventory says holds the model (404 when none does).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from shared.errors import ApiError

__all__ = ["REPO_ID_RE", "checked_repo_id", "target_hives"]

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
REPO_ID_RE = re.compile(rf"(?:{_NAME}/)?{_NAME}")


def checked_repo_id(repo_id: str) -> str:
    """`org/repo` (or `repo`, without a namespace) when the hub allows the names, else 422 (it reaches no hive)."""
    if not REPO_ID_RE.fullmatch(repo_id) or ".." in repo_id or "--" in repo_id:
        raise ApiError(422, "INVALID_REQUEST", f"{repo_id[:200]!r} is not a Hugging Face repository id (org/repo)")
    return repo_id


def target_hives(hives: str | None, registered: Iterable[str], holders: Iterable[str], repo_id: str) -> list[str]:
    """The hive ids a change of `repo_id` goes to, sorted (see the module's rules)."""
    known = set(registered)
    if hives is None:
        found = sorted(set(holders) & known)
        if not found:
            raise ApiError(404, "NOT_FOUND", f"no hive holds {repo_id!r} (name hives with ?hives=a,b or all)")
        return found
    if hives.strip() == "all":
        if not known:
            raise ApiError(404, "UNKNOWN_HIVE", "no hive is registered with this queen")
        return sorted(known)
    named = sorted({h.strip() for h in hives.split(",") if h.strip()})
    if not named:
        raise ApiError(422, "INVALID_REQUEST", "hives must be 'all' or hive ids separated by commas")
    unknown = [h for h in named if h not in known]
    if unknown:
        shown = ", ".join(repr(h[:64]) for h in unknown[:10])
        raise ApiError(404, "UNKNOWN_HIVE", f"no hive {shown} is registered with this queen", hive_ids=unknown[:10])
    return named
