"""The segmented transfer: the rest of a file fetched over several range connections at once.

Each connection takes a chunk of the SegmentPlan and writes it in place (pwrite); a hash follower
hashes the file in order as the contiguous written prefix grows. The plan is checkpointed about
once a second, so a restarted hive resumes exactly what is missing. A peer's blob may come from
several peers at once, the connections spread over them (`mirrors.SourcePool`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

import httpx

from services.hive.disk.fileio import hash_range, in_thread, pwrite_all
from services.hive.net.answers import content_range
from services.hive.net.errors import DownloadError, RemoteChanged, Retry
from services.hive.net.request import body_errors, check_status
from services.hive.transfer.context import Context, Transfer, attempts_failed
from services.hive.transfer.mirrors import SourcePool, SourceSlot, probe_mirrors
from services.hive.transfer.segments import Chunk, SegmentPlan
from shared.models import ErrorCode

__all__ = ["saved_plan", "segmented"]


@dataclass(slots=True)
class _SegmentRun:
    plan: SegmentPlan
    received: int  # bytes received over every connection (what progress shows)
    moved: asyncio.Event  # set whenever written bytes advance
    reported: float = 0.0


async def saved_plan(ctx: Context, t: Transfer) -> SegmentPlan | None:
    """The plan of a segmented partial left by an earlier run, if file and plan agree."""
    job, part = t.job, t.part
    if not (job.segments and (job.validator or job.pinned)):  # (pinned: whatever serves it, the digest checks it)
        return None
    plan = SegmentPlan.from_json(job.segments)
    if plan is None or not part.path.is_file() or part.path.stat().st_size != plan.total:
        # a segmented partial has holes: without its plan it is no prefix to resume from
        t.bound.info("download_partial_discarded", reason="segment plan and partial disagree")
        part.path.unlink(missing_ok=True)
        return None
    for chunk in plan.chunks:
        chunk.taken = False
    t.total = plan.total
    ctx.resumed(t)
    t.bound.info("download_resuming_segments", written=plan.written(), total=plan.total)
    return plan


async def segmented(ctx: Context, t: Transfer, plan: SegmentPlan, saved: bool = False) -> tuple[str, int]:
    """Fetch the plan's chunks over several connections, writing in place; (sha256, size)."""
    loop = asyncio.get_running_loop()
    job, part = t.job, t.part
    if saved:  # an earlier run's partial: the hash follower re-reads what it holds
        digest: Any = hashlib.sha256()
        hashed = 0
    else:
        await t.checkpoints.persist_segments(job.download_id, plan.to_json())
        digest, hashed = await part.detach()
    pool = await probe_mirrors(ctx, t, plan.total)  # (before anything is opened: a cancel here leaks nothing)
    f: IO[bytes] = await loop.run_in_executor(ctx.io, open, part.path, "r+b")
    fd = f.fileno()
    await loop.run_in_executor(ctx.io, os.ftruncate, fd, plan.total)
    t.tracker.set_total(job.download_id, plan.total)
    # the partial is sparse: only what it does not hold yet (by the plan or by allocated blocks) needs room
    held = max(plan.written(), (await loop.run_in_executor(ctx.io, os.fstat, fd)).st_blocks * 512)
    ctx.check_disk(job.dest.parent, plan.total - held)
    t.downloading()
    hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rbee-hash")
    seg = _SegmentRun(plan, plan.written(), asyncio.Event())
    follower = asyncio.create_task(_hash_follower(fd, digest, hashed, seg, hasher))
    workers = [
        asyncio.create_task(_segment_worker(ctx, t, fd, seg, pool, i))
        for i in range(min(ctx.config.segments, len(plan.chunks)))
    ]
    try:
        done, pending = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()
        seg.moved.set()
        sha = await follower
        await in_thread(ctx.io, os.fsync, fd)
    finally:
        # Also when this task is cancelled (a cancel, a shutdown): every worker and the follower end,
        # with their file I/O (in_thread), before the descriptor is closed under them.
        follower.cancel()
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, follower, return_exceptions=True)
        t.checkpoints.checkpoint_segments(job.download_id, plan.to_json())  # the exact plan, for a resume
        hasher.shutdown(wait=False)
        await in_thread(ctx.io, f.close)
    return sha, plan.total


async def _hash_follower(fd: int, digest: Any, hashed: int, seg: _SegmentRun, hasher: ThreadPoolExecutor) -> str:
    """Hash the file in order, following the contiguous written prefix as it grows."""
    total = seg.plan.total
    while hashed < total:
        frontier = seg.plan.frontier()
        if frontier <= hashed:
            seg.moved.clear()
            await seg.moved.wait()
            continue
        await in_thread(hasher, hash_range, fd, digest, hashed, frontier)
        hashed = frontier
    return str(digest.hexdigest())


