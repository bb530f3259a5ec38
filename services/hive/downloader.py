"""The HTTP transfer of one file: resumable, retried, verified, atomically put in place.

Talks HTTP (httpx) but knows nothing of FastAPI. It reports bytes to the DownloadTracker and
raises DownloadError with a contract error code when it gives up. Policy (what to do with a
partial file after a cancel or failure) belongs to the caller.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.utils
import enum
import errno
import functools
import hashlib
import os
import random
import re
import shutil
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx
import structlog

from services.hive.metrics import HiveStats
from services.hive.partfile import FilePools, PartFile, hash_range, pwrite_all
from services.hive.refs import PART_SUFFIX, host_allowed, origin_of
from services.hive.segments import Chunk, RateWindow, SegmentPlan, SplitWatch, chunk_size
from services.hive.throttle import Throttle
from services.hive.tracker import DownloadTracker
from shared.backoff import Backoff
from shared.models import DownloadStatus, ErrorCode

__all__ = ["DownloadError", "DownloadJob", "Downloader", "DownloaderConfig", "part_path"]

log = structlog.get_logger()

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUSES = frozenset({408, 429})
_MAX_REDIRECTS = 10
_RAW_READ = 1024 * 1024  # bytes per socket read of a body read straight off the connection
_PROGRESS_LOOK = 0.025  # how often the loop takes a threaded body's byte count


def _raise_httpcore_read_size(size: int = 1024 * 1024) -> None:
    """httpcore reads a body 64 KiB per socket read; for multi-GB files that per-read overhead
    dominated the hive's CPU (measured from local nginx: 216-233 MB/s at 64 KiB, 325-575 MB/s at
    1 MiB). A guarded override of its class constants: without it we only lose speed."""
    try:
        from httpcore._async.http11 import AsyncHTTP11Connection
        from httpcore._sync.http11 import HTTP11Connection
    except ImportError:  # pragma: no cover - a future httpcore
        return
    for cls in (AsyncHTTP11Connection, HTTP11Connection):
        current = getattr(cls, "READ_NUM_BYTES", None)
        if isinstance(current, int) and current < size:
            cls.READ_NUM_BYTES = size


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + PART_SUFFIX)


class DownloadError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = str(code)
        self.message = message


class _Outcome(enum.Enum):
    DONE = "done"  # the body ended (whole or short: the caller checks)
    SPLIT = "split"  # slow: split the rest over several connections
    THREAD = "thread"  # fast: read the rest on a worker thread (a new request from here)


class _RemoteChanged(Exception):
    """A range request got the whole file back: the remote changed under a segmented download."""


class _Retry(Exception):
    """This attempt failed in a way worth another try."""

    def __init__(self, reason: str, *, timeout: bool = False, delay: float | None = None) -> None:
        super().__init__(reason)
        self.timeout = timeout
        self.delay = delay


@dataclass(frozen=True, slots=True)
class DownloadJob:
    download_id: str
    url: str
    dest: Path
    expected_sha256: str | None = None
    token_origin: str | None = None  # the only origin HF_TOKEN is sent to (the hub's)
    validator: str | None = None  # set when resuming a partial left by an earlier run
    total: int | None = None
    segments: str | None = None  # a saved SegmentPlan (JSON) when that partial was segmented


@dataclass(frozen=True, slots=True)
class DownloadResult:
    sha256: str
    size: int
    resumed: int  # how many times a transfer was resumed with Range


@dataclass(slots=True)
class _Transfer:
    """What one download has learnt so far, kept across attempts."""

    total: int | None = None
    validator: str | None = None  # for If-Range
    remote_sha256: str | None = None  # from the hub's X-Linked-Etag or a sha256 ETag
    resumed: int = 0


@dataclass(frozen=True, slots=True)
class DownloaderConfig:
    connect_timeout: float = 10.0
    stall_timeout: float = 30.0
    max_attempts: int = 6
    retry_base_delay: float = 0.5
    retry_max_delay: float = 30.0
    write_batch_bytes: int = 2 * 1024 * 1024
    hf_token: str | None = None
    segments: int = 1  # parallel range connections for a large file
    segment_min_bytes: int = 8 * 1024 * 1024  # smallest chunk; files under two chunks use one connection
    # split over `segments` connections only while one connection is slower than this (bytes/s);
    # 0 = split every large file at once, after a one-byte probe
    split_below_bps: int = 0
    direct_io: bool = True  # write the partial with O_DIRECT where the filesystem allows (see partfile.py)
    # A body starts on the event loop; one that runs faster than thread_above_bps (over a RateWindow)
    # with at least thread_min_rest left goes on from there on a worker thread (0 = always on a thread).
    # On the loop, httpx took 1.90 s per GiB from local nginx against 1.46 s on a thread; but 100 slow
    # downloads on threads raised the SSE p99 from 43 to 67 ms (their wake-ups cost the whole
    # machine), so slow bodies stay on the loop.
    thread_above_bps: int = 50_000_000
    thread_min_rest: int = 64 * 1024 * 1024
    allowed_hosts: frozenset[tuple[str, int | None]] | None = None  # HIVE_ALLOWED_HOSTS; None = any


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, float(when.timestamp()) - (time.time() if now is None else now))


def backoff_delay(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter: uniform in [0.5, 1] x base * 2^(attempt-1), capped
    (a base above the cap waits the cap)."""
    return Backoff(min(base, cap), cap, spread=(0.5, 1.0), rng=rand).delay(attempt)


