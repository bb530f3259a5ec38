"""HiveRegistry: the hives the queen knows, their health and load, and which hive owns which download.

Pure Python: no I/O, the clock is passed in. The queen's services feed it with what they learn
(registrations, health checks, hive answers, stream events) and ask it for placements.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.models import rfc3339

__all__ = ["Health", "HiveInfo", "HiveRegistry"]


class Health(enum.StrEnum):
    UNKNOWN = "unknown"  # not checked yet
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(slots=True)
class HiveInfo:
    hive_id: str
    url: str
    source: str  # "static" (QUEEN_HIVES) or "registered" (POST /v1/hives)
    health: Health = Health.UNKNOWN
    active_downloads: int = 0
    last_checked: datetime | None = None
    last_registered: datetime | None = None
    last_error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.health is Health.HEALTHY

    def to_dict(self) -> dict[str, Any]:
        return {
            "hive_id": self.hive_id,
            "url": self.url,
            "health": self.health.value,
            "healthy": self.healthy,
            "active_downloads": self.active_downloads,
            "source": self.source,
            "last_checked": rfc3339(self.last_checked),
            "last_registered": rfc3339(self.last_registered),
            "last_error": self.last_error,
        }


def _now() -> datetime:
    return datetime.now(UTC)


class HiveRegistry:
    def __init__(self, max_downloads: int = 100_000) -> None:
        self._hives: dict[str, HiveInfo] = {}
        self._owners: OrderedDict[str, str] = OrderedDict()  # download_id -> hive_id, least recently used first
        self._max_downloads = max_downloads

    # -- hives -----------------------------------------------------------------------------

    def add(self, hive_id: str, url: str, source: str, now: datetime | None = None) -> tuple[HiveInfo, bool]:
        """Add or refresh a hive; returns (hive, changed) where changed = new or moved to another url."""
        url = url.rstrip("/")
        hive = self._hives.get(hive_id)
        changed = hive is None or hive.url != url
        if hive is None:
            hive = HiveInfo(hive_id, url, source)
            self._hives[hive_id] = hive
        elif hive.url != url:
            hive.url, hive.health, hive.last_checked = url, Health.UNKNOWN, None
        if source == "registered":
            hive.last_registered = now or _now()
        return hive, changed

    def get(self, hive_id: str) -> HiveInfo | None:
        return self._hives.get(hive_id)

    def all(self) -> list[HiveInfo]:
        return sorted(self._hives.values(), key=lambda h: h.hive_id)

    def healthy(self) -> list[HiveInfo]:
        return [h for h in self.all() if h.healthy]

    def url_of(self, hive_id: str) -> str | None:
        hive = self._hives.get(hive_id)
        return hive.url if hive else None

    def mark_healthy(self, hive_id: str, active_downloads: int, now: datetime | None = None) -> None:
        if (hive := self._hives.get(hive_id)) is not None:
            hive.health, hive.active_downloads, hive.last_error = Health.HEALTHY, max(0, active_downloads), None
            hive.last_checked = now or _now()

    def mark_unhealthy(self, hive_id: str, error: str, now: datetime | None = None) -> None:
        if (hive := self._hives.get(hive_id)) is not None:
            hive.health, hive.last_error = Health.UNHEALTHY, error
            hive.last_checked = now or _now()

    def note_started(self, hive_id: str) -> None:
        """A download was just placed there: count it before the next health check does."""
        if (hive := self._hives.get(hive_id)) is not None:
            hive.active_downloads += 1

    def least_busy(self, exclude: frozenset[str] | set[str] = frozenset()) -> HiveInfo | None:
        """The healthy hive with the fewest active downloads (ties: by id), or None.

        With no healthy hive, one not checked yet (just registered) is tried rather than none.
        """
        for health in (Health.HEALTHY, Health.UNKNOWN):
            candidates = [h for h in self.all() if h.health is health and h.hive_id not in exclude]
            if candidates:
                return min(candidates, key=lambda h: (h.active_downloads, h.hive_id))
        return None

    def health_counts(self) -> dict[Health, int]:
        counts = dict.fromkeys(Health, 0)
        for hive in self._hives.values():
            counts[hive.health] += 1
        return counts

    # -- download -> hive ------------------------------------------------------------------

    def record_download(self, download_id: str, hive_id: str) -> None:
        self._owners[download_id] = hive_id
        self._owners.move_to_end(download_id)
        while len(self._owners) > self._max_downloads:
            self._owners.popitem(last=False)

    def owner(self, download_id: str) -> str | None:
        hive_id = self._owners.get(download_id)
        if hive_id is not None:
            self._owners.move_to_end(download_id)
        return hive_id

    def forget_download(self, download_id: str) -> None:
        self._owners.pop(download_id, None)

    def known_downloads(self) -> int:
        return len(self._owners)
