"""When a peer hive is too slow to keep: one that trickles bytes is dropped for the next source.

Pure. A source that sends a few bytes on every attempt never fails one (an attempt that brought bytes
starts the count of failures again, `context.attempts_failed`), so the retry policy alone keeps it for
ever: 137 bytes of 3 MiB in 150 s, and the hub never asked. `PaceWatch` judges the source across its
attempts instead: consecutive windows of `window` seconds, the first opening at its first byte, timed
by the clock, so reconnecting, backing off and waiting for it all count (the file waits through them
too), but not the time this hive's own bandwidth limit held it back (`held`): that is slow by choice.
A window that closes under `min_bps` drops the source (HIVE_PEER_MIN_BPS, HIVE_PEER_SLOW_SECS).

An absolute floor rather than a rate relative to the hub's: an honest peer sends as fast as its own
source fills its partial (the seeder's hub connection), and this hive seldom knows the hub's rate for
the file, which it asks last. So the floor sits well under any hub link worth pulling models over:
it tells a broken or hostile peer from an honest one, never a fast peer from a faster hub. Dropping a
peer keeps what it sent (its bytes are pinned by the blob's digest, the next source resumes with Range)
and costs only the rest of the file from the hub. A peer that answers with a partial it is still
downloading (`X-Rbee-Blob-State: partial`) is not judged while it does: it grows as fast as that
hive's own source fills it (a seeder's hub link, or its bandwidth limit), and leaving it would take a
second copy from the hub at no better rate; a partial that stops growing ends its body on the
serving side (peers/blobs.py) and the reader moves on then.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PaceWatch"]


@dataclass(slots=True)
class PaceWatch:
    min_bps: float
    window: float
    _since: float | None = None
    _at: int = 0
    _held: float = 0.0

    def observe(self, now: float, received: int) -> bool:
        """Told the time (monotonic) and the bytes received so far, as bytes come; True = too slow,
        drop the source."""
        if self._since is None:
            self._since, self._at = now, received
            return False
        elapsed = now - self._since - self._held
        if elapsed < self.window:
            return False
        slow = received - self._at < self.min_bps * elapsed
        self._since, self._at, self._held = now, received, 0.0
        return slow

    def held(self, secs: float) -> None:
        """This hive held the transfer back for `secs` itself (its bandwidth limit): not the source's time."""
        if self._since is not None:
            self._held += secs

    def reason(self) -> str:
        return (
            f"the source sent under {self.min_bps:g} bytes/s for {self.window:g} s"
            " (HIVE_PEER_MIN_BPS, HIVE_PEER_SLOW_SECS)"
        )
