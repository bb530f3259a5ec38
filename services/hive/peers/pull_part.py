"""What the queen says of a download that is one hive's part of a fleet pull (README, "Fleet pulls"):
the commit all hives pull, which peers have or are getting each blob, which blobs this hive fetches
from the hub at once, and the pull's id. Kept in the download's record (JSON), so a restarted hive
resumes its part as it was planned.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["PullPart"]


@dataclass(frozen=True, slots=True)
class PullPart:
    """What the queen says of a download that is one hive's part of a fleet pull."""

    commit: str | None = None
    sources: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    hub_first: frozenset[str] = frozenset()
    pull_id: str | None = None

    def to_json(self) -> str | None:
        if self == PullPart():
            return None
        sources = {d: list(p) for d, p in self.sources.items()}
        return json.dumps({"commit": self.commit, "sources": sources, "hub_first": sorted(self.hub_first)})

    @classmethod
    def from_json(cls, text: str | None) -> PullPart:
        try:
            data = json.loads(text) if text else {}
            sources = {str(d): tuple(str(u) for u in urls) for d, urls in dict(data.get("sources") or {}).items()}
            return cls(data.get("commit"), sources, frozenset(data.get("hub_first") or ()))
        except (ValueError, TypeError, AttributeError):
            return cls()
