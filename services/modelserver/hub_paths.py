"""Which repository, revision and file a test hub URL names. Pure: path segments in, a `Target` out.

A repo id is ``org/name`` or, as huggingface_hub allows, a single name (``gpt2``); a path is read as
the id the hub holds when only one reading names a repo it knows (`known`), else as ``org/name``:

- ``/{repo}/resolve/{rev}/{path}``: ``rev`` a branch, a 40-hex commit or ``refs/pr/N`` (quoted as
  huggingface_hub sends it, or raw over three segments);
- ``/api/models/{repo}[/revision/{rev}|/tree/{rev}[/{path}]]``;
- ``/api/resolve-cache/models/{repo}/{commit}/{path}``: the commit is 40 hex, so it tells where the
  repo id ends.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Target", "api_target", "cache_target", "resolve_target", "split_revision"]

_COMMIT_RE = re.compile(r"[0-9a-f]{40}")


@dataclass
class Target:
    repo_id: str
    revision: str
    path: str
    rest: list[str] = field(default_factory=list)  # what follows the repo id (the API's)


def split_revision(parts: list[str]) -> tuple[str, list[str]]:
    """(revision, the rest) from path segments; a raw ``refs/pr/N`` spans three segments."""
    if len(parts) >= 3 and parts[0] == "refs" and parts[1] in ("pr", "convert"):
        return "/".join(parts[:3]), parts[3:]
    return (parts[0], parts[1:]) if parts else ("main", [])


def _repo_split(parts: list[str], marks: tuple[str, ...], known: Callable[[str], bool]) -> tuple[str, list[str]]:
    """(repo id, the segments after it): two segments when the third is a mark (or nothing follows),
    one when the second is, whichever names a known repo first."""
    readings = []
    if len(parts) >= 2 and (len(parts) == 2 or parts[2] in marks):
        readings.append((f"{parts[0]}/{parts[1]}", parts[2:]))
    if parts and (len(parts) == 1 or parts[1] in marks):
        readings.append((parts[0], parts[1:]))
    if not readings:
        return "/".join(parts[:2]), parts[2:]
    return next((r for r in readings if known(r[0])), readings[0])


def resolve_target(parts: list[str], known: Callable[[str], bool]) -> Target | None:
    """``{repo}/resolve/{rev}/{path}`` (segments of the URL path), or None."""
    repo_id, rest = _repo_split(parts, ("resolve",), known)
    if len(rest) < 3 or rest[0] != "resolve":
        return None
    revision, path = split_revision(rest[1:])
    return Target(repo_id, revision, "/".join(path))


def api_target(parts: list[str], known: Callable[[str], bool]) -> Target:
    """``{repo}[/revision/{rev}|/tree/{rev}[/{path}]]`` (the segments after ``api/models``)."""
    repo_id, rest = _repo_split(parts, ("revision", "tree"), known)
    return Target(repo_id, "main", "", rest)


def cache_target(parts: list[str]) -> Target | None:
    """``{repo}/{commit}/{path}`` (the segments after ``api/resolve-cache/models``), or None."""
    for n in (1, 2):
        if len(parts) > n + 1 and _COMMIT_RE.fullmatch(parts[n]):
            return Target("/".join(parts[:n]), parts[n], "/".join(parts[n + 1 :]))
    return None
