"""What the transfers of a download share: settings, collaborators, and what the download has learnt.

`Context` is one per Downloader (config, request layer, throttle, counters, checkpoints, threads);
`Transfer` is one per download, kept across attempts and across the ways a body is read. The
tracker is told the download is DOWNLOADING from one place, `Transfer.downloading`.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from services.hive.disk.partfile import PartFile, part_path
from services.hive.metrics import HiveStats
from services.hive.net.errors import PEER_MAX_WAITS, DownloadError, PeerNotReady, RateLimited, Retry
from services.hive.net.request import Requester
from services.hive.net.source import Source
from services.hive.transfer.segments import SplitWatch
from services.hive.transfer.throttle import Throttle
from shared.backoff import Backoff
from shared.models import DownloadState, DownloadStatus, ErrorCode

__all__ = [
    "Checkpoints",
    "Context",
    "DownloadJob",
    "DownloadResult",
    "DownloaderConfig",
    "NoCheckpoints",
    "Outcome",
    "Progress",
    "Transfer",
    "attempts_failed",
    "backoff_delay",
]


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
    hub_digest: str | None = None  # what the hub said the file's digest is, when an earlier run learnt it
    partial: Path | None = None  # where the bytes gather (default: beside `dest`, `part_path`)
    # the bytes are pinned by `hub_digest`, whatever serves them: a partial resumes, and ranges of it
    # may come from several connections or sources, without If-Range (the digest check guards them)
    pinned: bool = False
    peer_token: str | None = field(default=None, repr=False)  # RBEE_API_TOKEN, for a peer hive's blob URL
    max_attempts: int | None = None  # consecutive failed attempts before giving up (default: the config's)
    # may the file be split over several connections: not a fleet pull's, whose peers follow a
    # partial's contiguous prefix as it grows (a split one's hardly grows before its end)
    may_split: bool = True

    @property
    def part_file(self) -> Path:
        return self.partial if self.partial is not None else part_path(self.dest)


@dataclass(frozen=True, slots=True)
class DownloadResult:
    sha256: str
    size: int
    resumed: int  # how many times a transfer was resumed with Range


@dataclass(frozen=True, slots=True)
class DownloaderConfig:
    connect_timeout: float = 10.0
    stall_timeout: float = 30.0
    max_attempts: int = 6
    retry_base_delay: float = 0.5
    retry_max_delay: float = 30.0
    write_batch_bytes: int = 2 * 1024 * 1024
    hf_token: str | None = field(default=None, repr=False)  # never in a repr, so never in a log
    segments: int = 1  # parallel range connections for a large file
    segment_min_bytes: int = 8 * 1024 * 1024  # smallest chunk; files under two chunks use one connection
    # split over `segments` connections only while one connection is slower than this (bytes/s);
    # 0 = split every large file at once, after a one-byte probe
    split_below_bps: int = 0
    direct_io: bool = True  # write the partial with O_DIRECT where the filesystem allows (see blockwriter.py)
    # A body starts on the event loop; one that runs faster than thread_above_bps (over a RateWindow)
    # with at least thread_min_rest left goes on from there on a worker thread (0 = always on a thread).
    # On the loop, httpx took 1.90 s per GiB from local nginx against 1.46 s on a thread; but 100 slow
    # downloads on threads raised the SSE p99 from 43 to 67 ms (their wake-ups cost the whole
    # machine), so slow bodies stay on the loop.
    thread_above_bps: int = 50_000_000
    thread_min_rest: int = 64 * 1024 * 1024
    allowed_hosts: frozenset[tuple[str, int | None]] | None = None  # HIVE_ALLOWED_HOSTS; None = any
    hub_cdn_hosts: frozenset[tuple[str, int | None]] | None = None  # HIVE_HUB_CDN_HOSTS
    range_limit: int | None = 50_000_000_000  # HIVE_RANGE_LIMIT_BYTES: the longest range one request asks for
    rate_limit_max_wait: float = 300.0  # the longest rate-limit window of the hub's waited out (seconds)


class Progress(Protocol):
    """What a transfer tells of its download (the DownloadTracker; for one file of a whole model,
    that file's share of the model's progress, model_run.FileProgress)."""

    def update_progress(self, download_id: str, bytes_downloaded: int) -> None: ...

    def set_total(self, download_id: str, total_bytes: int | None) -> None: ...

    def set_commit(self, download_id: str, commit: str) -> None: ...

    def set_status(self, download_id: str, status: DownloadStatus) -> None: ...

    def set_waiting(self, download_id: str, until: datetime | None, reason: str | None = None) -> None: ...

    def get_download(self, download_id: str) -> DownloadState | None: ...


class Checkpoints(Protocol):
    """Told what a transfer learns, so a restarted hive can resume it (the history mirror)."""

    def checkpoint(self, download_id: str, validator: str | None, total: int | None, digest: str | None) -> None:
        """Whenever a transfer learns its validator, total or the hub's digest of the file."""

    def checkpoint_segments(self, download_id: str, plan_json: str) -> None:
        """About once a second while a segmented transfer writes, and when it stops."""

    async def persist_segments(self, download_id: str, plan_json: str) -> None:
        """Before a partial is first extended to its full size: from then on only the plan tells
        written bytes from holes, so it must be durable first."""


