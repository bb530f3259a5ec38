"""Followers: the per-download clients the aggregated stream serves. Pure: the AggregateHub drives it.

Each client of one download has a mailbox of one event (the latest: a slow reader skips to the newest).
A download's mailboxes close after its terminal event, or when they are let go (its hive's stream
dropped, or the hive forgot it): their readers then go on from the per-download relay.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.mailbox import Mailbox
from shared.models import ProgressEvent

__all__ = ["Followers"]


class Followers:
    def __init__(self) -> None:
        self._by_download: dict[str, set[Mailbox]] = {}

    def add(self, download_id: str, latest: ProgressEvent, after: int | None) -> Mailbox:
        """A new client's mailbox, primed with the download's latest event (as `after` lets it)."""
        queue = Mailbox(maxsize=1, after_id=after)
        queue.offer(latest)
        self._by_download.setdefault(download_id, set()).add(queue)
        return queue

    def remove(self, download_id: str, queue: Mailbox) -> None:
        """A client left, or moved to the relay (idempotent)."""
        queue.close()
        followers = self._by_download.get(download_id)
        if followers is not None:
            followers.discard(queue)
            if not followers:
                del self._by_download[download_id]

    def count(self) -> int:
        return sum(len(f) for f in self._by_download.values())

    def downloads(self) -> list[str]:
        return list(self._by_download)

    def offer(self, event: ProgressEvent) -> None:
        """An event of a followed download to its clients; after its terminal event they are closed."""
        followers = self._by_download.get(event.download_id)
        if followers is None:
            return
        for queue in followers:
            queue.offer(event)  # (maxsize 1 and one download: never overflows)
        if event.is_terminal:
            self.let_go([event.download_id])

    def let_go(self, download_ids: Iterable[str]) -> None:
        """Close these downloads' clients (their readers go on elsewhere)."""
        for download_id in download_ids:
            for queue in self._by_download.pop(download_id, ()):
                queue.close()

    def close(self) -> None:
        self.let_go(self.downloads())
