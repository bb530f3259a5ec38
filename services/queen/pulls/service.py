"""PullService: fleet pulls through the hives' `/v2` (README, "Fleet pulls").

Starting one: the named hives must all be registered; one hive resolves the commit and the file
list (`POST /v2/plans` without a commit), then every other hive plans that commit, all at once, each
within QUEEN_PLAN_TIMEOUT; each must answer, fit the bytes it lacks and (for a gated repo) be let in
by the hub. Only then is each hive's part started (`plan.py` says who seeds what from the hub and
who takes it from whom); if one refuses, the parts started are cancelled. A failed preflight starts
nothing and says which hives failed and why.

The queen keeps no database: every hive records the pull's id with its download, so a pull the
queen does not remember (it restarted) is rebuilt from the hives' download lists.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Iterable
from typing import Any

import structlog

from services.queen.hives.client import HiveClient
from services.queen.hives.fan_out import ask_every_hive, fan_out
from services.queen.hives.registry import Health, HiveInfo, HiveRegistry
from services.queen.models.presence import FleetPresence
from services.queen.pulls.plan import Blob, PeerHive, plan_pull
from services.queen.pulls.preflight import Failure, check_plan, failure_of, preflight_failed
from services.queen.pulls.state import Pull, body_of, started_at
from services.queen.settings import QueenSettings
from shared.errors import ApiError
from shared.models import ErrorCode
from shared.wire.hive import PlanRequest, StartDownload
from shared.wire.queen import PullBody, QueenStartPull

__all__ = ["PullService"]

log = structlog.get_logger()

_REMEMBERED = 1000  # pulls kept in memory; older ones are rebuilt from the hives when asked for


class PullService:
    def __init__(
        self, settings: QueenSettings, registry: HiveRegistry, hives: HiveClient, presence: FleetPresence | None = None
    ) -> None:
        self.settings = settings
        self.presence = presence  # the hives outside the pull that hold its commit: sources too
        self.registry = registry
        self.hives = hives
        self._pulls: OrderedDict[str, Pull] = OrderedDict()
        # pull_id -> the hives a DELETE of that pull has not reached yet (down, too slow, not
        # registered): their part is cancelled as soon as they answer again (`reapply_cancels`)
        self._cancel_pending: OrderedDict[str, frozenset[str]] = OrderedDict()

    # -- starting --------------------------------------------------------------------------

    async def start(self, request: QueenStartPull) -> Pull:
        hives = self._named(request.hive_ids)
        first, plans = await self._preflight(hives, request)
        commit = str(first["commit"])
        blobs = [Blob(str(f["digest"]), int(f["size"])) for f in first["files"]]
        peers = [
            PeerHive(h.hive_id, h.url, frozenset(str(f["digest"]) for f in plans[h.hive_id]["files"] if f["present"]))
            for h in hives
        ]
        beyond: list[PeerHive] = []  # the hives outside the pull holding its commit complete: holders too
        if self.presence is not None:
            taking = [h.hive_id for h in hives]
            beyond = self.presence.peers_beyond(request.model_ref, commit, [b.digest for b in blobs], taking)
        parts = plan_pull([*beyond, *peers], blobs, self.settings.hub_fetches_per_blob)
        pull_id = f"pull-{uuid.uuid4().hex}"
        structlog.contextvars.bind_contextvars(pull_id=pull_id)

        def start_one(hive: HiveInfo) -> Awaitable[tuple[int, dict[str, Any]]]:
            part = parts[hive.hive_id]
            body = StartDownload(
                model_ref=request.model_ref,
                include=request.include,
                exclude=request.exclude,
                commit=commit,
                sources=part.sources or None,
                hub_first=sorted(part.hub_first) or None,
                pull_id=pull_id,
            )
            return self.hives.start_download(hive, body)

        started = await fan_out(hives, start_one, None)
        downloads = {h: str(r[1].get("download_id")) for h, r in started.items() if not isinstance(r, ApiError)}
        refused = [(h, r) for h, r in started.items() if isinstance(r, ApiError)]
        if refused:
            started_parts = Pull(pull_id, request.model_ref, commit, downloads)
            self._remember(started_parts)
            self._set_pending(pull_id, await self._cancel_on(started_parts, downloads))
            hive_id, exc = refused[0]
            message = f"starting on {hive_id!r} failed, the pull was cancelled: {exc.message}"
            raise ApiError(exc.status, exc.code, message, hive_id=hive_id)
        pull = Pull(pull_id, request.model_ref, commit, {h.hive_id: downloads[h.hive_id] for h in hives})
        self._remember(pull)
        for hive in hives:
            self.registry.record_download(downloads[hive.hive_id], hive.hive_id)
            self.registry.note_started(hive.hive_id)
        log.info(
            "pull_started",
            commit=commit,
            hives=len(hives),
            blobs=len({b.digest for b in blobs}),
            seeders={h: len(p.hub_first) for h, p in parts.items() if p.hub_first},
            sources_beyond=[p.hive_id for p in beyond] or None,
        )
        return pull

    def _named(self, hive_ids: list[str] | str) -> list[HiveInfo]:
        if hive_ids == "all":  # every hive the queen knows, but those its health checks find down
            known = self.registry.all()
            hives = [h for h in known if h.health is not Health.UNHEALTHY]
            if not known:
                raise ApiError(404, "UNKNOWN_HIVE", "no hive is registered with this queen")
            if not hives:
                raise ApiError(503, ErrorCode.HIVE_UNREACHABLE, "every hive registered with this queen is down")
            return hives
        unknown = [h for h in dict.fromkeys(hive_ids) if self.registry.get(h) is None]
        if unknown:
            failures = [
                Failure(h, 404, "UNKNOWN_HIVE", f"no hive {h!r} is registered with this queen") for h in unknown
            ]
            raise preflight_failed(failures)
        return [hive for h in dict.fromkeys(hive_ids) if (hive := self.registry.get(h)) is not None]

    async def _preflight(
        self, hives: list[HiveInfo], request: QueenStartPull
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """The resolving plan (commit and files) and every hive's plan of that commit, all checked."""
        ask = PlanRequest(model_ref=request.model_ref, include=request.include, exclude=request.exclude)
        limit = self.settings.plan_timeout
        resolving = hives[0]
        answers = await fan_out([resolving], lambda h: self.hives.plan(h, ask, limit), limit)
        first = answers[resolving.hive_id]
        if isinstance(first, ApiError):
            raise preflight_failed([failure_of(resolving.hive_id, first)])
        pinned = ask.model_copy(update={"commit": first["commit"]})
        answers.update(await fan_out(hives[1:], lambda h: self.hives.plan(h, pinned, limit), limit))
        failures = [f for h in hives if (f := check_plan(h.hive_id, answers[h.hive_id], str(first["commit"])))]
        if failures:
            raise preflight_failed(failures)
        plans = {h: a for h, a in answers.items() if not isinstance(a, ApiError)}
        return first, plans

    # -- finding, state, cancel ------------------------------------------------------------

    async def find(self, pull_id: str) -> Pull:
        """The pull as remembered, else rebuilt from the hives' download lists; 404 / 503 otherwise."""
        if (pull := self._pulls.get(pull_id)) is not None:
            self._pulls.move_to_end(pull_id)
            return pull
        found, unreachable = await self._gather_pulls()
        pull = found[pull_id][0] if pull_id in found else None
        if pull is None:
            if unreachable:
                message = f"no pull {pull_id!r} on the hives that answered; unreachable: {unreachable}"
                raise ApiError(503, ErrorCode.HIVE_UNREACHABLE, message, unreachable_hives=unreachable)
            raise ApiError(404, "NOT_FOUND", f"no pull {pull_id!r} on any hive")
        if not unreachable:  # a hive that did not answer may hold a part of it: ask again next time
            self._remember(pull)
        log.info("pull_rebuilt", pull_id=pull_id, hives=len(pull.downloads), unreachable=unreachable)
        return pull

    async def state(self, pull: Pull) -> PullBody:
        """Every hive's part now (its download, and where its files came from) and the totals."""
        hives = [h for hive_id in pull.downloads if (h := self.registry.get(hive_id)) is not None]
        limit = self.settings.fanout_timeout

        async def get(hive: HiveInfo) -> dict[str, Any]:
            state = await self.hives.get_download(hive, pull.downloads[hive.hive_id], time_limit=limit)
            if state is None:
                raise ApiError(404, "NOT_FOUND", f"hive {hive.hive_id!r} no longer knows the download")
            return state

        answers = await fan_out(hives, get, limit)
        return body_of(pull, {h: answers.get(h) for h in pull.downloads}, self.cancel_pending(pull.pull_id))

    async def list_pulls(self) -> tuple[list[PullBody], list[str]]:
        """Every pull the hives know of, newest first (from their download lists; no file sources)."""
        found, unreachable = await self._gather_pulls()
        bodies = [
            (started_at(states), body_of(pull, states, self.cancel_pending(pull.pull_id)))
            for pull, states in found.values()
        ]
        bodies.sort(key=lambda pair: pair[0], reverse=True)
        return [b for _, b in bodies], unreachable

    async def cancel(self, pull: Pull) -> PullBody:
        """Cancel every hive's part. A hive the cancel does not reach now (down, too slow to answer,
        not registered) is named in the answer's `cancel_pending`, and its part is cancelled as soon
        as it answers again: a hive that comes back never finishes a cancelled pull's part."""
        self._remember(pull)
        missed = await self._cancel_on(pull, pull.downloads)
        self._set_pending(pull.pull_id, missed)
        return await self.state(pull)

    def cancel_pending(self, pull_id: str) -> list[str]:
        return sorted(self._cancel_pending.get(pull_id, ()))

    async def reapply_cancels(self) -> int:
        """Try the cancels that have not reached their hive yet again; how many reached one now."""
        reached = 0
        for pull_id, pending in list(self._cancel_pending.items()):
            pull = self._pulls.get(pull_id)
            if pull is None:  # (forgotten: too many pulls since)
                self._cancel_pending.pop(pull_id, None)
                continue
            missed = await self._cancel_on(pull, pending)
            now_reached = sorted(pending - missed)
            reached += len(now_reached)
            if now_reached:
                log.info("pull_cancel_reapplied", pull_id=pull_id, hives=now_reached, pending=sorted(missed))
            self._set_pending(pull_id, missed)
        return reached

    async def reapply_cancels_forever(self) -> None:
        """Run `reapply_cancels` every health interval (the queen's lifespan runs this)."""
        while True:
            await asyncio.sleep(self.settings.health_interval)
            if self._cancel_pending:
                await self.reapply_cancels()

    async def _cancel_on(self, pull: Pull, hive_ids: Iterable[str]) -> frozenset[str]:
        """Cancel the pull's part on each of `hive_ids`: the hives it did not reach."""
        wanted = set(hive_ids)
        hives = [h for hid in wanted if (h := self.registry.get(hid)) is not None]

        async def cancel(hive: HiveInfo) -> None:
            try:
                await self.hives.cancel_download(hive, pull.downloads[hive.hive_id])
            except ApiError as exc:
                if exc.status not in (404, 409):  # gone, or ended already: nothing to cancel
                    raise

        results = await fan_out(hives, cancel, self.settings.fanout_timeout)
        failed = {h: r.message for h, r in results.items() if isinstance(r, ApiError)}
        missed = frozenset(failed) | frozenset(wanted - {h.hive_id for h in hives})
        log.info("pull_cancelled", pull_id=pull.pull_id, failed=failed or None, pending=sorted(missed) or None)
        return missed

    def _set_pending(self, pull_id: str, missed: frozenset[str]) -> None:
        if missed:
            self._cancel_pending[pull_id] = missed
            self._cancel_pending.move_to_end(pull_id)
            while len(self._cancel_pending) > _REMEMBERED:
                self._cancel_pending.popitem(last=False)
        else:
            self._cancel_pending.pop(pull_id, None)

    # -- internals -------------------------------------------------------------------------

    def _remember(self, pull: Pull) -> None:
        self._pulls[pull.pull_id] = pull
        self._pulls.move_to_end(pull.pull_id)
        while len(self._pulls) > _REMEMBERED:
            self._pulls.popitem(last=False)

    async def _gather_pulls(self) -> tuple[dict[str, tuple[Pull, dict[str, dict[str, Any]]]], list[str]]:
        """The pulls in the hives' download lists (pull_id -> the pull and its hives' states), and the
        hives that could not be asked (those the health checks know to be down are not asked)."""
        limit = self.settings.fanout_timeout
        answers, unreachable = await ask_every_hive(
            self.registry, lambda h: self.hives.list_downloads(h, time_limit=limit), limit
        )
        by_pull: dict[str, dict[str, dict[str, Any]]] = {}
        for hive, answer in answers:
            for state in answer:
                pull_id = state.get("pull_id")
                if isinstance(pull_id, str):
                    self.registry.record_download(str(state.get("download_id")), hive.hive_id)
                    by_pull.setdefault(pull_id, {}).setdefault(hive.hive_id, state)  # (newest first: the latest)
        found = {}
        for pull_id, states in by_pull.items():
            known = self._pulls.get(pull_id)
            commits = [s["commit"] for s in states.values() if isinstance(s.get("commit"), str)]
            pull = known or Pull(
                pull_id,
                next(iter(states.values())).get("model_ref"),
                commits[0] if commits else None,
                {h: str(s.get("download_id")) for h, s in sorted(states.items())},
            )
            found[pull_id] = (pull, states)
        return found, sorted(unreachable)
