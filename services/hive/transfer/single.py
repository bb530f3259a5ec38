"""The single-connection transfer: one connection, resumed with Range as often as needed.

A body starts on the event loop (`read_body`); one that proves fast goes on on a worker thread
(`threaded.read_body_threaded`), one that proves slow is split over several connections
(`segmented`), see Outcome. The first request asks for `bytes=0-`: a 206 tells the size and that
ranges work, a 200 is simply the whole file.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from services.hive.net.answers import (
    content_length,
    content_range,
    content_range_end,
    unsatisfied_total,
    validator_of,
)
from services.hive.net.errors import Retry
from services.hive.net.request import body_errors, check_status
from services.hive.transfer.context import Context, Outcome, Transfer, attempts_failed
from services.hive.transfer.mirrors import watch_complete
from services.hive.transfer.segments import RateWindow, SegmentPlan, SplitWatch, chunk_size
from services.hive.transfer.split import may_split, split_due
from services.hive.transfer.threaded import read_body_threaded

__all__ = ["open_partial", "read_body", "single"]


async def open_partial(ctx: Context, t: Transfer) -> None:
    """Continue a partial an earlier run left (when it can be trusted), else start empty."""
    part, bound = t.part, t.bound
    if (t.job.validator or t.job.pinned) and part.path.is_file():
        size = await part.open_existing()
        if t.total is None or size <= t.total:
            bound.info("download_resuming_partial", offset=size)
            if size:
                ctx.resumed(t)
            return
        bound.warning("download_partial_discarded", reason="larger than the file", size=size)
    elif part.path.exists():
        bound.info("download_partial_discarded", reason="no validator to resume it safely")
    t.validator = None
    await part.open_fresh()


async def single(ctx: Context, t: Transfer, probe: bool) -> SegmentPlan | None:
    """One connection, resumed as often as needed; a SegmentPlan when the rest should be split.

    With `probe` the download may split: at once after a one-byte probe (split_below_bps 0),
    or when a SplitWatch finds the connection slow (the first request asks for `bytes=0-`,
    so a 206 tells that ranges work without a request of its own)."""
    cfg = ctx.config
    part = t.part
    failures = 0
    # a peer's blob goes on a worker thread from its first byte when it is large: peers share the
    # cluster's network, where a body proves fast anyway (README, "Fleet pulls")
    threaded = cfg.thread_above_bps <= 0 or (t.job.peer and (t.total or 0) >= cfg.thread_min_rest)
    while True:
        offset_before = part.size
        try:
            outcome = await _attempt(ctx, t, probe, threaded)
            if t.total is None or part.size >= t.total:
                return None
            if outcome is Outcome.SPLIT:
                size = chunk_size(t.total - part.size, cfg.segments, cfg.segment_min_bytes)
                t.bound.info("download_split", offset=part.size, total=t.total, segments=cfg.segments)
                await part.flush()
                return SegmentPlan.plan(t.total, part.size, size)
            if outcome is Outcome.THREAD:
                t.bound.info("download_threaded", offset=part.size, total=t.total)
                threaded = True
                continue
            probe = False  # ranges work but the file is small: carry on with Range from here
            continue
        except Retry as retry:
            probe = probe and cfg.split_below_bps > 0  # a resumed connection may still prove slow
            await part.flush()
            failures = attempts_failed(retry, failures, part.size > offset_before)
            await ctx.backoff(t, retry, failures, part.size)
            if part.size > 0:
                ctx.resumed(t)


async def _attempt(ctx: Context, t: Transfer, probe: bool, threaded: bool) -> Outcome:
    """One request; returns when the body ended or should go on another way (see Outcome);
    raises Retry or DownloadError. With a probe and split_below_bps 0 it asks for the first
    byte only."""
    job, part, tracker = t.job, t.part, t.tracker
    headers = {"Accept-Encoding": "identity"}
    offset = part.size
    # (with mirrors at once: the pieces spread over the peers that hold the blob, README "Fleet pulls")
    one_byte = probe and offset == 0 and (ctx.config.split_below_bps <= 0 or bool(job.mirrors))
    if one_byte:
        headers["Range"] = "bytes=0-0"
    elif offset == 0:
        headers["Range"] = "bytes=0-"
    else:
        headers["Range"] = f"bytes={offset}-"
        if t.validator and not job.pinned:
            headers["If-Range"] = t.validator
    threaded = threaded and not one_byte  # (the probe's one byte is read on the loop)
    resp = await ctx.requester.open(t.source, headers, threaded=threaded)
    watcher: asyncio.Task[None] | None = None
    try:
        status = resp.status_code
        if status == 416:  # (every request asks for a range)
            stated = unsatisfied_total(resp.headers)
            if (stated if stated is not None else t.total) == offset:
                if offset == 0:  # not even byte 0 exists: the file is empty
                    t.total = 0
                    tracker.set_total(job.download_id, 0)
                return Outcome.DONE  # the partial already holds the whole file
            t.bound.warning("download_restart", reason="416 on resume", offset=offset)
            await part.open_fresh()
            raise Retry("range not satisfiable; restarting from zero")
        check_status(resp, t.source)
        if status == 206:
            answered = content_range(resp.headers)
            if answered is None or answered[0] != offset:
                await part.open_fresh()
                raise Retry("unexpected Content-Range; restarting from zero")
            t.total = answered[1]
        else:
            if offset > 0:
                # asked for a range, got the whole file: the remote changed (or ignores ranges)
                t.bound.warning("download_restart", reason=f"status {status} to a range request", offset=offset)
                await part.open_fresh()
            t.total = content_length(resp.headers)
        if t.total is not None:
            tracker.set_total(job.download_id, t.total)
            ctx.check_disk(job.dest.parent, t.total - part.size)
        t.validator = validator_of(resp.headers) or t.validator
        t.answered()
        t.following_partial = resp.headers.get("x-rbee-blob-state") == "partial"
        if t.following_partial and t.job.may_split and ctx.config.segments > 1 and watcher is None:
            watcher = asyncio.create_task(watch_complete(ctx, t))  # (a complete blob's rest goes in ranges)
        t.downloading()
        if one_byte and status == 206:
            await read_body(ctx, t, resp, None, False)
            return Outcome.SPLIT if may_split(ctx, t, part.size) else Outcome.DONE
        watch = None
        if probe and status == 206 and may_split(ctx, t, part.size):
            watch = SplitWatch(ctx.config.split_below_bps)
        if threaded:
            outcome = await read_body_threaded(ctx, t, resp, watch)
        else:
            may_move = status == 206 and (t.validator is not None or job.pinned)  # resumable on another connection
            outcome = await read_body(ctx, t, resp, watch, may_move)
        if outcome is not Outcome.DONE:
            return outcome
        if t.total is not None and part.size != t.total:
            end = content_range_end(resp.headers) if status == 206 else None
            if end is not None and part.size == end + 1 and part.size > offset:
                return Outcome.DONE  # a bounded range (HIVE_RANGE_LIMIT_BYTES) ended whole: ask the next
            raise Retry(f"body ended at {part.size} of {t.total} bytes")
        return Outcome.DONE
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        await ctx.requester.close(resp)  # (a body left unread closes its connection)


async def read_body(
    ctx: Context, t: Transfer, resp: httpx.Response, watch: SplitWatch | None, may_move: bool
) -> Outcome:
    """Read the body into the partial on the event loop. SPLIT when the watch says so, THREAD
    when the connection proves fast and enough is left (`may_move`); the rest is left unread."""
    download_id = t.job.download_id
    part = t.part
    update = t.tracker.update_progress
    throttle = ctx.throttle
    stats = ctx.stats
    clock = time.monotonic
    thread_above_bps = ctx.config.thread_above_bps
    thread_min_rest = ctx.config.thread_min_rest
    rates = RateWindow() if may_move else None
    with body_errors(ctx.config.stall_timeout):
        async for chunk in resp.aiter_raw():
            stats.bytes_downloaded += len(chunk)
            await part.write(chunk)
            update(download_id, part.size)
            if throttle is not None and throttle.active(download_id):
                held = clock()
                await throttle.consume(download_id, len(chunk))
                t.held_back(clock() - held)
            now = clock()
            t.keep_pace(now)
            if watch is not None and split_due(ctx, watch, now, t, part.size):
                return Outcome.SPLIT
            if t.peer_complete and may_split(ctx, t, part.size):
                return Outcome.SPLIT  # the peer's partial became its blob: the rest in ranges
            if rates is not None and (rate := rates.observe(now, part.size)) is not None:
                if rate >= thread_above_bps:
                    if t.total is not None and t.total - part.size >= thread_min_rest:
                        return Outcome.THREAD
                    rates = None
    return Outcome.DONE
