"""PullStreams: the feeds of the pulls somebody watches, each hive's download followed through the relay.

One feed per watched pull, however many clients (refcounted: the last client out stops it; the next
one starts it again, and since ids come from the hives it carries on with the same numbers). Each of
the pull's hives is followed by one task: it joins the relay's subscription of that hive's download
(`streams/relay.py`, which reconnects with Last-Event-ID and gives up with HIVE_UNREACHABLE after
QUEEN_UNREACHABLE_BUDGET) and puts every event into the feed. A hive that cannot be attached to (it
is down, or no longer knows the download) is tried again with backoff for the same budget, then
counts as failed with HIVE_UNREACHABLE, so a pull always ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from services.queen.hives.registry import HiveInfo
from services.queen.pulls.feed import PullFeed
from services.queen.pulls.state import Pull
from services.queen.streams.relay import DownloadRelay
from shared.backoff import Backoff
from shared.errors import ApiError
from shared.models import ErrorCode, EventType, ProgressEvent

__all__ = ["PullClient", "PullStreamConfig", "PullStreams"]

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class PullStreamConfig:
    orchestrator_id: str
    prime_timeout: float  # how long a new feed waits for every hive's current state before it sends
    budget: float  # how long a hive may stay unattachable before it counts as failed
    backoff_initial: float
    backoff_max: float


@dataclass(eq=False, slots=True)
class _Watched:
    feed: PullFeed
    clients: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class PullClient:
    """One client's hold on a feed; `close` is idempotent (a stream's end and its cleanup both call it)."""

    def __init__(self, streams: PullStreams, feed: PullFeed) -> None:
        self.streams = streams
        self.feed = feed
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.streams.release(self.feed)


class PullStreams:
    def __init__(self, relay: DownloadRelay, hive_of: Callable[[str], HiveInfo | None], config: PullStreamConfig):
        self.relay = relay
        self.hive_of = hive_of
        self.config = config
        self._watched: dict[str, _Watched] = {}

    def feeds(self) -> int:
        return len(self._watched)

    async def open(self, pull: Pull) -> PullClient:
        """Join the pull's feed (starting it if nobody watches); returns once it has primed."""
        watched = self._watched.get(pull.pull_id)
        if watched is None:
            extra = {"orchestrator_id": self.config.orchestrator_id, "model_ref": pull.model_ref, "commit": pull.commit}
            watched = _Watched(PullFeed(pull.pull_id, pull.downloads, {k: v for k, v in extra.items() if v}))
            self._watched[pull.pull_id] = watched
            watched.tasks = [
                asyncio.create_task(self._follow(watched.feed, hive_id, download_id), name=f"pull-{hive_id}")
                for hive_id, download_id in pull.downloads.items()
            ]
        watched.clients += 1
        feed = watched.feed
        client = PullClient(self, feed)
        if not feed.primed:
            try:
                async with asyncio.timeout(self.config.prime_timeout):
                    while not feed.primed:
                        await feed.wait_after(0)
            except TimeoutError:
                log.info("pull_feed_primed_late", pull_id=pull.pull_id, waited=self.config.prime_timeout)
                feed.prime()
            except BaseException:
                client.close()
                raise
        return client

    def release(self, feed: PullFeed) -> None:
        """A client left (call once per `open`); the last one out stops the feed."""
        watched = self._watched.get(feed.pull_id)
        if watched is None or watched.feed is not feed:
            return
        watched.clients -= 1
        if watched.clients <= 0:
            del self._watched[feed.pull_id]
            for task in watched.tasks:
                task.cancel()

    async def aclose(self) -> None:
        tasks = [t for w in self._watched.values() for t in w.tasks]
        self._watched.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def _follow(self, feed: PullFeed, hive_id: str, download_id: str) -> None:
        bound = log.bind(pull_id=feed.pull_id, hive_id=hive_id, download_id=download_id)
        backoff = Backoff(self.config.backoff_initial, self.config.backoff_max)
        lost_at: float | None = None
        while True:
            hive = self.hive_of(hive_id)
            try:
                if hive is None:
                    raise ApiError(404, "UNKNOWN_HIVE", f"hive {hive_id!r} is no longer registered")
                attached = await self.relay.attach(download_id, hive, feed.last_id(hive_id) or None)
            except ApiError as exc:
                lost_at = lost_at if lost_at is not None else time.monotonic()
                if time.monotonic() - lost_at >= self.config.budget:
                    bound.warning("pull_hive_lost", error=exc.message)
                    feed.publish(hive_id, _lost(feed, hive_id, download_id, exc, self.config))
                    return
                await asyncio.sleep(backoff.next())
                continue
            if attached is None:  # the relay says the feed has had this hive's terminal event
                return
            sub, queue = attached
            lost_at = None
            try:
                while batch := await queue.next_batch():
                    backoff.reset()
                    for event in batch:
                        feed.publish(hive_id, event)
                        if event.is_terminal:
                            return
            finally:
                self.relay.detach(sub, queue)
            await asyncio.sleep(backoff.next())  # the relay ended without the terminal event: join again


def _lost(feed: PullFeed, hive_id: str, download_id: str, exc: ApiError, config: PullStreamConfig) -> ProgressEvent:
    """The error event of a hive's part that could not be followed for the whole budget."""
    code = ErrorCode.HIVE_UNREACHABLE.value if exc.status >= 500 else exc.code
    known = feed.hive_progress(hive_id)
    return ProgressEvent(
        feed.last_id(hive_id) + 1,
        EventType.ERROR,
        {
            "download_id": download_id,
            "error": f"hive {hive_id!r} could not be followed for {config.budget:g}s: {exc.message}",
            "code": code,
            "bytes": known.bytes if known else 0,
            "total": known.total if known else None,
            "orchestrator_id": config.orchestrator_id,
            "hive_id": hive_id,
        },
    )
