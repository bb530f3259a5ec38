"""The threaded body reader: a fast body read on a worker thread with httpx's sync client.

On the event loop, httpx cost 1.90 s per GiB from local nginx against 1.58 s on a thread (the
loop's per-read work: transport pause/resume, buffer copies), and the loop stays free for the
SSE streams. Slow bodies and segment connections stay async (see
DownloaderConfig.thread_above_bps).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any

import httpx

from services.hive.net.request import body_errors
from services.hive.transfer.context import Context, Outcome, Transfer
from services.hive.transfer.httpcore_tuning import body_chunks, shut_down
from services.hive.transfer.segments import SplitWatch
from services.hive.transfer.split import may_split, split_due

__all__ = ["read_body_threaded"]

_PROGRESS_LOOK = 0.025  # how often the loop takes a threaded body's byte count


class _Progress:
    """Bytes from a worker thread to the event loop: the thread only stores the newest count, and
    the loop looks every _PROGRESS_LOOK seconds. Posting each chunk with call_soon_threadsafe
    cost the body thread ~0.1 s of self-pipe writes per GiB (py-spy), and woke the loop as often."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.size = size  # written by the worker thread, read by the loop (an int: no lock needed)


async def read_body_threaded(ctx: Context, t: Transfer, resp: httpx.Response, watch: SplitWatch | None) -> Outcome:
    """Read the body into the partial on a worker thread; SPLIT when the watch says so (the
    rest is left unread). A cancel stops the thread (its socket is shut down) before it returns."""
    loop = asyncio.get_running_loop()
    download_id = t.job.download_id
    tracker, part = t.tracker, t.part
    stats = ctx.stats
    counted = part.size
    progress = _Progress(loop, part.size)

    def report(size: int) -> None:  # on the event loop
        nonlocal counted
        stats.bytes_downloaded += size - counted
        counted = size
        tracker.update_progress(download_id, size)

    timer: asyncio.TimerHandle

    def look() -> None:
        nonlocal timer
        if progress.size != counted:
            report(progress.size)
        timer = loop.call_later(_PROGRESS_LOOK, look)

    timer = loop.call_later(_PROGRESS_LOOK, look)
    stop = threading.Event()
    pump = loop.run_in_executor(ctx.body_threads, _pump, ctx, t, resp, watch, stop, progress)
    try:
        with body_errors(ctx.config.stall_timeout):
            outcome = await asyncio.shield(pump)
    except asyncio.CancelledError:
        stop.set()
        shut_down(resp)  # wakes a thread blocked in recv()
        await asyncio.gather(pump, return_exceptions=True)
        raise
    finally:
        timer.cancel()
        if counted != part.size and not stop.is_set():
            report(part.size)
    return outcome


def _pump(
    ctx: Context,
    t: Transfer,
    resp: httpx.Response,
    watch: SplitWatch | None,
    stop: threading.Event,
    progress: _Progress,
) -> Outcome:
    """On a worker thread: the body into the partial, progress posted to the loop."""
    download_id = t.job.download_id
    part = t.part
    throttle = ctx.throttle
    clock = time.monotonic
    for chunk in body_chunks(resp, ctx.config.stall_timeout):
        if stop.is_set():
            return Outcome.DONE
        part.write_blocking(chunk)
        progress.size = part.size
        now = clock()
        t.keep_pace(now)
        if throttle is not None and throttle.active(download_id):
            waiting = asyncio.run_coroutine_threadsafe(throttle.consume(download_id, len(chunk)), progress.loop)
            while not _wait(waiting, 0.1):
                if stop.is_set():
                    waiting.cancel()
                    return Outcome.DONE
            t.held_back(clock() - now)
        if watch is not None and split_due(ctx, watch, now, t, part.size):
            return Outcome.SPLIT
        if t.peer_complete and may_split(ctx, t, part.size):
            return Outcome.SPLIT  # the peer's partial became its blob: the rest in ranges
    return Outcome.DONE


def _wait(future: concurrent.futures.Future[Any], timeout: float) -> bool:
    try:
        future.result(timeout)
        return True
    except concurrent.futures.TimeoutError:
        return False
