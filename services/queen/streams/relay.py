"""DownloadRelay: a hive's per-download SSE stream, shared by every queen client of that download
that the hive's aggregated stream does not serve (services/queen/streams/download_feed.py says which).

One upstream subscription per download, however many clients watch it (refcounted: it closes
when its last client leaves, and ends after relaying the terminal event). Each event is relayed
with the hive's id, type and order, plus `orchestrator_id` and `hive_id`, into every client's
bounded Mailbox without waiting. If the hive connection drops, the subscription reconnects
with Last-Event-ID = the last id it relayed, with backoff, dropping anything at or below that id,
so clients see one continuous stream; only when the hive stays unreachable (or no longer knows
the download) past the budget do clients get an `error` event (HIVE_UNREACHABLE, id = last + 1).

A client the aggregated stream served until it dropped is `resume`d here: its subscription starts by
reconnecting after the client's last id, with the same budget.

The upstream is opened with the first client's Last-Event-ID (so the hive's 204/404 answer can be
passed on before any SSE starts). A client that joins later gets the latest relayed event at once,
filtered by its own Last-Event-ID; if nothing has been relayed yet it waits for the next event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from httpx_sse import EventSource

from services.queen.hives.client import HiveClient, close_stream, unreachable
from services.queen.hives.registry import HiveInfo
from services.queen.streams.subscription import Subscription
from services.queen.streams.upstream import RelayStats, bytes_went_back, decode_event, enrich, is_event_stream
from shared.backoff import Backoff
from shared.errors import ApiError
from shared.mailbox import Mailbox
from shared.models import ErrorCode, EventType, ProgressEvent

__all__ = ["DownloadRelay", "RelayConfig", "Subscription"]

log = structlog.get_logger()

_END_OF_BODY_SECS = 1.0  # after the terminal event the hive ends the body at once; never wait longer


@dataclass(frozen=True, slots=True)
class RelayConfig:
    orchestrator_id: str
    budget: float  # seconds a dropped hive may stay unreachable before clients get HIVE_UNREACHABLE
    backoff_initial: float
    backoff_max: float


class DownloadRelay:
    def __init__(
        self,
        hives: HiveClient,
        hive_url: Callable[[str], str | None],
        config: RelayConfig,
        stats: RelayStats,
    ) -> None:
        self.hives = hives
        self.hive_url = hive_url  # looked up on every reconnect: a hive may come back at a new url
        self.config = config
        self.stats = stats
        self._subs: dict[str, Subscription] = {}
        self._opening: dict[str, asyncio.Future[None]] = {}

    def subscriptions(self) -> int:
        return len(self._subs)

    def clients(self) -> int:
        return sum(len(s.clients) for s in self._subs.values())

    async def attach(self, download_id: str, hive: HiveInfo, after: int | None) -> tuple[Subscription, Mailbox] | None:
        """Join the download's subscription, opening it if there is none; None means 204 (already ended).

        Raises ApiError: 404 when the hive does not know the download, 503 when it cannot be reached.
        """
        while (pending := self._opening.get(download_id)) is not None:
            await asyncio.shield(pending)  # someone is opening it: join theirs rather than open a second
        sub = self._subs.get(download_id)
        if sub is not None and not sub.done:
            queue = sub.join(after)
            return None if queue is None else (sub, queue)
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._opening[download_id] = opened
        try:
            response = await self._open(download_id, hive, after)
            if response is None:
                return None
            sub = Subscription(download_id, hive.hive_id, last_id=after or 0)
            queue = sub.join(after)
            assert queue is not None
            self._subs[download_id] = sub
            sub.task = asyncio.create_task(self._run(sub, response), name=f"relay-{download_id}")
            return sub, queue
        finally:
            del self._opening[download_id]
            opened.set_result(None)

    def resume(
        self, download_id: str, hive_id: str, last_id: int, latest: ProgressEvent | None
    ) -> tuple[Subscription, Mailbox] | None:
        """Go on with a client the aggregated stream served until its hive's stream dropped: join the
        download's subscription, or start one that reconnects to the hive within the budget (then
        HIVE_UNREACHABLE, as for any relay) and relays nothing at or below `last_id`, the last id the
        client has, nor fewer bytes than `latest`, the last event it was shown. None: the client has
        had the terminal event."""
        sub = self._subs.get(download_id)
        if sub is None or sub.done:
            sub = Subscription(download_id, hive_id, last_id=last_id, latest=latest)
            self._subs[download_id] = sub
            sub.task = asyncio.create_task(self._run(sub, None), name=f"relay-{download_id}")
        queue = sub.join(last_id)
        return None if queue is None else (sub, queue)

    def detach(self, sub: Subscription, queue: Mailbox) -> None:
        """A client left (idempotent). The last one out closes the upstream."""
        queue.close()
        sub.clients.discard(queue)
        if not sub.clients and not sub.done:
            sub.done = True
            if sub.task is not None:
                sub.task.cancel()
            self._forget(sub)

    async def close(self) -> None:
        subs = list(self._subs.values())
        for sub in subs:
            sub.finish()
            if sub.task is not None:
                sub.task.cancel()
        tasks = [s.task for s in subs if s.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        self._subs.clear()

    # -- upstream --------------------------------------------------------------------------

    async def _open(self, download_id: str, hive: HiveInfo, after: int | None) -> httpx.Response | None:
        """The hive's answer, checked before any SSE starts: a live stream, None for 204, else ApiError."""
        url = self.hives.stream_url(hive.url, download_id)
        try:
            response = await self.hives.open_stream(url, after)
        except httpx.HTTPError as exc:
            raise unreachable(hive.hive_id, type(exc).__name__) from None
        if response.status_code == 200 and is_event_stream(response.headers.get("content-type", "")):
            return response
        try:
            await response.aread()
        except httpx.HTTPError as exc:
            raise unreachable(hive.hive_id, type(exc).__name__) from None
        finally:
            await close_stream(response)
        if response.status_code == 204:
            return None
        HiveClient.raise_for_status(hive, response)
        raise ApiError(502, "HIVE_ERROR", f"hive {hive.hive_id!r} did not answer with a stream", hive_id=hive.hive_id)

    async def _run(self, sub: Subscription, response: httpx.Response | None) -> None:
        """Relay `response`, reconnecting as needed; None: start by reconnecting (a resumed client)."""
        bound = log.bind(download_id=sub.download_id, hive_id=sub.hive_id)
        bound.info("relay_subscribed", after=sub.last_id or None, resumed=response is None)
        try:
            if response is None:
                response = await self._reconnect(sub, bound)
            while response is not None:
                if await self._pump(sub, response, bound):
                    return
                response = await self._reconnect(sub, bound)
        except Exception as exc:  # never leave clients hanging on a relay bug
            bound.error("relay_crashed", error_type=type(exc).__name__, exc_info=exc)
        finally:
            sub.finish()
            self._forget(sub)
            bound.info("relay_closed", last_id=sub.last_id)

    async def _pump(self, sub: Subscription, response: httpx.Response, bound: Any) -> bool:
        """Relay events until the terminal one (True) or until the connection ends or breaks (False)."""
        extra = {"orchestrator_id": self.config.orchestrator_id, "hive_id": sub.hive_id}
        connected = time.monotonic()
        events = EventSource(response).aiter_sse()
        try:
            async for sse in events:
                event = decode_event(sse.event, sse.data, sse.id)
                if event is None or event.id <= sub.last_id:
                    continue  # keep-alive artefact, or already relayed before a reconnect
                if event.download_id != sub.download_id or bytes_went_back(sub.latest, event):
                    sub.last_id = max(sub.last_id, event.id)
                    continue
                sub.publish(enrich(event, **extra))
                sub.lost_at = None
                if event.is_terminal:
                    # Finished before anything else is awaited: the clients' last detach then has no
                    # relay left to cancel, and the upstream is read to its end (the hive closes it
                    # right after this event), so its connection goes back to the pool.
                    sub.finish()
                    await _read_to_end(events)
                    return True
            bound.warning("relay_upstream_ended")
        except httpx.HTTPError as exc:
            bound.warning("relay_upstream_dropped", error=type(exc).__name__)
        finally:
            await close_stream(response)
            await events.aclose()
        if time.monotonic() - connected >= self.config.budget:
            sub.lost_at = None  # a connection that held that long was a good one, events or not
        return False

    async def _reconnect(self, sub: Subscription, bound: Any) -> httpx.Response | None:
        """Reopen the stream after the last relayed id within the budget; None when the relay is over."""
        if sub.lost_at is None:  # a hive that accepts and drops again without an event does not renew it
            sub.lost_at = time.monotonic()
        deadline = sub.lost_at + self.config.budget
        backoff = Backoff(self.config.backoff_initial, self.config.backoff_max)
        reason = "connections dropped before any event"
        while time.monotonic() < deadline:
            await asyncio.sleep(min(backoff.next(), max(0.0, deadline - time.monotonic())))
            url = self.hive_url(sub.hive_id)
            if url is not None:
                try:
                    response = await self.hives.open_stream(self.hives.stream_url(url, sub.download_id), sub.last_id)
                except httpx.HTTPError as exc:
                    reason = type(exc).__name__
                else:
                    if response.status_code == 200 and is_event_stream(response.headers.get("content-type", "")):
                        self.stats.reconnects += 1
                        bound.info("relay_reconnected", after=sub.last_id)
                        return response
                    await close_stream(response)
                    if response.status_code == 204:  # the hive says we have had everything
                        bound.info("relay_upstream_finished", after=sub.last_id)
                        return None
                    reason = f"hive answered {response.status_code}"
            self.stats.reconnect_failures += 1
        self.stats.gave_up += 1
        bound.warning("relay_gave_up", budget=self.config.budget, reason=reason)
        sub.publish(self._unreachable_event(sub, reason))
        return None

    def _unreachable_event(self, sub: Subscription, reason: str) -> ProgressEvent:
        data = sub.latest.data if sub.latest is not None else {}
        return ProgressEvent(
            sub.last_id + 1,
            EventType.ERROR,
            {
                "download_id": sub.download_id,
                "error": f"hive {sub.hive_id!r} unreachable for {self.config.budget:g}s ({reason})",
                "code": ErrorCode.HIVE_UNREACHABLE.value,
                "bytes": data.get("bytes", 0),
                "total": data.get("total"),
                "orchestrator_id": self.config.orchestrator_id,
                "hive_id": sub.hive_id,
            },
        )

    def _forget(self, sub: Subscription) -> None:
        if self._subs.get(sub.download_id) is sub:
            del self._subs[sub.download_id]


async def _read_to_end(events: AsyncIterator[object]) -> None:
    """What a hive sends after a terminal event (nothing but the end of the body), bounded in time."""
    with contextlib.suppress(httpx.HTTPError, TimeoutError):
        async with asyncio.timeout(_END_OF_BODY_SECS):
            async for _ in events:
                pass
