"""AggregateHub: every download on every hive in one stream, from one upstream connection per hive.

Each registered hive's `/v2/downloads/stream` is followed forever (reconnecting with backoff) and every event is
fanned out, with `orchestrator_id` and `hive_id` added, to any number of clients' bounded Mailboxs. The hub
keeps the latest event of every active download, so a new client first gets the current state of all of them.
Event ids are the per-download ids as the hives give them; Last-Event-ID is ignored here: a reconnecting client
simply gets the full current state. A hive's `model` events go to the ModelStore and on to the clients.

After a reconnect, the hive's downloads are checked once: the terminal event of one the hub thought active that
ended meanwhile is fetched and relayed, and so is that of one the hub never saw that began and ended while the
stream was down; one the hive forgot is dropped.

The same upstream also feeds per-download clients (`follow`; `followers.py` keeps them): a client of one
download the hub shows live, while its hive's stream is connected, is served from here, not by the hive.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import structlog
from httpx_sse import EventSource

from services.queen.hives.client import HiveClient, close_stream
from services.queen.hives.registry import HiveInfo
from services.queen.streams.followers import Followers
from services.queen.streams.upstream import (
    NoWatcher,
    RelayStats,
    StreamWatcher,
    Upstream,
    bytes_went_back,
    decode_event,
    ended_after,
    enrich,
    is_event_stream,
)
from shared.backoff import Backoff
from shared.errors import ApiError
from shared.mailbox import Mailbox
from shared.models import TERMINAL_STATUSES, EventType, ProgressEvent

__all__ = ["AggregateConfig", "AggregateHub"]

log = structlog.get_logger()

_FINISHED_MEMORY = 10_000  # ids of recently finished downloads, so a late event cannot revive one
_GAP_SLACK = 60.0  # seconds: a download that ended this long before the stream dropped counts as unseen (clock skew)


@dataclass(frozen=True, slots=True)
class AggregateConfig:
    orchestrator_id: str
    queue_size: int
    backoff_initial: float
    backoff_max: float
    check_timeout: float


class AggregateHub:
    def __init__(
        self,
        hives: HiveClient,
        on_download: Callable[[str, str], None],
        config: AggregateConfig,
        stats: RelayStats,
        watcher: StreamWatcher | None = None,
    ) -> None:
        self.hives = hives
        self.watcher = watcher or NoWatcher()  # the ModelStore: connects, drops, `model` events, finished downloads
        self.on_download = on_download  # (download_id, hive_id): where each download lives
        self.config = config
        self.stats = stats
        self._latest: dict[str, ProgressEvent] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._clients: set[Mailbox] = set()
        self._followers = Followers()
        self._upstreams: dict[str, Upstream] = {}
        self.closing = False

    # -- clients ---------------------------------------------------------------------------

    def join(self) -> Mailbox:
        queue = Mailbox(maxsize=self.config.queue_size)
        for event in self._latest.values():
            queue.offer(event)
        if not queue.closed:
            self._clients.add(queue)
        return queue

    def leave(self, queue: Mailbox) -> None:
        queue.close()
        self._clients.discard(queue)

    def clients(self) -> int:
        return len(self._clients)

    def follow(self, download_id: str, hive_id: str, after: int | None) -> tuple[Mailbox, ProgressEvent] | None:
        """A per-download client's mailbox, primed with the download's latest event (returned too); None
        when the hub cannot serve it: the hive's stream is not connected, or the hub is not showing that
        download live on that hive (not seen yet, or ended: the per-download relay answers those)."""
        upstream = self._upstreams.get(hive_id)
        if self.closing or upstream is None or not upstream.connected or self._hive_of(download_id) != hive_id:
            return None
        latest = self._latest[download_id]
        return self._followers.add(download_id, latest, after), latest

    def unfollow(self, download_id: str, queue: Mailbox) -> None:
        """A per-download client left, or moved to the relay (idempotent)."""
        self._followers.remove(download_id, queue)

    def followers(self) -> int:
        return self._followers.count()

    def _release(self, hive_id: str) -> None:
        """The hive's stream dropped: close its downloads' followers (their readers go on elsewhere)."""
        self._followers.let_go([d for d in self._followers.downloads() if self._hive_of(d) == hive_id])
        self.watcher.disconnected(hive_id)

    def _forget_active(self, download_id: str) -> None:
        """Stop showing a download the hive no longer has; its followers go on from the relay."""
        del self._latest[download_id]
        self._followers.let_go([download_id])

    def _hive_of(self, download_id: str) -> object:
        latest = self._latest.get(download_id)
        return None if latest is None else latest.data.get("hive_id")

    def connected_upstreams(self) -> int:
        return sum(1 for u in self._upstreams.values() if u.connected)

    # -- what is running ---------------------------------------------------------------------

    def active(self) -> list[tuple[str, str]]:
        """(hive_id, model_ref) of every download the hub last saw queued or running."""
        pairs = ((e.data.get("hive_id"), e.data.get("model_ref")) for e in self._latest.values())
        return [(h, r) for h, r in pairs if isinstance(h, str) and isinstance(r, str)]

    def knows(self, download_id: str) -> bool:
        """Whether the hub has seen any event of this download (running, or finished lately)."""
        return download_id in self._latest or download_id in self._finished

    # -- hives -----------------------------------------------------------------------------

    def watch(self, hive: HiveInfo) -> None:
        """Follow this hive's stream (again, if it moved to another url)."""
        upstream = self._upstreams.get(hive.hive_id)
        if upstream is not None and upstream.url == hive.url and upstream.task is not None:
            return
        if upstream is not None and upstream.task is not None:
            upstream.task.cancel()
        upstream = Upstream(hive.url)
        upstream.task = asyncio.create_task(self._follow(hive, upstream), name=f"hive-stream-{hive.hive_id}")
        self._upstreams[hive.hive_id] = upstream

    async def close(self) -> None:
        self.closing = True
        tasks = [t for u in self._upstreams.values() for t in (u.task, *u.helpers) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for queue in self._clients:
            queue.close()
        self._clients.clear()
        self._followers.close()

    def publish(self, hive_id: str, event: ProgressEvent) -> None:
        download_id = event.download_id
        if download_id in self._finished:
            return
        current = self._latest.get(download_id)
        if current is not None and (event.id <= current.id or bytes_went_back(current, event)):
            return
        event = enrich(event, orchestrator_id=self.config.orchestrator_id, hive_id=hive_id)
        if event.is_terminal:
            self._latest.pop(download_id, None)
            self._finished[download_id] = None
            while len(self._finished) > _FINISHED_MEMORY:
                self._finished.popitem(last=False)
        else:
            self._latest[download_id] = event
        self.on_download(download_id, hive_id)
        if (current is None) is not event.is_terminal:  # a download begun or ended: its model changed
            self.watcher.download_changed(hive_id, (current or event).data.get("model_ref"))
        self._followers.offer(event)
        self._send(event)

    def _send(self, event: ProgressEvent) -> None:
        for queue in list(self._clients):
            if not queue.offer(event):
                self._clients.discard(queue)
                log.warning("aggregate_client_overflow", queue_size=self.config.queue_size)

    # -- upstream --------------------------------------------------------------------------

    async def _follow(self, hive: HiveInfo, upstream: Upstream) -> None:
        structlog.contextvars.bind_contextvars(correlation_id=f"stream-{uuid.uuid4().hex[:16]}", hive_id=hive.hive_id)
        backoff = Backoff(self.config.backoff_initial, self.config.backoff_max)
        connected_before = False
        dropped_at = time.time()  # (wall clock: compared with the hive's completed_at)
        while True:
            try:
                response = await self.hives.open_stream(self.hives.stream_url(upstream.url))
            except httpx.HTTPError as exc:
                log.debug("hive_stream_unreachable", error=type(exc).__name__)
                self.stats.reconnect_failures += connected_before
            else:
                try:
                    if response.status_code == 200 and is_event_stream(response.headers.get("content-type", "")):
                        reconnect, connected_before = connected_before, True
                        backoff.reset()
                        await self._relay(hive, upstream, response, dropped_at if reconnect else None)
                    else:
                        log.warning("hive_stream_refused", status=response.status_code)
                except httpx.HTTPError as exc:
                    log.warning("hive_stream_dropped", error=type(exc).__name__)
                finally:
                    if upstream.connected:
                        dropped_at = time.time()
                    upstream.connected = False
                    self._release(hive.hive_id)
                    await close_stream(response)
            await asyncio.sleep(backoff.next())

    async def _relay(
        self, hive: HiveInfo, upstream: Upstream, response: httpx.Response, dropped_at: float | None
    ) -> None:
        """Relay one connection's events; `dropped_at`: when the previous connection went down."""
        upstream.connected = True
        log.info("hive_stream_connected", reconnect=dropped_at is not None)
        if dropped_at is not None:
            self.stats.reconnects += 1
            self._check_later(hive, upstream, dropped_at)
        self.watcher.connected(hive)  # (its whole list: what changed while the stream was down too)
        async for sse in EventSource(response).aiter_sse():
            if sse.event == EventType.MODEL:
                if (model := self.watcher.on_model_event(hive.hive_id, sse.data)) is not None:
                    self._send(model)
            elif (event := decode_event(sse.event, sse.data, sse.id)) is not None:
                self.publish(hive.hive_id, event)
        log.warning("hive_stream_ended")

    def _check_later(self, hive: HiveInfo, upstream: Upstream, dropped_at: float) -> None:
        stale = {d: e for d, e in self._latest.items() if e.data.get("hive_id") == hive.hive_id}
        upstream.help(self._check_stale(hive, stale, dropped_at))

    async def _check_stale(self, hive: HiveInfo, stale: dict[str, ProgressEvent], dropped_at: float) -> None:
        """Settle downloads that ended (or were forgotten) on the hive while its stream was down."""
        try:
            listed = await self.hives.list_downloads(hive, time_limit=self.config.check_timeout)
            states = {s["download_id"]: s for s in listed}
        except ApiError as exc:
            log.warning("hive_stale_check_failed", error=exc.message)
            return
        for download_id, seen in stale.items():
            state = states.get(download_id)
            if state is None:
                if self._latest.get(download_id) is seen:
                    self._forget_active(download_id)
                continue
            if state.get("status") in TERMINAL_STATUSES:
                await self._fetch_terminal(hive, download_id, seen.id)
        for download_id, state in states.items():
            # began and ended in the gap: the hive's stream only ever shows active downloads on connect
            if (
                download_id not in stale
                and download_id not in self._finished
                and download_id not in self._latest
                and state.get("status") in TERMINAL_STATUSES
                and ended_after(state.get("completed_at"), dropped_at - _GAP_SLACK)
            ):
                await self._fetch_terminal(hive, download_id, 0)

    async def _fetch_terminal(self, hive: HiveInfo, download_id: str, after: int) -> None:
        try:
            async with asyncio.timeout(self.config.check_timeout):
                response = await self.hives.open_stream(self.hives.stream_url(hive.url, download_id), after)
                try:
                    if response.status_code == 200:
                        async for sse in EventSource(response).aiter_sse():
                            event = decode_event(sse.event, sse.data, sse.id)
                            if event is not None:
                                self.publish(hive.hive_id, event)
                                if event.is_terminal:
                                    return
                finally:
                    await close_stream(response)
        except (httpx.HTTPError, TimeoutError) as exc:
            log.warning("hive_terminal_fetch_failed", download_id=download_id, error=type(exc).__name__)
        current = self._latest.get(download_id)
        if current is not None and current.id <= after:
            self._forget_active(download_id)  # no terminal event to be had: stop showing it as active
