"""The Downloader: one file's transfer, resumable, retried, verified, atomically put in place.

Thin: it builds the partial and the download's Source, then chooses among the ways to move the
bytes (a segmented partial left by an earlier run, one connection, one that splits), verifies
the sha256 and renames the file into place. It raises DownloadError with a contract error code
when it gives up; what to do with a partial after a cancel or failure belongs to the caller.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import structlog

from services.hive.disk.fileio import move_into_place
from services.hive.disk.partfile import FilePools, PartFile
from services.hive.metrics import HiveStats
from services.hive.net.errors import DownloadError, RemoteChanged
from services.hive.net.hub_headers import GitBlobHash
from services.hive.net.quota import HubQuota
from services.hive.net.request import Requester
from services.hive.net.source import Source
from services.hive.transfer.context import Checkpoints, Context, NoCheckpoints, Progress, Transfer
from services.hive.transfer.httpcore_tuning import raise_read_size
from services.hive.transfer.jobs import DownloaderConfig, DownloadJob, DownloadResult
from services.hive.transfer.pace import PaceWatch
from services.hive.transfer.segmented import saved_plan, segmented
from services.hive.transfer.single import open_partial, single
from services.hive.transfer.throttle import Throttle
from shared.models import ErrorCode

__all__ = ["Downloader"]

log = structlog.get_logger()


class Downloader:
    def __init__(
        self,
        client: httpx.AsyncClient,
        config: DownloaderConfig,
        *,
        throttle: Throttle | None = None,
        stats: HiveStats | None = None,
        checkpoints: Checkpoints | None = None,
        disk_free: Callable[[Path], int] | None = None,
        quota: HubQuota | None = None,
    ) -> None:
        """`quota`: the hive's one HubQuota, which every request to the hub goes through (net/quota.py)."""
        self.client = client
        self.config = config
        self.throttle = throttle
        self.stats = stats or HiveStats()  # counters for /metrics
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="rbee-io")
        # a fast body goes on on a worker thread with httpx's sync client (see transfer/threaded.py)
        self.sync_client = httpx.Client(
            timeout=self.timeouts(config),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=4),
            headers=client.headers,
        )
        self._body_threads = ThreadPoolExecutor(max_workers=256, thread_name_prefix="rbee-body")
        self._file_pools = FilePools()
        raise_read_size()
        self._ctx = Context(
            config,
            Requester(
                client,
                self.sync_client,
                self._body_threads,
                config.allowed_hosts,
                config.hub_cdn_hosts,
                config.range_limit,
                quota,
            ),
            throttle,
            self.stats,
            checkpoints or NoCheckpoints(),
            disk_free or (lambda d: shutil.disk_usage(d).free),
            self._executor,
            self._body_threads,
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._body_threads.shutdown(wait=False, cancel_futures=True)
        self._file_pools.shutdown()
        self.sync_client.close()

    @staticmethod
    def timeouts(config: DownloaderConfig) -> httpx.Timeout:
        # read = stall detection: no bytes for stall_timeout counts as a dropped connection
        return httpx.Timeout(connect=config.connect_timeout, read=config.stall_timeout, write=30.0, pool=30.0)

    @property
    def requester(self) -> Requester:
        return self._ctx.requester

    @property
    def disk_free(self) -> Callable[[Path], int]:
        return self._ctx.disk_free

    async def run(
        self, job: DownloadJob, tracker: Progress, checkpoints: Checkpoints | None = None, **log_fields: str
    ) -> DownloadResult:
        """Fetch, verify and put `job.dest` in place; `checkpoints` (default: the Downloader's) hear
        what the transfer learns, `log_fields` are bound to its log lines besides the download id."""
        cfg = self.config
        bound = log.bind(download_id=job.download_id, **log_fields)
        part = PartFile(job.part_file, cfg.write_batch_bytes, cfg.direct_io, self._file_pools)
        source = Source.of(job.url, job.token_origin, cfg.hf_token, job.peer_token)
        notes = checkpoints or self._ctx.checkpoints
        t = Transfer(job, source, tracker, part, bound, notes, total=job.total, validator=job.validator)
        if job.peer and cfg.peer_min_bps > 0:
            t.pace = PaceWatch(cfg.peer_min_bps, cfg.peer_slow_secs)
        job.dest.parent.mkdir(parents=True, exist_ok=True)
        part.path.parent.mkdir(parents=True, exist_ok=True)
        sha, size, spliced = await self._transfer(t)
        mismatch = await self._mismatch(t, sha, size)
        if mismatch is not None and spliced:
            # the partial was not all fetched by this one pass (a resume, a restart): its older bytes
            # may be what is wrong, so the file is fetched once more from zero before giving up
            bound.warning("download_refetch", reason=mismatch)
            await part.open_fresh()
            t.validator = t.total = None
            t.job = dataclasses.replace(job, validator=None, total=None, segments=None)
            sha, size, _ = await self._transfer(t)
            mismatch = await self._mismatch(t, sha, size)
        if mismatch is not None:
            part.path.unlink(missing_ok=True)
            raise DownloadError(ErrorCode.CHECKSUM_MISMATCH, mismatch)
        # off the event loop: a directory fsync waits for a journal commit (tens of ms on a busy
        # disk), and with many downloads ending together it held up every SSE stream
        await asyncio.get_running_loop().run_in_executor(self._executor, move_into_place, part.path, job.dest)
        bound.info("download_verified", sha256=sha, size=size, resumed=t.resumed, digest=t.expected_digest)
        return DownloadResult(sha, size, t.resumed)

    async def _transfer(self, t: Transfer) -> tuple[str, int, bool]:
        """Move the bytes into the partial: (its sha256, its size, whether it spliced earlier bytes)."""
        ctx, cfg, part = self._ctx, self.config, t.part
        fresh_from = t.resumed  # resumes after this count spliced bytes into this pass
        try:
            plan = await saved_plan(ctx, t)
            saved = plan is not None
            if plan is None:
                await open_partial(ctx, t)
                spliced = part.size > 0
                # a file known to be too small to split is not probed for ranges first
                small = t.total is not None and t.total < 2 * cfg.segment_min_bytes
                plan = await single(ctx, t, probe=cfg.segments > 1 and not small and t.job.may_split)
            else:
                spliced = True
            if plan is not None:
                try:
                    sha, size = await segmented(ctx, t, plan, saved)
                except RemoteChanged:
                    t.bound.warning("download_restart", reason="the file changed during a segmented download")
                    t.validator = None
                    await part.open_fresh()
                    fresh_from = t.resumed
                    await single(ctx, t, probe=False)
                    sha, size, spliced = await part.finish(), part.size, False
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
        return sha, size, spliced or t.resumed > fresh_from

    async def _mismatch(self, t: Transfer, sha: str, size: int) -> str | None:
        """Why the partial is not the file it must be, or None: the request's sha256, then the hub's
        digest (a git blob sha1 is hashed from the finished partial: only small files have one)."""
        wanted = t.job.expected_sha256.lower() if t.job.expected_sha256 else None
        if wanted and sha != wanted:
            return f"sha256 {sha} does not match expected {wanted}"
        digest = t.expected_digest
        if digest is None or digest == sha:
            return None
        if len(digest) == 40:
            blob = await asyncio.get_running_loop().run_in_executor(self._executor, git_blob_sha1, t.part.path, size)
            if blob == digest:
                return None
            return f"git blob sha1 {blob} does not match the hub's {digest}"
        return f"sha256 {sha} does not match the hub's {digest}"


def git_blob_sha1(path: Path, size: int) -> str:
    blob = GitBlobHash(size)
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            blob.update(chunk)
    return blob.hexdigest()