class NoCheckpoints:
    def checkpoint(self, download_id: str, validator: str | None, total: int | None, digest: str | None) -> None:
        pass

    def checkpoint_segments(self, download_id: str, plan_json: str) -> None:
        pass

    async def persist_segments(self, download_id: str, plan_json: str) -> None:
        pass


def attempts_failed(retry: Retry, failures: int, progressed: bool) -> int:
    """Consecutive failed attempts after this one: an attempt that brought bytes starts the count
    again, and waiting out the hub's rate limit is no failure."""
    if progressed:
        return 0
    return failures if isinstance(retry, RateLimited | PeerNotReady) else failures + 1


def backoff_delay(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter: uniform in [0.5, 1] x base * 2^(attempt-1), capped
    (a base above the cap waits the cap)."""
    return Backoff(min(base, cap), cap, spread=(0.5, 1.0), rng=rand).delay(attempt)


class Outcome(enum.Enum):
    """How a body read on one connection ended."""

    DONE = "done"  # the body ended (whole or short: the caller checks)
    SPLIT = "split"  # slow: split the rest over several connections
    THREAD = "thread"  # fast: read the rest on a worker thread (a new request from here)


@dataclass(slots=True)
class Transfer:
    """One download: its job, where it comes from, its partial, and what it has learnt so far."""

    job: DownloadJob
    source: Source
    tracker: Progress
    part: PartFile
    bound: Any  # the logger, bound to the download id
    checkpoints: Checkpoints
    total: int | None = None
    validator: str | None = None  # for If-Range
    remote_sha256: str | None = None  # a plain URL's sha256 ETag (a hub file has Source.facts)
    resumed: int = 0
    peer_waits: int = 0  # times a peer said it has not begun the blob yet

    @property
    def expected_digest(self) -> str | None:
        """What the file must hash to, besides a sha256 the request gave: the hub's digest (sha256
        or git blob sha1; from this run's answers, else an earlier run's), or a URL's sha256 ETag.
        A pinned job's digest is the only one: no source's own word (a moved branch, a peer) counts."""
        if self.job.pinned and self.job.hub_digest:
            return self.job.hub_digest
        if self.source.hub:
            return self.source.facts.digest or self.job.hub_digest
        return self.remote_sha256 or self.job.hub_digest  # (a hub file resumed without its token)

    def answered(self) -> None:
        """A good answer came: record what it taught (validator, total, the hub's digest and commit)."""
        if (commit := self.source.facts.commit) is not None:
            self.tracker.set_commit(self.job.download_id, commit)
        digest = self.source.facts.digest or self.job.hub_digest  # the hub's word only, kept for a resume
        self.checkpoints.checkpoint(self.job.download_id, self.validator, self.total, digest)

    def downloading(self) -> None:
        """Bytes are on their way: tell the tracker, once."""
        download_id = self.job.download_id
        state = self.tracker.get_download(download_id)
        if state is not None and state.status is not DownloadStatus.DOWNLOADING:
            self.tracker.set_status(download_id, DownloadStatus.DOWNLOADING)


class Context:
    """A Downloader's collaborators and settings, as every transfer sees them."""

    def __init__(
        self,
        config: DownloaderConfig,
        requester: Requester,
        throttle: Throttle | None,
        stats: HiveStats,
        checkpoints: Checkpoints,
        disk_free: Callable[[Path], int],
        io: ThreadPoolExecutor,
        body_threads: ThreadPoolExecutor,
    ) -> None:
        self.config = config
        self.requester = requester
        self.throttle = throttle
        self.stats = stats
        self.checkpoints = checkpoints
        self.disk_free = disk_free
        self.io = io  # file work off the event loop (open, truncate, fsync, rename)
        self.body_threads = body_threads  # threaded bodies and the sync client's requests

    def may_split(self, transfer: Transfer, offset: int) -> bool:
        cfg = self.config
        if not transfer.job.may_split or transfer.total is None:
            return False
        if cfg.segments < 2 or not (transfer.validator or transfer.job.pinned):
            return False  # without a strong validator, ranges from several connections could mix two files
        if self.throttle is not None and self.throttle.active(transfer.job.download_id):
            return False  # a capped download is slow by choice: more connections would not help
        return transfer.total - offset >= 2 * cfg.segment_min_bytes

    def split_due(self, watch: SplitWatch, now: float, transfer: Transfer, size: int) -> bool:
        """The watch says this connection is slow, and enough is left to split (either thread)."""
        return watch.observe(now, size, time.process_time) and self.may_split(transfer, size)

    async def backoff(self, t: Transfer, retry: Retry, failures: int, offset: int) -> None:
        """Wait before the next attempt, or give up after `failures` consecutive failed attempts.
        The hub's rate limit (RateLimited) is waited out instead; the caller does not count it."""
        if isinstance(retry, RateLimited):
            await self._wait_out(t, retry)
            return
        if isinstance(retry, PeerNotReady):
            t.peer_waits += 1
            if t.peer_waits > PEER_MAX_WAITS:
                raise DownloadError(ErrorCode.NOT_FOUND, f"the peer never began the file: {retry}")
            await asyncio.sleep(retry.delay or 1.0)
            return
        cfg = self.config
        if failures >= (t.job.max_attempts or cfg.max_attempts):
            code = ErrorCode.DOWNLOAD_TIMEOUT if retry.timeout else ErrorCode.DOWNLOAD_FAILED
            raise DownloadError(code, f"gave up after {failures} attempts: {retry}") from None
        delay = backoff_delay(failures + 1, cfg.retry_base_delay, cfg.retry_max_delay)
        if retry.delay is not None:
            delay = min(max(delay, retry.delay), max(cfg.retry_max_delay, 1.0))
        t.bound.warning("download_retry", reason=str(retry), failures=failures, offset=offset, delay=round(delay, 2))
        self.stats.retries += 1
        await asyncio.sleep(delay)

    async def _wait_out(self, t: Transfer, limited: RateLimited) -> None:
        """Wait for the hub's rate-limit window, shown in the state (`waiting_until`) meanwhile.
        Segments of one download may wait at once: the latest end is shown, and cleared by its waiter."""
        max_wait = self.config.rate_limit_max_wait
        if limited.wait > max_wait:
            raise DownloadError(
                ErrorCode.DOWNLOAD_FAILED,
                f"{limited}: its window ends in {limited.wait:g} s,"
                f" longer than HIVE_RATE_LIMIT_MAX_WAIT ({max_wait:g} s)",
            )
        download_id, tracker = t.job.download_id, t.tracker
        until = datetime.now(UTC) + timedelta(seconds=limited.wait)
        state = tracker.get_download(download_id)
        if state is not None and (state.waiting_until is None or state.waiting_until < until):
            tracker.set_waiting(download_id, until, str(limited))
        t.bound.warning("download_rate_limited", reason=str(limited), wait=round(limited.wait, 2))
        self.stats.retries += 1
        try:
            await asyncio.sleep(limited.wait)
        finally:
            state = tracker.get_download(download_id)
            if state is not None and state.waiting_until == until:
                tracker.set_waiting(download_id, None)

    def resumed(self, transfer: Transfer) -> None:
        transfer.resumed += 1
        self.stats.resumes += 1

    def check_disk(self, directory: Path, needed: int) -> None:
        free = self.disk_free(directory)
        if needed > free:
            raise DownloadError(ErrorCode.INSUFFICIENT_DISK, f"needs {needed} more bytes but only {free} are free")
