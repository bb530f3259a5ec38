"""The sources a segmented transfer takes its ranges from (README, "Fleet pulls", "Sources and ranges").

A file from the hub has one source. A blob from peer hives may have several: the transfer's own (the
first peer that answered with the blob complete) and its *mirrors*, other peers the queen named for the
blob that hold it complete too (asked for its first byte, all at once, when the file is split; a peer
still downloading it is no mirror: its ranges past its safe prefix would only wait). The connections
spread over the sources (connection i starts on source i mod n), so several peers send pieces of one
file at once. A source whose attempts run out, that answers with something else than the range, or (a
peer) that sends under HIVE_PEER_MIN_BPS over HIVE_PEER_SLOW_SECS is dropped: its connections move to
the others and go on from where their ranges stand. When none is left the transfer fails with the last
source's error and the file's next source (another peer, finally the hub) resumes the segment plan.
Every byte is pinned by the blob's digest, checked once the file is whole.

A hive following a peer's partial over one connection asks the peer each second whether the blob is
complete there (`watch_complete`); once it is, the rest of the file is split like any complete blob's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.hive.net.answers import content_range
from services.hive.net.errors import DownloadError
from services.hive.net.source import Source
from services.hive.transfer.context import Context, Transfer
from services.hive.transfer.pace import PaceWatch
from shared.models import ErrorCode

__all__ = ["WATCH_SECS", "SourcePool", "SourceSlot", "probe_mirrors", "watch_complete"]

WATCH_SECS = 1.0  # how often a follower of a peer's partial asks whether the blob is complete there


@dataclass(slots=True, eq=False)
class SourceSlot:
    source: Source
    pace: PaceWatch | None = None  # a peer's: dropped when it sends too slowly
    received: int = 0  # bytes this source sent (what its pace is judged on)
    dropped: DownloadError | None = None  # why it was dropped

    def observe(self, now: float, size: int) -> None:
        """`size` more bytes came from this source: DownloadError once it is too slow to keep."""
        self.received += size
        if self.pace is not None and self.pace.observe(now, self.received):
            raise DownloadError(ErrorCode.DOWNLOAD_TIMEOUT, self.pace.reason())


class SourcePool:
    """The live sources of one segmented transfer, in order (the transfer's own first)."""

    def __init__(self, slots: list[SourceSlot]) -> None:
        self.slots = slots

    @property
    def several(self) -> bool:
        return sum(1 for s in self.slots if s.dropped is None) > 1

    def pick(self, index: int) -> SourceSlot:
        """Connection `index`'s source: spread over the live ones. DownloadError (the last source's
        reason) when none is left."""
        live = [s for s in self.slots if s.dropped is None]
        if not live:
            last = self.slots[-1].dropped
            raise last if last is not None else DownloadError(ErrorCode.DOWNLOAD_FAILED, "no source left")
        return live[index % len(live)]

    def drop(self, slot: SourceSlot, error: DownloadError, index: int, t: Transfer) -> SourceSlot:
        """`slot` failed (`error`): drop it and give connection `index` another live source, or raise
        `error` when none is left."""
        if slot.dropped is None:
            slot.dropped = error
            t.bound.warning("download_source_dropped", source=slot.source.url, reason=error.message)
        # (the last dropped source's error is what the transfer fails with)
        self.slots.remove(slot)
        self.slots.append(slot)
        return self.pick(index)


def slot_for(ctx: Context, t: Transfer, source: Source) -> SourceSlot:
    cfg = ctx.config
    pace = PaceWatch(cfg.peer_min_bps, cfg.peer_slow_secs) if t.job.peer and cfg.peer_min_bps > 0 else None
    return SourceSlot(source, pace)


async def probe_mirrors(ctx: Context, t: Transfer, total: int) -> SourcePool:
    """The pool of a split transfer: its own source, then each mirror that answers now with the blob
    complete and of `total` bytes."""
    job = t.job
    candidates = [Source.of(url, None, None, job.peer_token) for url in job.mirrors]
    found = await asyncio.gather(*(_complete(ctx, s, total) for s in candidates))
    mirrors = [s for s, ok in zip(candidates, found, strict=True) if ok]
    if job.mirrors:
        t.bound.info("download_mirrors", asked=len(job.mirrors), complete=len(mirrors))
    return SourcePool([slot_for(ctx, t, s) for s in (t.source, *mirrors)])


async def _complete(ctx: Context, source: Source, total: int) -> bool:
    headers = {"Range": "bytes=0-0", "Accept-Encoding": "identity"}
    try:
        resp = await ctx.requester.open(source, headers)
    except Exception:  # (refused, timed out, not allowed: no mirror)
        return False
    try:
        answered = content_range(resp.headers)
        return (
            resp.status_code == 206
            and resp.headers.get("x-rbee-blob-state") == "complete"
            and answered is not None
            and answered[1] == total
        )
    finally:
        await resp.aclose()


async def watch_complete(
    ctx: Context, t: Transfer, sleep: Callable[[float], Awaitable[object]] = asyncio.sleep
) -> None:
    """While the transfer follows a peer's partial: ask the peer for the blob's first byte every
    WATCH_SECS; once it answers `complete`, the partial is no longer followed (`peer_complete`: the
    body's reader splits the rest). Ends then, or when cancelled (the body ended)."""
    source = Source.of(t.job.url, None, None, t.job.peer_token)
    while t.following_partial:
        await sleep(WATCH_SECS)
        try:
            resp = await ctx.requester.open(source, {"Range": "bytes=0-0", "Accept-Encoding": "identity"})
        except Exception:  # (the body's own connection tells of a peer gone)
            continue
        try:
            if resp.status_code == 206 and resp.headers.get("x-rbee-blob-state") == "complete":
                t.following_partial, t.peer_complete = False, True
        finally:
            await resp.aclose()
