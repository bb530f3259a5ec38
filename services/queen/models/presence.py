"""FleetPresence: what the fleet already holds, put to use (README, "Fleet pulls" and "The queen's API").

- Placement by presence: an `hf:` model asked of the queen without a hive goes to a healthy hive that
  holds its revision complete, else (after the hive running its downloads) to the one holding most of
  it (`placement.present_hive`).
- Sources from the whole fleet: every healthy hive that holds a revision complete is a peer source of
  its blobs for any other hive's download of it, whether or not that hive is part of a pull.

What a hive holds is the FleetInventory's (kept current from the hives' streams); a complete revision
holds every blob of its commit.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import structlog

from services.queen.hives.client import HiveClient
from services.queen.hives.placement import present_hive, repo_id_of
from services.queen.hives.registry import HiveInfo, HiveRegistry
from services.queen.models.inventory import FleetInventory
from services.queen.pulls.plan import MAX_SOURCES, PeerHive
from shared.errors import ApiError
from shared.wire.hive import PlanRequest, StartDownload

__all__ = ["FleetPresence", "complete_holders"]

log = structlog.get_logger()

_FILE_MARK = "::file="


def complete_holders(
    inventory: FleetInventory, repo_id: str, commit: str, eligible: Collection[str], files: int = 0
) -> list[str]:
    """The hives among `eligible` that hold `commit` of `repo_id` complete, with at least `files` files
    (a snapshot a filtered pull left is complete with fewer files than another pull takes), by id."""
    holdings = inventory.holdings(repo_id)
    return sorted(
        h
        for h, m in holdings.items()
        if h in eligible and any(r.commit == commit and r.complete and r.files >= files for r in m.revisions)
    )


class FleetPresence:
    def __init__(
        self, registry: HiveRegistry, hives: HiveClient, inventory: FleetInventory, plan_timeout: float
    ) -> None:
        self.registry = registry
        self.hives = hives
        self.inventory = inventory
        self.plan_timeout = plan_timeout

    def _healthy(self) -> set[str]:
        return {h.hive_id for h in self.registry.healthy()}

    def place(self, model_ref: str, complete: bool) -> HiveInfo | None:
        """The healthy hive holding the ref's model complete (`complete`), or holding most of it."""
        parsed = repo_id_of(model_ref)
        if parsed is None:
            return None
        healthy = self._healthy()
        holdings = {h: m for h, m in self.inventory.holdings(parsed[0]).items() if h in healthy}
        chosen = present_hive(model_ref, holdings, complete)
        return None if chosen is None else self.registry.get(chosen)

    def peers_beyond(
        self, model_ref: str, commit: str, digests: Sequence[str], taking: Collection[str]
    ) -> list[PeerHive]:
        """The healthy hives outside `taking` that hold the pull's commit complete (`digests`: of each of the
        pull's files), as peers holding every blob."""
        parsed = repo_id_of(model_ref)
        if parsed is None:
            return []
        held = frozenset(digests)
        holders = complete_holders(self.inventory, parsed[0], commit, self._healthy() - set(taking), len(digests))
        return [PeerHive(h, url, held) for h in holders if (url := self.registry.url_of(h)) is not None]

    async def with_sources(self, hive: HiveInfo, request: StartDownload) -> StartDownload:
        """A whole `hf:` model's download on `hive`, with the other hives that hold its commit complete as
        the sources of every blob `hive` lacks (and that commit); the request as it was when there are none.
        The hive's plan (`POST /v2/plans`) says the commit and the files; a failed plan changes nothing."""
        parsed = repo_id_of(request.model_ref)
        if parsed is None or _FILE_MARK in request.model_ref or request.commit or request.sources:
            return request
        others = self._healthy() - {hive.hive_id}
        holdings = self.inventory.holdings(parsed[0])
        if not any(h in others for h in holdings):
            return request
        if hive.hive_id in holdings and present_hive(request.model_ref, {hive.hive_id: holdings[hive.hive_id]}, True):
            return request  # it holds that revision complete: it answers `complete` at once
        ask = PlanRequest(model_ref=request.model_ref, include=request.include, exclude=request.exclude)
        try:
            plan = await self.hives.plan(hive, ask, self.plan_timeout)
        except ApiError as exc:
            log.warning("fleet_sources_plan_failed", hive_id=hive.hive_id, error=exc.message)
            return request
        commit, files = str(plan.get("commit")), plan.get("files")
        if not isinstance(files, list):
            return request
        holders = complete_holders(self.inventory, parsed[0], commit, others, len(files))
        urls = [url for h in holders if (url := self.registry.url_of(h)) is not None][:MAX_SOURCES]
        if not urls:
            return request
        lacking = {str(f["digest"]) for f in files if isinstance(f, dict) and f.get("digest") and not f.get("present")}
        if not lacking:
            return request
        log.info("download_fleet_sources", hive_id=hive.hive_id, commit=commit, holders=holders, blobs=len(lacking))
        return request.model_copy(update={"commit": commit, "sources": dict.fromkeys(sorted(lacking), urls)})