def sha256_from_etag(value: str | None) -> str | None:
    if not value:
        return None
    tag = value.strip()
    if tag.startswith("W/"):
        return None
    tag = tag.strip('"').lower()
    return tag if _SHA256_RE.fullmatch(tag) else None


def _validator(resp: httpx.Response) -> str | None:
    """A strong validator for If-Range: a strong ETag, else Last-Modified."""
    etag: str | None = resp.headers.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    modified: str | None = resp.headers.get("last-modified")
    return modified


def _content_range(resp: httpx.Response) -> tuple[int, int | None] | None:
    """(start, total) from `Content-Range: bytes start-end/total`."""
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("content-range", "").strip())
    if m is None:
        return None
    return int(m[1]), None if m[3] == "*" else int(m[3])


class Downloader:
    def __init__(self, client: httpx.AsyncClient, config: DownloaderConfig) -> None:
        self.client = client
        self.config = config
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="rbee-io")
        # A fast single connection's body goes on on a worker thread with httpx's sync client (see
        # thread_above_bps): on the event loop, httpx cost 1.90 s per GiB from local nginx against
        # 1.58 s on a thread (the loop's per-read work: transport pause/resume, buffer copies), and
        # the loop stays free for the SSE streams. Slow bodies and segment connections stay async.
        self.sync_client = httpx.Client(
            timeout=self.timeouts(config),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=16),
            headers=client.headers,
        )
        self._body_threads = ThreadPoolExecutor(max_workers=256, thread_name_prefix="rbee-body")
        self._file_pools = FilePools()
        _raise_httpcore_read_size()
        self.disk_free: Callable[[Path], int] = lambda d: shutil.disk_usage(d).free
        self.throttle: Throttle | None = None
        self.stats = HiveStats()  # counters for /metrics
        # told (download_id, validator, total) whenever a transfer learns them, for checkpoints
        self.on_checkpoint: Callable[[str, str | None, int | None], None] | None = None
        # told (download_id, SegmentPlan JSON) about once a second while a segmented transfer writes
        self.on_segments: Callable[[str, str], None] | None = None
        # awaited with (download_id, SegmentPlan JSON) before a partial is first extended to its full size:
        # from then on only the plan tells written bytes from holes, so it must be durable first
        self.before_segmented: Callable[[str, str], Awaitable[None]] | None = None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._body_threads.shutdown(wait=False, cancel_futures=True)
        self._file_pools.shutdown()
        self.sync_client.close()

    @staticmethod
    def timeouts(config: DownloaderConfig) -> httpx.Timeout:
        # read = stall detection: no bytes for stall_timeout counts as a dropped connection
        return httpx.Timeout(connect=config.connect_timeout, read=config.stall_timeout, write=30.0, pool=30.0)

    async def run(self, job: DownloadJob, tracker: DownloadTracker) -> DownloadResult:
        cfg = self.config
        bound = log.bind(download_id=job.download_id)
        part = PartFile(part_path(job.dest), cfg.write_batch_bytes, cfg.direct_io, self._file_pools)
        transfer = _Transfer(total=job.total, validator=job.validator)
        try:
            job.dest.parent.mkdir(parents=True, exist_ok=True)
            plan = await self._saved_plan(job, part, transfer, bound)
            saved = plan is not None
            if plan is None:
                await self._open_partial(job, part, transfer, bound)
                plan = await self._single(job, tracker, part, transfer, bound, probe=cfg.segments > 1)
            if plan is not None:
                try:
                    sha, size = await self._segmented(job, tracker, part, transfer, plan, bound, saved)
                except _RemoteChanged:
                    bound.warning("download_restart", reason="the file changed during a segmented download")
                    transfer.validator = None
                    await part.open_fresh()
                    await self._single(job, tracker, part, transfer, bound, probe=False)
                    sha, size = await part.finish(), part.size
            else:
                sha, size = await part.finish(), part.size
        except OSError as exc:
            await part.close()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DownloadError(ErrorCode.INSUFFICIENT_DISK, "the disk filled up while writing") from None
            raise DownloadError(ErrorCode.DOWNLOAD_FAILED, f"could not write the file: {exc.strerror}") from None
        except BaseException:
            await part.close()
            raise
        expected = job.expected_sha256.lower() if job.expected_sha256 else transfer.remote_sha256
        if expected and sha != expected:
            part.path.unlink(missing_ok=True)
            raise DownloadError(ErrorCode.CHECKSUM_MISMATCH, f"sha256 {sha} does not match expected {expected}")
        # off the event loop: a directory fsync waits for a journal commit (tens of ms on a busy
        # disk), and with many downloads ending together it held up every SSE stream
        await asyncio.get_running_loop().run_in_executor(self._executor, _put_in_place, part.path, job.dest)
        bound.info("download_verified", sha256=sha, size=size, resumed=transfer.resumed)
        return DownloadResult(sha, size, transfer.resumed)

    async def _single(
        self,
        job: DownloadJob,
        tracker: DownloadTracker,
        part: PartFile,
        transfer: _Transfer,
        bound: Any,
        probe: bool,
    ) -> SegmentPlan | None:
        """One connection, resumed as often as needed; a SegmentPlan when the rest should be split.

        With `probe` the download may split: at once after a one-byte probe (split_below_bps 0),
        or when a SplitWatch finds the connection slow (the first request asks for `bytes=0-`,
        so a 206 tells that ranges work without a request of its own)."""
        cfg = self.config
        failures = 0
        threaded = cfg.thread_above_bps <= 0
        while True:
            offset_before = part.size
            try:
                outcome = await self._attempt(job, tracker, part, transfer, bound, probe, threaded)
                if transfer.total is None or part.size >= transfer.total:
                    return None
                if outcome is _Outcome.SPLIT:
                    size = chunk_size(transfer.total - part.size, cfg.segments, cfg.segment_min_bytes)
                    bound.info("download_split", offset=part.size, total=transfer.total, segments=cfg.segments)
                    await part.flush()
                    return SegmentPlan.plan(transfer.total, part.size, size)
                if outcome is _Outcome.THREAD:
                    bound.info("download_threaded", offset=part.size, total=transfer.total)
                    threaded = True
                    continue
                probe = False  # ranges work but the file is small: carry on with Range from here
                continue
            except _Retry as retry:
                probe = probe and cfg.split_below_bps > 0  # a resumed connection may still prove slow
                await part.flush()
                failures = 0 if part.size > offset_before else failures + 1
                await self._backoff(retry, failures, part.size, bound)
                if part.size > 0:
                    self._resumed(transfer)

    def _may_split(self, job: DownloadJob, transfer: _Transfer, offset: int) -> bool:
        cfg = self.config
        if cfg.segments < 2 or not transfer.validator or transfer.total is None:
            return False  # without a strong validator, ranges from several connections could mix two files
        if self.throttle is not None and self.throttle.active(job.download_id):
            return False  # a capped download is slow by choice: more connections would not help
        return transfer.total - offset >= 2 * cfg.segment_min_bytes

    def _split_due(self, watch: SplitWatch, now: float, job: DownloadJob, transfer: _Transfer, size: int) -> bool:
        """The watch says this connection is slow, and enough is left to split (either thread)."""
        return watch.observe(now, size, time.process_time) and self._may_split(job, transfer, size)

    async def _backoff(self, retry: _Retry, failures: int, offset: int, bound: Any) -> None:
        cfg = self.config
        if failures >= cfg.max_attempts:
            code = ErrorCode.DOWNLOAD_TIMEOUT if retry.timeout else ErrorCode.DOWNLOAD_FAILED
            raise DownloadError(code, f"gave up after {failures} attempts: {retry}") from None
        delay = backoff_delay(failures + 1, cfg.retry_base_delay, cfg.retry_max_delay)
        if retry.delay is not None:
            delay = min(max(delay, retry.delay), max(cfg.retry_max_delay, 1.0))
        bound.warning("download_retry", reason=str(retry), failures=failures, offset=offset, delay=round(delay, 2))
        self.stats.retries += 1
        await asyncio.sleep(delay)

    def _resumed(self, transfer: _Transfer) -> None:
        transfer.resumed += 1
        self.stats.resumes += 1

    async def _open_partial(self, job: DownloadJob, part: PartFile, transfer: _Transfer, bound: Any) -> None:
        """Continue a partial an earlier run left (when it can be trusted), else start empty."""
        if job.validator and part.path.is_file():
            size = await part.open_existing()
            if transfer.total is None or size <= transfer.total:
                bound.info("download_resuming_partial", offset=size)
                if size:
                    self._resumed(transfer)
                return
            bound.warning("download_partial_discarded", reason="larger than the file", size=size)
        elif part.path.exists():
            bound.info("download_partial_discarded", reason="no validator to resume it safely")
        transfer.validator = None
        await part.open_fresh()

    async def _attempt(
        self,
        job: DownloadJob,
        tracker: DownloadTracker,
        part: PartFile,
        transfer: _Transfer,
        bound: Any,
        probe: bool = False,
        threaded: bool = False,
    ) -> _Outcome:
        """One request; returns when the body ended or should go on another way (see _Outcome);
        raises _Retry or DownloadError.

        The first request asks for `bytes=0-` (or, with a probe and split_below_bps 0, for the
        first byte only): a 206 tells the size and that ranges work, a 200 is simply the whole file.
        """
        headers = {"Accept-Encoding": "identity"}
        offset = part.size
        one_byte = probe and offset == 0 and self.config.split_below_bps <= 0
        if one_byte:
            headers["Range"] = "bytes=0-0"
        elif offset == 0:
            headers["Range"] = "bytes=0-"
        else:
            headers["Range"] = f"bytes={offset}-"
            if transfer.validator:
                headers["If-Range"] = transfer.validator
        resp, linked_sha = await self._open(job, headers, threaded=threaded)
        try:
            status = resp.status_code
            if status == 416:  # (every request asks for a range)
                m = re.fullmatch(r"bytes \*/(\d+)", resp.headers.get("content-range", "").strip())
                if (int(m[1]) if m else transfer.total) == offset:
                    if offset == 0:  # not even byte 0 exists: the file is empty
                        transfer.total = 0
                        tracker.set_total(job.download_id, 0)
                    return _Outcome.DONE  # the partial already holds the whole file
                bound.warning("download_restart", reason="416 on resume", offset=offset)
                await part.open_fresh()
                raise _Retry("range not satisfiable; restarting from zero")
            self._check_status(resp)
            if status == 206:
                content_range = _content_range(resp)
                if content_range is None or content_range[0] != offset:
                    await part.open_fresh()
                    raise _Retry("unexpected Content-Range; restarting from zero")
                transfer.total = content_range[1]
            else:
                if offset > 0:
                    # asked for a range, got the whole file: the remote changed (or ignores ranges)
                    bound.warning("download_restart", reason=f"status {status} to a range request", offset=offset)
                    await part.open_fresh()
                length = resp.headers.get("content-length")
                transfer.total = int(length) if length and length.isdigit() else None
            if transfer.total is not None:
                tracker.set_total(job.download_id, transfer.total)
                self._check_disk(job.dest.parent, transfer.total - part.size)
            transfer.validator = _validator(resp) or transfer.validator
            transfer.remote_sha256 = linked_sha or sha256_from_etag(resp.headers.get("etag")) or transfer.remote_sha256
            if self.on_checkpoint is not None:
                self.on_checkpoint(job.download_id, transfer.validator, transfer.total)
            state = tracker.get_download(job.download_id)
            if state is not None and state.status is not DownloadStatus.DOWNLOADING:
                tracker.set_status(job.download_id, DownloadStatus.DOWNLOADING)
            if one_byte and status == 206:
                await self._read_body(job, tracker, part, resp, transfer, None, False)
                return _Outcome.SPLIT if self._may_split(job, transfer, part.size) else _Outcome.DONE
            watch = None
            if probe and status == 206 and self._may_split(job, transfer, part.size):
                watch = SplitWatch(self.config.split_below_bps)
            if threaded:
                outcome = await self._read_body_threaded(job, tracker, part, resp, transfer, watch)
            else:
                may_move = status == 206 and transfer.validator is not None  # resumable on another connection
                outcome = await self._read_body(job, tracker, part, resp, transfer, watch, may_move)
            if outcome is not _Outcome.DONE:
                return outcome
            if transfer.total is not None and part.size != transfer.total:
                raise _Retry(f"body ended at {part.size} of {transfer.total} bytes")
            return _Outcome.DONE
        finally:
            await self._close_response(resp)  # (a body left unread closes its connection)

    async def _read_body(
        self,
        job: DownloadJob,
        tracker: DownloadTracker,
        part: PartFile,
        resp: httpx.Response,
        transfer: _Transfer,
        watch: SplitWatch | None,
        may_move: bool,
    ) -> _Outcome:
        """Read the body into the partial on the event loop. SPLIT when the watch says so, THREAD
        when the connection proves fast and enough is left (`may_move`); the rest is left unread."""
        download_id = job.download_id
        update = tracker.update_progress
        throttle = self.throttle
        stats = self.stats
        clock = time.monotonic
        rates = RateWindow() if may_move else None
        with self._body_errors():
            async for chunk in resp.aiter_raw():
                stats.bytes_downloaded += len(chunk)
                await part.write(chunk)
                update(download_id, part.size)
                if throttle is not None and throttle.active(download_id):
                    await throttle.consume(download_id, len(chunk))
                now = clock()
                if watch is not None and self._split_due(watch, now, job, transfer, part.size):
                    return _Outcome.SPLIT
                if rates is not None and (rate := rates.observe(now, part.size)) is not None:
                    if rate >= self.config.thread_above_bps:
                        if transfer.total is not None and transfer.total - part.size >= self.config.thread_min_rest:
                            return _Outcome.THREAD
                        rates = None
        return _Outcome.DONE

    async def _read_body_threaded(
        self,
        job: DownloadJob,
        tracker: DownloadTracker,
        part: PartFile,
        resp: httpx.Response,
        transfer: _Transfer,
        watch: SplitWatch | None,
    ) -> _Outcome:
        """Read the body into the partial on a worker thread; SPLIT when the watch says so (the
        rest is left unread). A cancel stops the thread (its socket is shut down) before it returns."""
        loop = asyncio.get_running_loop()
        download_id = job.download_id
        stats = self.stats
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
        pump = loop.run_in_executor(self._body_threads, self._pump, job, part, resp, transfer, watch, stop, progress)
        try:
            with self._body_errors():
                outcome = await asyncio.shield(pump)
        except asyncio.CancelledError:
            stop.set()
            _shut_down(resp)  # wakes a thread blocked in recv()
            await asyncio.gather(pump, return_exceptions=True)
            raise
        finally:
            timer.cancel()
            if counted != part.size and not stop.is_set():
                report(part.size)
        return outcome

    def _pump(
        self,
        job: DownloadJob,
        part: PartFile,
        resp: httpx.Response,
        transfer: _Transfer,
        watch: SplitWatch | None,
        stop: threading.Event,
        progress: _Progress,
    ) -> _Outcome:
        """On a worker thread: the body into the partial, progress posted to the loop."""
        download_id = job.download_id
        throttle = self.throttle
        clock = time.monotonic
        for chunk in _body_chunks(resp, self.config.stall_timeout):
            if stop.is_set():
                return _Outcome.DONE
            part.write_blocking(chunk)
            progress.size = part.size
            now = clock()
            if throttle is not None and throttle.active(download_id):
                waiting = asyncio.run_coroutine_threadsafe(throttle.consume(download_id, len(chunk)), progress.loop)
                while not _wait(waiting, 0.1):
                    if stop.is_set():
                        waiting.cancel()
                        return _Outcome.DONE
            if watch is not None and self._split_due(watch, now, job, transfer, part.size):
                return _Outcome.SPLIT
        return _Outcome.DONE

    @contextlib.contextmanager
    def _body_errors(self) -> Iterator[None]:
        """A body that stalls (no bytes for the read timeout) or breaks off is worth another try."""
        try:
            yield
        except (httpx.TimeoutException, httpcore.TimeoutException):
            raise _Retry(f"stalled: no bytes for {self.config.stall_timeout:g}s", timeout=True) from None
        except (httpx.TransportError, httpx.StreamError, httpcore.NetworkError) as exc:
            raise _Retry(f"connection dropped: {type(exc).__name__}") from None

    async def _open(
        self, job: DownloadJob, headers: dict[str, str], threaded: bool = False
    ) -> tuple[httpx.Response, str | None]:
        """Send the request, following redirects by hand so HF_TOKEN only goes to the hub's origin.

        `threaded`: with the sync client, on a worker thread (for `_read_body`). A connection
        that cannot be made raises _Retry, like every other transient failure."""
        url = job.url
        hub_sha: str | None = None
        token = self.config.hf_token
        for _ in range(_MAX_REDIRECTS + 1):
            if not host_allowed(url, self.config.allowed_hosts):
                host = _host_of(url)
                raise DownloadError(ErrorCode.HOST_NOT_ALLOWED, f"host {host!r} is not in HIVE_ALLOWED_HOSTS")
            req_headers = dict(headers)
            if token and job.token_origin and origin_of(url) == job.token_origin:
                req_headers["Authorization"] = f"Bearer {token}"
            try:
                request = self.client.build_request("GET", url, headers=req_headers)
            except httpx.InvalidURL:
                raise DownloadError(ErrorCode.DOWNLOAD_FAILED, "redirected to a malformed URL") from None
            try:
                if threaded:
                    resp = await self._send_threaded(request)
                else:
                    resp = await self.client.send(request, stream=True, follow_redirects=False)
            except httpx.TimeoutException as exc:
                raise _Retry(f"timeout connecting: {type(exc).__name__}", timeout=True) from None
            except httpx.TransportError as exc:
                raise _Retry(f"connection failed: {type(exc).__name__}") from None
            if resp.status_code not in _REDIRECTS or "location" not in resp.headers:
                return resp, hub_sha
            hub_sha = hub_sha or sha256_from_etag(resp.headers.get("x-linked-etag"))
            url = urljoin(str(resp.url), resp.headers["location"])
            await self._close_response(resp)
            if not url.lower().startswith(("http://", "https://")):
                raise DownloadError(ErrorCode.DOWNLOAD_FAILED, "redirected to a non-http(s) URL")
        raise DownloadError(ErrorCode.DOWNLOAD_FAILED, f"more than {_MAX_REDIRECTS} redirects")

    async def _send_threaded(self, request: httpx.Request) -> httpx.Response:
        """The sync client's send on a worker thread; a response nobody waits for any more is closed."""
        future = asyncio.get_running_loop().run_in_executor(
            self._body_threads, functools.partial(self.sync_client.send, request, stream=True, follow_redirects=False)
        )
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_close_abandoned)
            raise

    async def _close_response(self, resp: httpx.Response) -> None:
        if isinstance(resp.stream, httpx.AsyncByteStream):
            await resp.aclose()
        else:  # the sync client's: closing may flush a socket, so not on the event loop
            await asyncio.get_running_loop().run_in_executor(self._body_threads, resp.close)

    # -- segmented transfers ---------------------------------------------------------------

    async def _saved_plan(
        self, job: DownloadJob, part: PartFile, transfer: _Transfer, bound: Any
    ) -> SegmentPlan | None:
        """The plan of a segmented partial left by an earlier run, if file and plan agree."""
        if not (job.segments and job.validator):
            return None
        plan = SegmentPlan.from_json(job.segments)
        if plan is None or not part.path.is_file() or part.path.stat().st_size != plan.total:
            # a segmented partial has holes: without its plan it is no prefix to resume from
            bound.info("download_partial_discarded", reason="segment plan and partial disagree")
            part.path.unlink(missing_ok=True)
            return None
        for chunk in plan.chunks:
            chunk.taken = False
        transfer.total = plan.total
        self._resumed(transfer)
        bound.info("download_resuming_segments", written=plan.written(), total=plan.total)
        return plan

    async def _segmented(
        self,
        job: DownloadJob,
        tracker: DownloadTracker,
        part: PartFile,
        transfer: _Transfer,
        plan: SegmentPlan,
        bound: Any,
        saved: bool = False,
    ) -> tuple[str, int]:
        """Fetch the plan's chunks over several connections, writing in place; (sha256, size)."""
        loop = asyncio.get_running_loop()
        if saved:  # an earlier run's partial: the hash follower re-reads what it holds
            digest: Any = hashlib.sha256()
            hashed = 0
        else:
            if self.before_segmented is not None:
                await self.before_segmented(job.download_id, plan.to_json())
            digest, hashed = await part.detach()
        f: IO[bytes] = await loop.run_in_executor(self._executor, open, part.path, "r+b")
        fd = f.fileno()
        await loop.run_in_executor(self._executor, os.ftruncate, fd, plan.total)
        tracker.set_total(job.download_id, plan.total)
        # the partial is sparse: only what it does not hold yet (by the plan or by allocated blocks) needs room
        held = max(plan.written(), (await loop.run_in_executor(self._executor, os.fstat, fd)).st_blocks * 512)
        self._check_disk(job.dest.parent, plan.total - held)
        state = tracker.get_download(job.download_id)
        if state is not None and state.status is not DownloadStatus.DOWNLOADING:
            tracker.set_status(job.download_id, DownloadStatus.DOWNLOADING)
        hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rbee-hash")
        seg = _SegmentRun(plan, plan.written(), asyncio.Event())
        follower = asyncio.create_task(self._hash_follower(fd, digest, hashed, seg, hasher))
        workers = [
            asyncio.create_task(self._segment_worker(job, tracker, fd, seg, transfer, bound))
            for _ in range(min(self.config.segments, len(plan.chunks)))
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
            await loop.run_in_executor(self._executor, os.fsync, fd)
        finally:
            if self.on_segments is not None:  # the exact plan, for whoever resumes this partial
                self.on_segments(job.download_id, plan.to_json())
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            hasher.shutdown(wait=False)
            await loop.run_in_executor(self._executor, f.close)
        return sha, plan.total

    async def _hash_follower(
        self, fd: int, digest: Any, hashed: int, seg: _SegmentRun, hasher: ThreadPoolExecutor
    ) -> str:
        """Hash the file in order, following the contiguous written prefix as it grows."""
        loop = asyncio.get_running_loop()
        total = seg.plan.total
        while hashed < total:
            frontier = seg.plan.frontier()
            if frontier <= hashed:
                seg.moved.clear()
                await seg.moved.wait()
                continue
            await loop.run_in_executor(hasher, hash_range, fd, digest, hashed, frontier)
            hashed = frontier
        return str(digest.hexdigest())

    async def _segment_worker(
        self, job: DownloadJob, tracker: DownloadTracker, fd: int, seg: _SegmentRun, transfer: _Transfer, bound: Any
    ) -> None:
        while (chunk := seg.plan.take()) is not None:
            failures = 0
            try:
                while not chunk.done:
                    before = chunk.written
                    try:
                        await self._fetch_chunk(job, tracker, fd, chunk, seg, transfer)
                    except _Retry as retry:
                        failures = 0 if chunk.written > before else failures + 1
                        await self._backoff(retry, failures, chunk.written, bound)
                        self._resumed(transfer)
            finally:
                seg.plan.release(chunk)

    async def _fetch_chunk(
        self, job: DownloadJob, tracker: DownloadTracker, fd: int, chunk: Chunk, seg: _SegmentRun, transfer: _Transfer
    ) -> None:
        headers = {"Accept-Encoding": "identity", "Range": f"bytes={chunk.written}-{chunk.end - 1}"}
        if transfer.validator:
            headers["If-Range"] = transfer.validator
        resp, _ = await self._open(job, headers)
        try:
            self._check_status(resp)
            content_range = _content_range(resp)
            if resp.status_code != 206 or content_range is None:
                raise _RemoteChanged()
            if content_range[0] != chunk.written or content_range[1] != seg.plan.total:
                raise _RemoteChanged()
            await self._read_chunk(job, tracker, fd, chunk, seg, resp)
        finally:
            await resp.aclose()
        if not chunk.done:
            raise _Retry(f"range ended at {chunk.written} of {chunk.end}")

    async def _read_chunk(
        self, job: DownloadJob, tracker: DownloadTracker, fd: int, chunk: Chunk, seg: _SegmentRun, resp: httpx.Response
    ) -> None:
        loop = asyncio.get_running_loop()
        throttle = self.throttle
        batch: list[bytes] = []
        batched = 0
        # one write-batch budget per download, shared by its connections: memory stays flat
        limit = max(256 * 1024, self.config.write_batch_bytes // max(1, self.config.segments))

        async def flush() -> None:
            nonlocal batch, batched
            if not batch:
                return
            pieces, offset, n = batch, chunk.written, batched
            batch, batched = [], 0
            await loop.run_in_executor(self._executor, pwrite_all, fd, pieces, offset)
            chunk.written += n
            seg.moved.set()
            self._report_segments(job.download_id, seg)

        try:
            with self._body_errors():
                async for data in resp.aiter_raw():
                    self.stats.bytes_downloaded += len(data)
                    room = chunk.end - (chunk.written + batched)
                    overrun = len(data) > room  # a server sending past the range: keep what we asked for
                    if overrun:
                        data = data[:room]
                    batch.append(data)
                    batched += len(data)
                    seg.received += len(data)
                    tracker.update_progress(job.download_id, seg.received)
                    if batched >= limit:
                        await flush()
                    if throttle is not None and throttle.active(job.download_id):
                        await throttle.consume(job.download_id, len(data))
                    if overrun:
                        break  # (otherwise the body ends by itself and the connection goes back to the pool)
        finally:
            await flush()

    def _report_segments(self, download_id: str, seg: _SegmentRun) -> None:
        now = time.monotonic()
        if self.on_segments is not None and now - seg.reported >= 1.0:
            seg.reported = now
            self.on_segments(download_id, seg.plan.to_json())

    def _check_status(self, resp: httpx.Response) -> None:
        status = resp.status_code
        if status in (200, 206):
            return
        if status in (401, 403):
            raise DownloadError(ErrorCode.UNAUTHORIZED, f"the server refused access ({status})")
        if status in (404, 410):
            raise DownloadError(ErrorCode.NOT_FOUND, f"the file was not found ({status})")
        if status in _RETRY_STATUSES or status >= 500:
            delay = parse_retry_after(resp.headers.get("retry-after"))
            raise _Retry(f"server answered {status}", timeout=status == 408, delay=delay)
        raise DownloadError(ErrorCode.DOWNLOAD_FAILED, f"unexpected HTTP status {status}")

    def _check_disk(self, directory: Path, needed: int) -> None:
        free = self.disk_free(directory)
        if needed > free:
            raise DownloadError(ErrorCode.INSUFFICIENT_DISK, f"needs {needed} more bytes but only {free} are free")


@dataclass(slots=True)
class _SegmentRun:
    plan: SegmentPlan
    received: int  # bytes received over every connection (what progress shows)
    moved: asyncio.Event  # set whenever written bytes advance
    reported: float = 0.0


def _body_chunks(resp: httpx.Response, read_timeout: float) -> Iterator[bytes]:
    """A sync response's body, chunk by chunk. After the first chunk, a plain Content-Length body
    is read straight off the connection (httpcore's documented `network_stream`): h11 copies
    every byte three more times under the GIL, and skipping that took a GiB from local nginx
    from 1.81 to 1.46 s. Safe because h11 hands over everything it has buffered with each
    chunk of such a body; the connection is not reused afterwards (h11 never saw the end)."""
    chunks = resp.iter_raw()
    first = next(chunks, None)
    if first is None:
        return
    yield first
    length = resp.headers.get("content-length", "")
    network = resp.extensions.get("network_stream")
    if (
        network is None
        or not length.isdigit()
        or resp.http_version != "HTTP/1.1"
        or "transfer-encoding" in resp.headers
        or resp.headers.get("content-encoding", "identity").lower() != "identity"
    ):
        yield from chunks
        return
    remaining = int(length) - len(first)
    while remaining > 0:
        data: bytes = network.read(min(remaining, _RAW_READ), read_timeout)
        if not data:
            return  # ended early: the caller sees a short body and resumes
        remaining -= len(data)
        yield data


class _Progress:
    """Bytes from a worker thread to the event loop: the thread only stores the newest count, and
    the loop looks every _PROGRESS_LOOK seconds. Posting each chunk with call_soon_threadsafe
    cost the body thread ~0.1 s of self-pipe writes per GiB (py-spy), and woke the loop as often."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.size = size  # written by the worker thread, read by the loop (an int: no lock needed)


def _wait(future: concurrent.futures.Future[Any], timeout: float) -> bool:
    try:
        future.result(timeout)
        return True
    except concurrent.futures.TimeoutError:
        return False


def _shut_down(resp: httpx.Response) -> None:
    """Shut a response's socket down, so a thread blocked reading it wakes up (closing would not)."""
    stream = resp.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _close_abandoned(future: asyncio.Future[httpx.Response]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


def _host_of(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _put_in_place(part: Path, dest: Path) -> None:
    os.replace(part, dest)
    _fsync_dir(dest.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
