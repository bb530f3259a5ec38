"""Who reads the tracker's events: one download's subscriber, or one of every download's."""

from __future__ import annotations

from shared.mailbox import Mailbox

__all__ = ["StreamDecision", "Subscriber"]


class Subscriber(Mailbox):
    """A reader of one download (download_id) or of every download on the hive (None)."""

    def __init__(self, download_id: str | None, after_id: int | None = None) -> None:
        super().__init__(maxsize=None, after_id=after_id)
        self.download_id = download_id


class StreamDecision:
    NOT_FOUND = "not_found"
    ENDED = "ended"  # Last-Event-ID at or past the terminal event: 204
    STREAM = "stream"
