"""When a file is split over several range connections (README, "Segmented downloads"): only a file
whose job allows it (a fleet pull's part from the hub does not: its peers follow the partial's
prefix), that is not a peer's partial followed as it grows, whose total
is known and whose bytes are pinned (a strong validator or the hub's digest: ranges from several
connections could otherwise mix two versions), that is not capped by choice, and that has at least
two chunks left; and, with HIVE_SPLIT_BELOW_BPS, only once one connection proves slow."""

from __future__ import annotations

import time

from services.hive.transfer.context import Context, Transfer
from services.hive.transfer.segments import SplitWatch

__all__ = ["may_split", "split_due"]


def may_split(ctx: Context, transfer: Transfer, offset: int) -> bool:
    """May the rest of the file from `offset` be split over several connections."""
    cfg = ctx.config
    if not transfer.job.may_split or transfer.total is None or transfer.following_partial:
        return False
    if cfg.segments < 2 or not (transfer.validator or transfer.job.pinned):
        return False  # without a strong validator, ranges from several connections could mix two files
    if ctx.throttle is not None and ctx.throttle.active(transfer.job.download_id):
        return False  # a capped download is slow by choice: more connections would not help
    return transfer.total - offset >= 2 * cfg.segment_min_bytes


def split_due(ctx: Context, watch: SplitWatch, now: float, transfer: Transfer, size: int) -> bool:
    """The watch says this connection is slow, and enough is left to split (either thread)."""
    return watch.observe(now, size, time.process_time) and may_split(ctx, transfer, size)
