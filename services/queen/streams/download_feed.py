"""DownloadFeed: the events one queen client of one download reads, wherever they come from.

A download the aggregated stream is showing live is served from it (`AggregateHub.follow`): a burst
of clients opens no connection to the hive, and the hive writes each event once for the queen
instead of once per watched download. Anything else (not seen yet, ended, its hive's stream down)
goes through the per-download relay, which also answers 204 and 404 and keeps the unreachable
budget. When the hive's stream drops under a followed client, the feed goes on from the relay
after the last id it gave out, so the client sees one stream with every id in order and exactly one
terminal event, as if it had been relayed from the start.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.queen.hives.registry import HiveInfo
from services.queen.streams.aggregate import AggregateHub
from services.queen.streams.relay import DownloadRelay, Subscription
from shared.mailbox import Mailbox
from shared.models import ProgressEvent

__all__ = ["DownloadFeed", "open_feed"]


async def open_feed(
    hub: AggregateHub, relay: DownloadRelay, download_id: str, hive: HiveInfo, after: int | None
) -> DownloadFeed | None:
    """A client's feed of one download; None means 204 (it ended at or before `after`).

    Raises ApiError (from the relay): 404 when the hive does not know the download, 503 when it cannot
    be reached.
    """
    followed = hub.follow(download_id, hive.hive_id, after)
    if followed is not None:
        queue, latest = followed
        return DownloadFeed(hub, relay, download_id, hive.hive_id, after, queue, None, latest)
    attached = await relay.attach(download_id, hive, after)
    if attached is None:
        return None
    sub, queue = attached
    return DownloadFeed(hub, relay, download_id, hive.hive_id, after, queue, sub)


class DownloadFeed:
    def __init__(
        self,
        hub: AggregateHub,
        relay: DownloadRelay,
        download_id: str,
        hive_id: str,
        after: int | None,
        queue: Mailbox,
        sub: Subscription | None,
        shown: ProgressEvent | None = None,
    ) -> None:
        self.hub, self.relay = hub, relay
        self.download_id, self.hive_id = download_id, hive_id
        self.last = after  # the last id this client has been given (or its Last-Event-ID)
        self._shown = shown  # the latest event it has been shown (or held back from, by its Last-Event-ID)
        self._queue = queue
        self._sub = sub  # None while the aggregated stream serves it
        self._closed = False

    async def events(self) -> AsyncIterator[ProgressEvent]:
        """Every event up to and including the terminal one (or until the relay gives up)."""
        while True:
            while batch := await self._queue.next_batch():
                for event in batch:
                    self.last, self._shown = event.id, event
                    yield event
                    if event.is_terminal:
                        return
            if self._sub is not None or self._closed or self.hub.closing:
                return  # the relay has ended (its own last word sent), or the queen is stopping
            # The hive's stream dropped before this download ended: on from the per-download relay.
            self.hub.unfollow(self.download_id, self._queue)
            attached = self.relay.resume(self.download_id, self.hive_id, self.last or 0, self._shown)
            if attached is None:
                return
            self._sub, self._queue = attached

    def close(self) -> None:
        """The client left (idempotent)."""
        self._closed = True
        if self._sub is not None:
            self.relay.detach(self._sub, self._queue)
        else:
            self.hub.unfollow(self.download_id, self._queue)
