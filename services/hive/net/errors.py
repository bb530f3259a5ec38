"""How a transfer fails: for good (DownloadError, with a contract error code) or for now (Retry)."""

from __future__ import annotations

__all__ = ["DownloadError", "PeerNotReady", "RateLimited", "RemoteChanged", "Retry"]


class DownloadError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = str(code)
        self.message = message


class Retry(Exception):
    """This attempt failed in a way worth another try."""

    def __init__(self, reason: str, *, timeout: bool = False, delay: float | None = None) -> None:
        super().__init__(reason)
        self.timeout = timeout
        self.delay = delay


class RateLimited(Retry):
    """The hub's rate limit: wait `wait` seconds for its window; that is no failed attempt."""

    def __init__(self, reason: str, wait: float) -> None:
        super().__init__(reason, delay=wait)
        self.wait = wait

    @classmethod
    def by_hub(cls, wait: float, resource: str | None = None, remaining: int = 0) -> RateLimited:
        """The hub's window to wait out, as a download's `waiting_reason` shows it: the hub refused
        (a 429) or would refuse (its last answer left nothing of the bucket's window)."""
        said = f" ({resource}), r={remaining}" if resource is not None else ""
        return cls(f"rate limited by the hub{said}", wait)


class PeerNotReady(Retry):
    """A peer hive plans the blob but has not begun it: ask again in `delay` s; no failed attempt
    (bounded in time by HIVE_PEER_WAIT_SECS, so a peer that never begins is left for the next source)."""


class RemoteChanged(Exception):
    """A range request got the whole file back: the remote changed under a segmented download."""
