"""DownloadManager: turns requests into tracked download tasks, and owns their policy.

Dedupe by destination, files already on disk, the concurrency limit (the rest wait `queued` in
arrival order), cancellation, and what happens to a partial file after a cancel or a failure.
The records of it all are the History's (history.py); `recover` resumes what it holds after a crash.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog

from services.hive.history import History
from services.hive.partfile import part_path
from services.hive.refs import (
    HostNotAllowed,
    InvalidModelRef,
    ModelRef,
    host_allowed,
    origin_of,
    parse_model_ref,
    resolve_in,
)
from services.hive.slots import SlotQueue
from services.hive.store import DownloadRecord
from services.hive.throttle import Throttle
from services.hive.tracker import DownloadTracker, UnknownDownload
from services.hive.transfer import Downloader, DownloadError, DownloadJob
from shared.models import DownloadState, DownloadStatus, ErrorCode

__all__ = [
    "DownloadManager",
    "InvalidModelRef",
    "NotCancellable",
    "StillActive",
    "UnknownDownload",
    "new_download_id",
]

log = structlog.get_logger()


def new_download_id() -> str:
    return f"dl-{uuid.uuid4().hex}"


class NotCancellable(Exception):
    def __init__(self, state: DownloadState) -> None:
        super().__init__(f"download {state.download_id} is already {state.status.value}")
        self.state = state


class StillActive(Exception):
    pass


@dataclass(slots=True)
class _Running:
    task: asyncio.Task[None]
    dest: Path
    user_cancelled: bool = False


class DownloadManager:
    def __init__(
        self,
        tracker: DownloadTracker,
        downloader: Downloader,
        models_dir: Path,
        hf_endpoint: str,
        *,
        history: History,
        throttle: Throttle,
        max_concurrent: int = 3,
    ) -> None:
        """`history` and `throttle` are the ones `downloader` was built with."""
        self.tracker = tracker
        self.downloader = downloader
        self.models_dir = models_dir
        self.hf_endpoint = hf_endpoint
        self.history = history
        self.throttle = throttle
        self._running: dict[str, _Running] = {}
        self._by_dest: dict[Path, str] = {}
        self._slots = SlotQueue(max_concurrent, tracker.set_queue_position)

    # -- requests --------------------------------------------------------------------------

    def parse(self, model_ref: str) -> tuple[ModelRef, Path]:
        """Validate a ref and its destination; raises InvalidModelRef, touches nothing."""
        ref = parse_model_ref(model_ref, self.hf_endpoint)
        if not host_allowed(ref.url, self.downloader.config.allowed_hosts):
            raise HostNotAllowed("the ref's host is not in HIVE_ALLOWED_HOSTS")
        return ref, resolve_in(self.models_dir, ref.rel_path)

    async def start(
        self, model_ref: str, sha256: str | None = None, max_bps: int | None = None
    ) -> tuple[DownloadState, bool]:
        """(state, created): the active download of the same file if there is one."""
        ref, dest = self.parse(model_ref)
        existing = self._by_dest.get(dest)
        if existing is not None:
            return self._state(existing), False
        download_id = new_download_id()
        expected = sha256.lower() if sha256 else None
        if dest.is_file() and not part_path(dest).exists():
            digest = await self._sha_of_existing(dest)
            if expected is None or digest == expected:
                self.history.new_record(download_id, model_ref, ref.url, dest, expected, None, max_bps)
                self.tracker.start_download(download_id, model_ref, dest.stat().st_size, path=str(dest))
                self.tracker.complete_download(download_id, sha256=digest, path=str(dest))
                log.info("download_already_present", download_id=download_id, path=str(dest))
                return self._state(download_id), False
        token_origin = origin_of(ref.url) if ref.hub else None
        kept = self.history.kept_partial(ref.url, dest)
        self.history.new_record(download_id, model_ref, ref.url, dest, expected, token_origin, max_bps)
        self.tracker.start_download(download_id, model_ref, path=str(dest))
        job = DownloadJob(download_id, ref.url, dest, expected, token_origin)
        if kept is not None:  # a partial an earlier download kept (the disk filled up): carry on from it
            job = _resuming(job, kept)
        self._enqueue(job, max_bps)
        log.info("download_requested", download_id=download_id, model_ref=model_ref, dest=str(dest))
        return self._state(download_id), True

    async def cancel(self, download_id: str) -> DownloadState:
        state = self._state(download_id)
        if state.status is DownloadStatus.CANCELLED:
            return state
        if state.status.is_terminal:
            raise NotCancellable(state)
        running = self._running.get(download_id)
        if running is not None:
            running.user_cancelled = True
            running.task.cancel()
            await asyncio.wait({running.task}, timeout=30)
        return self._state(download_id)

    def forget(self, download_id: str, delete_file: bool = False) -> bool:
        """Remove a finished download from the history; its file only when asked. True if deleted."""
        state = self._state(download_id)
        if not state.status.is_terminal:
            raise StillActive(f"download {download_id} is still {state.status.value}; cancel it first")
        deleted = False
        if delete_file and state.status is DownloadStatus.COMPLETE and state.path:
            path = Path(state.path)
            if path.is_file() and path.resolve().is_relative_to(self.models_dir) and path not in self._by_dest:
                path.unlink()
                deleted = True
        self.history.drop([download_id], busy=self._by_dest)
        return deleted

    def get(self, download_id: str) -> DownloadState | None:
        return self.tracker.get_download(download_id)

    def list_downloads(self, status: DownloadStatus | None = None) -> list[DownloadState]:
        states = self.tracker.list_all()
        return [s for s in states if status is None or s.status is status]

    def active_count(self) -> int:
        return len(self._running)

    def set_bandwidth_limit(self, rate: int) -> None:
        self.throttle.set_limit(rate)
        log.info("bandwidth_limit_changed", bandwidth_limit=rate)

    # -- start-up and shutdown -------------------------------------------------------------

    async def recover(self, records: list[DownloadRecord]) -> None:
        """Rebuild state from history: finished downloads listed, unfinished ones resumed."""
        unfinished = self.history.restore(records)
        hub = origin_of(self.hf_endpoint)
        for rec in unfinished:
            # HF_TOKEN goes to today's hub only: not to one HF_ENDPOINT named before a restart
            token_origin = rec.token_origin if rec.token_origin == hub else None
            job = DownloadJob(rec.download_id, rec.url, Path(rec.dest), rec.expected_sha256, token_origin)
            self._enqueue(_resuming(job, rec), rec.max_bps)
        removed = self.history.remove_orphans(self.models_dir, running=self._running)
        pruned = self.prune()
        log.info(
            "history_recovered", records=len(records), resumed=len(unfinished), orphans_removed=removed, pruned=pruned
        )

    async def shutdown(self) -> None:
        """Stop every transfer, keeping partial files (a restarted hive resumes them)."""
        tasks = [r.task for r in self._running.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)

    def prune(self, now: datetime | None = None) -> int:
        """Forget old finished entries (History.prune), keeping partials of active destinations."""
        return self.history.prune(busy=self._by_dest, now=now)

    async def prune_forever(self, interval: float = 60.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.prune()

    # -- the task --------------------------------------------------------------------------

    def _enqueue(self, job: DownloadJob, max_bps: int | None) -> None:
        self._by_dest[job.dest] = job.download_id
        self._slots.join(job.download_id)
        self.throttle.set_download_limit(job.download_id, max_bps)
        task = asyncio.create_task(self._run(job), name=job.download_id)
        self._running[job.download_id] = _Running(task, job.dest)

    async def _run(self, job: DownloadJob) -> None:
        download_id = job.download_id
        bound = log.bind(download_id=download_id)
        holding_slot = False
        try:
            await self._slots.acquire(download_id)
            holding_slot = True
            self.tracker.set_status(download_id, DownloadStatus.STARTING)
            bound.info("download_starting", url=job.url)
            result = await self.downloader.run(job, self.tracker)
            self.tracker.complete_download(download_id, sha256=result.sha256, path=str(job.dest))
            bound.info("download_complete", size=result.size, sha256=result.sha256, resumed=result.resumed)
        except asyncio.CancelledError:
            running = self._running.get(download_id)
            if running is not None and running.user_cancelled:
                part_path(job.dest).unlink(missing_ok=True)
                self._finish_quietly(download_id, DownloadStatus.CANCELLED)
                bound.info("download_cancelled")
            else:
                bound.info("download_interrupted")  # shutdown: keep the partial for a resume
                raise
        except DownloadError as exc:
            if exc.code != ErrorCode.INSUFFICIENT_DISK:
                part_path(job.dest).unlink(missing_ok=True)
            self._finish_quietly(download_id, DownloadStatus.FAILED, exc.message, exc.code)
            bound.warning("download_failed", code=exc.code, error=exc.message)
        except Exception as exc:
            part_path(job.dest).unlink(missing_ok=True)
            self._finish_quietly(download_id, DownloadStatus.FAILED, "internal error", ErrorCode.DOWNLOAD_FAILED)
            bound.error("download_crashed", error_type=type(exc).__name__, exc_info=exc)
        finally:
            self._running.pop(download_id, None)
            self.throttle.forget(download_id)
            if self._by_dest.get(job.dest) == download_id:
                del self._by_dest[job.dest]
            await self._slots.leave(download_id, held=holding_slot)
            if self.history.over_capacity(len(self._running)):  # between the periodic prunes too
                self.prune()

    def _finish_quietly(
        self, download_id: str, status: DownloadStatus, error: str = "", code: str = ErrorCode.DOWNLOAD_FAILED
    ) -> None:
        state = self.tracker.get_download(download_id)
        if state is None or state.status.is_terminal:
            return
        if status is DownloadStatus.CANCELLED:
            self.tracker.cancel_download(download_id)
        else:
            self.tracker.fail_download(download_id, error, code)

    def _state(self, download_id: str) -> DownloadState:
        state = self.tracker.get_download(download_id)
        if state is None:
            raise UnknownDownload(download_id)
        return state

    async def _sha_of_existing(self, dest: Path) -> str:
        for state in self.tracker.list_all():
            if state.path == str(dest) and state.status is DownloadStatus.COMPLETE and state.sha256:
                return state.sha256
        return await asyncio.to_thread(_sha256_file, dest)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    started = time.monotonic()
    with open(path, "rb") as f:
        while block := f.read(8 * 1024 * 1024):
            h.update(block)
    log.info("hashed_existing_file", path=str(path), secs=round(time.monotonic() - started, 3))
    return h.hexdigest()


def _resuming(job: DownloadJob, rec: DownloadRecord) -> DownloadJob:
    """`job` carrying on from the partial `rec` left: what its transfer had learnt of the file."""
    return dataclasses.replace(
        job, validator=rec.validator, total=rec.total_bytes, segments=rec.segments, hub_digest=rec.hub_digest
    )
