"""What the transfers of a download share: settings, collaborators, and what the download has learnt.

`Context` is one per Downloader (config, request layer, throttle, counters, checkpoints, threads);
`Transfer` is one per download, kept across attempts and across the ways a body is read. The
tracker is told the download is DOWNLOADING from one place, `Transfer.downloading`.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from services.hive.disk.partfile import PartFile
from services.hive.metrics import HiveStats
from services.hive.net.errors import DownloadError, PeerNotReady, RateLimited, Retry
from services.hive.net.request import Requester
from services.hive.net.retry import Waiting
from services.hive.net.source import Source
from services.hive.refs import origin_of
from services.hive.transfer.jobs import DownloaderConfig, DownloadJob
from services.hive.transfer.pace import PaceWatch
from services.hive.transfer.throttle import Throttle
from shared.models import DownloadState, DownloadStatus, ErrorCode

__all__ = ["Checkpoints", "Context", "NoCheckpoints", "Outcome", "Progress", "Transfer", "attempts_failed"]


class Progress(Protocol):
    """What a transfer tells of its download (the DownloadTracker; for one file of a whole model,
    that file's share of the model's progress, hub.progress.FileProgress)."""

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
    resumed: int = 0
    peer_waited: float = 0.0  # seconds waited for a peer to begin the blob (HIVE_PEER_WAIT_SECS in all)
    pace: PaceWatch | None = None  # a peer's: dropped when it sends too slowly
    # the peer's answer follows a partial still downloading there (X-Rbee-Blob-State: partial): it
    # grows as fast as that hive's own source gives it, so it is no slower than a second copy from there
    following_partial: bool = False

    @property
    def expected_digest(self) -> str | None:
        """What the file must hash to, besides a sha256 the request gave: the hub's digest (sha256
        or git blob sha1; from this run's answers, else an earlier run's). A pinned job's digest is
        the only one: no source's own word (a moved branch, a peer) counts. No server's ETag is a
        digest unless the hub's own answer says it is one (a CDN's 64-hex ETag is its Xet hash)."""
        if self.job.pinned and self.job.hub_digest:
            return self.job.hub_digest
        if self.source.hub:
            return self.source.facts.digest or self.job.hub_digest
        return self.job.hub_digest  # (a hub file resumed without its token)

    def answered(self) -> None:
        """A good answer came: record what it taught (validator, total, the hub's digest and commit)."""
        if (commit := self.source.facts.commit) is not None:
            self.tracker.set_commit(self.job.download_id, commit)
        digest = self.source.facts.digest or self.job.hub_digest  # the hub's word only, kept for a resume
        self.checkpoints.checkpoint(self.job.download_id, self.validator, self.total, digest)

    def keep_pace(self, now: float) -> None:
        """Told as bytes come (either thread): DownloadError once a peer runs too slow to keep, so the
        next source goes on from the partial."""
        if self.pace is not None and not self.following_partial and self.pace.observe(now, self.part.size):
            raise DownloadError(ErrorCode.DOWNLOAD_TIMEOUT, self.pace.reason())

    def held_back(self, secs: float) -> None:
        """This hive's bandwidth limit held the transfer for `secs`: no fault of the source's pace."""
        if self.pace is not None:
            self.pace.held(secs)

    def downloading(self) -> None:
        """Bytes are on their way: tell the tracker, once."""
        download_id = self.job.download_id
        state = self.tracker.get_download(download_id)
        if state is not None and state.status is not DownloadStatus.DOWNLOADING:
            self.tracker.set_status(download_id, DownloadStatus.DOWNLOADING)


@dataclass(slots=True)
class Context:
    """A Downloader's collaborators and settings, as every transfer sees them."""

    config: DownloaderConfig
    requester: Requester
    throttle: Throttle | None
    stats: HiveStats
    checkpoints: Checkpoints
    disk_free: Callable[[Path], int]
    io: ThreadPoolExecutor  # file work off the event loop (open, truncate, fsync, rename)
    body_threads: ThreadPoolExecutor  # threaded bodies and the sync client's requests

    async def backoff(self, t: Transfer, retry: Retry, failures: int, offset: int) -> None:
        """Wait before the next attempt, or give up after `failures` consecutive failed attempts
        (the one retry policy, `net/retry.py`). The hub's rate limit (RateLimited) is waited out
        instead, and a peer that has not begun the blob asked again, for HIVE_PEER_WAIT_SECS in all;
        the caller counts neither."""
        policy = self.config.retry
        if isinstance(retry, RateLimited):
            policy.check_window(retry)
            t.bound.warning("download_rate_limited", reason=str(retry), wait=round(retry.wait, 2))
            self.stats.retries += 1
            await policy.wait_out(retry, _shown_in(t))
            return
        if isinstance(retry, PeerNotReady):
            left = self.config.peer_wait_secs - t.peer_waited
            if left <= 0:  # (its Retry-After, a day say, is no bound: ours is)
                raise DownloadError(
                    ErrorCode.NOT_FOUND,
                    f"the peer did not begin the file within HIVE_PEER_WAIT_SECS ({self.config.peer_wait_secs:g} s)",
                )
            wait = min(retry.delay or 1.0, left)
            t.peer_waited += wait
            reason = f"waiting for the peer {origin_of(t.job.url)} to begin the file (HIVE_PEER_WAIT_SECS)"
            await policy.wait_shown(wait, reason, _shown_in(t))
            return
        policy.give_up(retry, failures, t.job.max_attempts, f"gave up after {failures} attempts")
        delay = policy.delay(failures + 1, retry)
        t.bound.warning("download_retry", reason=str(retry), failures=failures, offset=offset, delay=round(delay, 2))
        self.stats.retries += 1
        await asyncio.sleep(delay)

    def resumed(self, transfer: Transfer) -> None:
        transfer.resumed += 1
        self.stats.resumes += 1

    def check_disk(self, directory: Path, needed: int) -> None:
        free = self.disk_free(directory)
        if needed > free:
            raise DownloadError(ErrorCode.INSUFFICIENT_DISK, f"needs {needed} more bytes but only {free} are free")


def _shown_in(t: Transfer) -> Waiting:
    """Where a transfer's wait (the hub's rate-limit window, a peer) shows: its download's state. Segments of
    one download may wait at once: the latest end is shown, and cleared by its own waiter."""
    download_id, tracker = t.job.download_id, t.tracker
    mine: list[datetime] = []

    def waiting(until: datetime | None, reason: str | None) -> None:
        state = tracker.get_download(download_id)
        if until is not None:
            mine.append(until)
            if state is not None and (state.waiting_until is None or state.waiting_until < until):
                tracker.set_waiting(download_id, until, reason)
        elif state is not None and mine and state.waiting_until == mine[-1]:
            tracker.set_waiting(download_id, None)

    return waiting