async def _segment_worker(ctx: Context, t: Transfer, fd: int, seg: _SegmentRun, pool: SourcePool, index: int) -> None:
    """Connection `index`: chunks until none is left, from its source; when that source is dropped
    (its attempts used up, too slow, a wrong answer) and others are left, from another one."""
    slot = pool.pick(index)
    while (chunk := seg.plan.take()) is not None:
        failures = 0
        try:
            while not chunk.done:
                if slot.dropped is not None:  # (by another connection)
                    slot = pool.pick(index)
                    failures = 0
                before = chunk.written
                try:
                    try:
                        await _fetch_chunk(ctx, t, fd, chunk, seg, slot)
                    except Retry as retry:
                        failures = attempts_failed(retry, failures, chunk.written > before)
                        await ctx.backoff(t, retry, failures, chunk.written)
                        ctx.resumed(t)
                except RemoteChanged:
                    if not pool.several:
                        raise
                    slot = pool.drop(
                        slot, DownloadError(ErrorCode.DOWNLOAD_FAILED, "not the range asked for"), index, t
                    )
                    failures = 0
                except DownloadError as exc:
                    if exc.code == ErrorCode.INSUFFICIENT_DISK:
                        raise
                    slot = pool.drop(slot, exc, index, t)
                    failures = 0
        finally:
            seg.plan.release(chunk)


async def _fetch_chunk(ctx: Context, t: Transfer, fd: int, chunk: Chunk, seg: _SegmentRun, slot: SourceSlot) -> None:
    headers = {"Accept-Encoding": "identity", "Range": f"bytes={chunk.written}-{chunk.end - 1}"}
    source = slot.source
    if t.validator and not t.job.pinned and source is t.source:  # (as single's: a pinned file's digest guards it,
        headers["If-Range"] = t.validator  # and the validator may be another source's, a peer's ETag)
    resp = await ctx.requester.open(source, headers)
    try:
        check_status(resp, source)
        if source is t.source:
            t.answered()
        answered = content_range(resp.headers)
        if resp.status_code != 206 or answered is None:
            raise RemoteChanged()
        if answered[0] != chunk.written or answered[1] != seg.plan.total:
            raise RemoteChanged()
        await _read_chunk(ctx, t, fd, chunk, seg, resp, slot)
    finally:
        await resp.aclose()
    if not chunk.done:
        raise Retry(f"range ended at {chunk.written} of {chunk.end}")


async def _read_chunk(
    ctx: Context, t: Transfer, fd: int, chunk: Chunk, seg: _SegmentRun, resp: httpx.Response, slot: SourceSlot
) -> None:
    download_id = t.job.download_id
    update = t.tracker.update_progress
    throttle = ctx.throttle
    stats = ctx.stats
    batch: list[bytes] = []
    batched = 0
    # one write-batch budget per download, shared by its connections: memory stays flat
    limit = max(256 * 1024, ctx.config.write_batch_bytes // max(1, ctx.config.segments))

    async def flush() -> None:
        nonlocal batch, batched
        if not batch:
            return
        pieces, offset, n = batch, chunk.written, batched
        batch, batched = [], 0
        await in_thread(ctx.io, pwrite_all, fd, pieces, offset)
        chunk.written += n
        seg.moved.set()
        _report_segments(t, download_id, seg)

    try:
        with body_errors(ctx.config.stall_timeout):
            async for data in resp.aiter_raw():
                stats.bytes_downloaded += len(data)
                room = chunk.end - (chunk.written + batched)
                overrun = len(data) > room  # a server sending past the range: keep what we asked for
                if overrun:
                    data = data[:room]
                batch.append(data)
                batched += len(data)
                seg.received += len(data)
                update(download_id, seg.received)
                slot.observe(time.monotonic(), len(data))
                if slot.dropped is not None:
                    raise Retry("the source was dropped")  # (by another connection: this one moves on)
                if batched >= limit:
                    await flush()
                if throttle is not None and throttle.active(download_id):
                    held = time.monotonic()
                    await throttle.consume(download_id, len(data))
                    if slot.pace is not None:
                        slot.pace.held(time.monotonic() - held)  # (this hive's cap: not the source's pace)
                if overrun:
                    break  # (otherwise the body ends by itself and the connection goes back to the pool)
    finally:
        await flush()


def _report_segments(t: Transfer, download_id: str, seg: _SegmentRun) -> None:
    now = time.monotonic()
    if now - seg.reported >= 1.0:
        seg.reported = now
        t.checkpoints.checkpoint_segments(download_id, seg.plan.to_json())  # (a hub file's: its partial's notes)
