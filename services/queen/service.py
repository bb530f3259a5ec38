"""QueenService: hive registration and health, placement, owner lookup and the proxied /v2 calls.

Everything the routes do that is more than translating HTTP. Hive state lives in the pure
HiveRegistry; this module does the I/O that feeds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog

from services.queen.hives.client import HiveClient, HiveUnreachable
from services.queen.hives.fan_out import ask_every_hive
from services.queen.hives.placement import holding_hive, repo_key
from services.queen.hives.registry import Health, HiveInfo, HiveRegistry
from services.queen.models.presence import FleetPresence
from services.queen.settings import QueenSettings
from services.queen.streams.aggregate import AggregateHub
from shared.errors import ApiError
from shared.models import DownloadStatus, ErrorCode
from shared.wire.hive import StartDownload

__all__ = ["QueenService"]

log = structlog.get_logger()

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ACTIVE_STATUSES = frozenset(s.value for s in DownloadStatus if not s.is_terminal)
# downloads placed here that the aggregated streams have not shown yet (normally only for milliseconds)
_PLACED_MEMORY = 1_000


def _started_at(download: dict[str, Any]) -> datetime:
    try:
        started = datetime.fromisoformat(str(download.get("started_at")))
    except ValueError:
        return _EPOCH
    return started if started.tzinfo else started.replace(tzinfo=UTC)


class QueenService:
    def __init__(
        self,
        settings: QueenSettings,
        registry: HiveRegistry,
        hives: HiveClient,
        hub: AggregateHub,
        presence: FleetPresence | None = None,
    ) -> None:
        self.settings = settings
        self.presence = presence  # what the fleet holds: placement by presence, peer sources
        self.registry = registry
        self.hives = hives
        self.hub = hub
        self._lookups: dict[str, asyncio.Task[HiveInfo | None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._placed: OrderedDict[str, tuple[str, str]] = OrderedDict()  # download_id -> (hive_id, model_ref)
        self._placing: dict[str, tuple[asyncio.Lock, int]] = {}  # repo key -> its lock, and how many hold or wait

    # -- hives -----------------------------------------------------------------------------

    def register(self, hive_id: str, url: str, source: str = "registered") -> tuple[HiveInfo, bool]:
        """Add or refresh a hive; a new (or moved) hive is checked and followed at once."""
        hive, changed = self.registry.add(hive_id, url, source)
        if changed:
            log.info("hive_registered", hive_id=hive_id, url=hive.url, source=source)
            self.hub.watch(hive)
            self._spawn(self._discover(hive))
        return hive, changed

    async def check_health(self, hive: HiveInfo) -> None:
        try:
            body = await self.hives.health(hive, self.settings.health_timeout)
        except ApiError as exc:
            if hive.healthy:
                log.warning("hive_unhealthy", hive_id=hive.hive_id, error=exc.message)
            self.registry.mark_unhealthy(hive.hive_id, exc.message)
            return
        if not hive.healthy:
            log.info("hive_healthy", hive_id=hive.hive_id)
        active = body.get("active_downloads")
        self.registry.mark_healthy(hive.hive_id, active if isinstance(active, int) else 0)

    async def run_health_checks(self) -> None:
        """Forever: check every hive concurrently, every health interval."""
        structlog.contextvars.bind_contextvars(correlation_id=f"health-{uuid.uuid4().hex[:16]}")
        while True:
            hives = self.registry.all()
            if hives:
                await asyncio.gather(*(self.check_health(h) for h in hives))
            await asyncio.sleep(self.settings.health_interval)

    async def _discover(self, hive: HiveInfo) -> None:
        """Learn which downloads this hive owns (start-up, registration): health first, then its list."""
        structlog.contextvars.bind_contextvars(correlation_id=f"discover-{uuid.uuid4().hex[:16]}")
        await self.check_health(hive)
        if not hive.healthy:
            return
        try:
            downloads = await self.hives.list_downloads(hive, time_limit=self.settings.health_timeout * 5)
        except ApiError as exc:
            log.warning("hive_discovery_failed", hive_id=hive.hive_id, error=exc.message)
            return
        for download in downloads:
            self.registry.record_download(str(download.get("download_id")), hive.hive_id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        tasks: list[asyncio.Task[Any]] = [*self._background, *self._lookups.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    # -- downloads -------------------------------------------------------------------------

    def _named_hive(self, hive_id: str) -> HiveInfo:
        hive = self.registry.get(hive_id)
        if hive is None:
            raise ApiError(404, "UNKNOWN_HIVE", f"no hive {hive_id!r} is registered with this queen")
        if hive.health is Health.UNHEALTHY:
            raise ApiError(503, ErrorCode.HIVE_UNREACHABLE, f"hive {hive_id!r} is unhealthy", hive_id=hive_id)
        return hive

    async def start_download(self, request: StartDownload, hive_id: str | None) -> tuple[int, dict[str, Any]]:
        """Start on the named hive, else where the same model is already running, else on the least busy
        healthy hive (the next if that one refuses connections). Rules: `services/queen/hives/placement.py`;
        the hives holding the model complete are its sources (`FleetPresence`)."""
        if hive_id is not None:
            return await self._start_on(self._named_hive(hive_id), request)
        key = repo_key(request.model_ref)
        if key is None:
            return await self._place(request)
        async with self._one_at_a_time(key):  # so a second file of the model sees where the first went
            return await self._place(request)

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, key: str) -> AsyncIterator[None]:
        lock, users = self._placing.get(key, (asyncio.Lock(), 0))
        self._placing[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._placing[key]
            if users == 1:
                del self._placing[key]
            else:
                self._placing[key] = (lock, users - 1)

    async def _place(self, request: StartDownload) -> tuple[int, dict[str, Any]]:
        if self.presence is not None and (hive := self.presence.place(request.model_ref, complete=True)):
            log.info("download_goes_where_its_model_is", hive_id=hive.hive_id, model_ref=request.model_ref)
            return await self._start_on(hive, request)
        holder = holding_hive(request.model_ref, self._active())
        if holder is not None and (hive := self.registry.get(holder)) is not None:
            if hive.health is Health.UNHEALTHY:
                message = (
                    f"hive {holder!r} is running downloads of this model but is unhealthy; the model's files stay"
                    " on one hive, so wait for it or name a hive (hive_id) to start it elsewhere"
                )
                raise ApiError(503, ErrorCode.HIVE_UNREACHABLE, message, hive_id=holder)
            log.info("download_follows_its_model", hive_id=holder, model_ref=request.model_ref)
            return await self._start_on(hive, request)
        if self.presence is not None and (hive := self.presence.place(request.model_ref, complete=False)):
            log.info("download_goes_where_most_of_its_model_is", hive_id=hive.hive_id, model_ref=request.model_ref)
            return await self._start_on(hive, request)
        tried: set[str] = set()
        last_error: ApiError | None = None
        while (hive := self.registry.least_busy(exclude=tried)) is not None:
            tried.add(hive.hive_id)
            try:
                return await self._start_on(hive, request)
            except HiveUnreachable as exc:
                if exc.connected:  # it may have started there: never risk a second copy elsewhere
                    raise
                self.registry.mark_unhealthy(hive.hive_id, exc.message)
                last_error = exc
        raise last_error or ApiError(503, ErrorCode.HIVE_UNREACHABLE, "no healthy hive to start the download on")

    async def _start_on(self, hive: HiveInfo, request: StartDownload) -> tuple[int, dict[str, Any]]:
        if self.presence is not None:
            request = await self.presence.with_sources(hive, request)
        status, body = await self.hives.start_download(hive, request)
        download_id = str(body.get("download_id"))
        self.registry.record_download(download_id, hive.hive_id)
        if status == 202:
            self.registry.note_started(hive.hive_id)
        if body.get("status") in _ACTIVE_STATUSES:
            self._note_placed(download_id, hive.hive_id, str(body.get("model_ref") or request.model_ref))
        log.info("download_placed", download_id=download_id, hive_id=hive.hive_id, created=status == 202)
        return status, body

    def _note_placed(self, download_id: str, hive_id: str, model_ref: str) -> None:
        self._placed[download_id] = (hive_id, model_ref)
        while len(self._placed) > _PLACED_MEMORY:
            self._placed.popitem(last=False)

    def _active(self) -> list[tuple[str, str]]:
        """(hive_id, model_ref) of every active download: what the aggregated streams last said, and what
        was placed here but has not shown up on them yet (a second request may come right after the first)."""
        for download_id in [d for d in self._placed if self.hub.knows(d)]:
            del self._placed[download_id]
        return [*self.hub.active(), *self._placed.values()]

    async def list_downloads(self, status: str | None) -> tuple[list[dict[str, Any]], list[str]]:
        """Every hive's downloads, newest first, and the hives that could not be asked."""
        limit = self.settings.fanout_timeout
        answers, unreachable = await ask_every_hive(
            self.registry, lambda h: self.hives.list_downloads(h, status, time_limit=limit), limit
        )
        downloads: list[dict[str, Any]] = []
        for hive, result in answers:
            for download in result:
                self.registry.record_download(str(download.get("download_id")), hive.hive_id)
            downloads.extend(result)
        downloads.sort(key=_started_at, reverse=True)
        return downloads, unreachable

    async def owner_of(self, download_id: str) -> HiveInfo:
        """The hive that has the download: the map, else ask every hive at once. 404 / 503 otherwise."""
        hive_id = self.registry.owner(download_id)
        hive = self.registry.get(hive_id) if hive_id else None
        if hive is not None:
            return hive
        lookup = self._lookups.get(download_id)
        if lookup is None:  # concurrent misses of one id share one round of questions
            lookup = asyncio.create_task(self._ask_hives(download_id))
            self._lookups[download_id] = lookup
            lookup.add_done_callback(functools.partial(self._lookup_done, download_id))
        found = await asyncio.shield(lookup)
        if found is None:
            raise ApiError(404, "NOT_FOUND", f"no download {download_id!r} on any hive")
        return found

    def _lookup_done(self, download_id: str, task: asyncio.Task[HiveInfo | None]) -> None:
        if self._lookups.get(download_id) is task:
            del self._lookups[download_id]
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every waiter has gone

    async def _ask_hives(self, download_id: str) -> HiveInfo | None:
        limit = self.settings.fanout_timeout
        answers, unreachable = await ask_every_hive(
            self.registry, lambda h: self.hives.get_download(h, download_id, time_limit=limit), limit
        )
        for hive, answer in answers:
            if answer is not None:
                self.registry.record_download(download_id, hive.hive_id)
                log.info("download_owner_found", download_id=download_id, hive_id=hive.hive_id)
                return hive
        if unreachable:
            message = f"download {download_id!r} not found on the hives that answered; unreachable: {unreachable}"
            raise ApiError(503, ErrorCode.HIVE_UNREACHABLE, message, unreachable_hives=unreachable)
        return None

    async def get_download(self, download_id: str) -> dict[str, Any]:
        hive = await self.owner_of(download_id)
        state = await self.hives.get_download(hive, download_id)
        if state is None:
            self.registry.forget_download(download_id)
            raise ApiError(404, "NOT_FOUND", f"no download {download_id!r} on hive {hive.hive_id!r}")
        return state

    async def cancel_download(self, download_id: str) -> dict[str, Any]:
        hive = await self.owner_of(download_id)
        try:
            return await self.hives.cancel_download(hive, download_id)
        except ApiError as exc:
            if exc.status == 404:
                self.registry.forget_download(download_id)
            raise
