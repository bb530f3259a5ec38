"""DownloadManager: turns requests into tracked download tasks, and owns their policy.

Dedupe by destination, files already on disk, the concurrency limit (the rest wait `queued` in
arrival order), cancellation, and what happens to a partial file after a cancel or a failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path

import structlog

from services.hive.downloader import Downloader, DownloadError, DownloadJob, part_path
from services.hive.refs import InvalidModelRef, ModelRef, origin_of, parse_model_ref, resolve_in
from services.hive.tracker import DownloadTracker, UnknownDownload
from shared.models import DownloadState, DownloadStatus, ErrorCode

__all__ = ["DownloadManager", "InvalidModelRef", "NotCancellable", "UnknownDownload", "new_download_id"]

log = structlog.get_logger()


def new_download_id() -> str:
    return f"dl-{uuid.uuid4().hex}"


class NotCancellable(Exception):
    def __init__(self, state: DownloadState) -> None:
        super().__init__(f"download {state.download_id} is already {state.status.value}")
        self.state = state


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
        max_concurrent: int = 3,
    ) -> None:
        self.tracker = tracker
        self.downloader = downloader
        self.models_dir = models_dir
        self.hf_endpoint = hf_endpoint
        self.max_concurrent = max_concurrent
        self._running: dict[str, _Running] = {}
        self._by_dest: dict[Path, str] = {}
        self._waiting: list[str] = []  # queued ids in arrival order
        self._active = 0
        self._slot_freed = asyncio.Condition()

    # -- requests --------------------------------------------------------------------------

    def parse(self, model_ref: str) -> tuple[ModelRef, Path]:
        """Validate a ref and its destination; raises InvalidModelRef, touches nothing."""
        ref = parse_model_ref(model_ref, self.hf_endpoint)
        return ref, resolve_in(self.models_dir, ref.rel_path)

    async def start(self, model_ref: str, sha256: str | None = None) -> tuple[DownloadState, bool]:
        """(state, created): the active download of the same file if there is one."""
        ref, dest = self.parse(model_ref)
        existing = self._by_dest.get(dest)
        if existing is not None:
            state = self.tracker.get_download(existing)
            assert state is not None
            return state, False
        download_id = new_download_id()
        if dest.is_file() and not part_path(dest).exists():
            digest = await self._sha_of_existing(dest)
            if sha256 is None or digest == sha256.lower():
                self.tracker.start_download(download_id, model_ref, dest.stat().st_size, path=str(dest))
                self.tracker.complete_download(download_id, sha256=digest, path=str(dest))
                log.info("download_already_present", download_id=download_id, path=str(dest))
                state = self.tracker.get_download(download_id)
                assert state is not None
                return state, False
        self.tracker.start_download(download_id, model_ref, path=str(dest))
        token_origin = origin_of(ref.url) if ref.hub else None
        job = DownloadJob(download_id, ref.url, dest, sha256.lower() if sha256 else None, token_origin)
        self._by_dest[dest] = download_id
        self._waiting.append(download_id)
        self._publish_queue()
        task = asyncio.create_task(self._run(job), name=download_id)
        self._running[download_id] = _Running(task, dest)
        log.info("download_requested", download_id=download_id, model_ref=model_ref, dest=str(dest))
        state = self.tracker.get_download(download_id)
        assert state is not None
        return state, True

    async def cancel(self, download_id: str) -> DownloadState:
        state = self.tracker.get_download(download_id)
        if state is None:
            raise UnknownDownload(download_id)
        if state.status is DownloadStatus.CANCELLED:
            return state
        if state.status.is_terminal:
            raise NotCancellable(state)
        running = self._running.get(download_id)
        if running is not None:
            running.user_cancelled = True
            running.task.cancel()
            await asyncio.wait({running.task}, timeout=30)
        final = self.tracker.get_download(download_id)
        assert final is not None
        return final

    def get(self, download_id: str) -> DownloadState | None:
        return self.tracker.get_download(download_id)

    def list(self, status: DownloadStatus | None = None) -> list[DownloadState]:
        states = self.tracker.list_all()
        return [s for s in states if status is None or s.status is status]

    def active_count(self) -> int:
        return len(self._running)

    async def shutdown(self) -> None:
        """Stop every transfer, keeping partial files (a restarted hive may resume them)."""
        tasks = [r.task for r in self._running.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)

    # -- the task --------------------------------------------------------------------------

    async def _run(self, job: DownloadJob) -> None:
        download_id = job.download_id
        bound = log.bind(download_id=download_id)
        holding_slot = False
        try:
            await self._acquire_slot(download_id)
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
                bound.info("download_interrupted")  # shutdown: keep the partial
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
            if self._by_dest.get(job.dest) == download_id:
                del self._by_dest[job.dest]
            was_waiting = download_id in self._waiting
            if was_waiting:
                self._waiting.remove(download_id)
                self._publish_queue()
            if holding_slot or was_waiting:
                await self._release_slot(holding_slot)

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

    async def _acquire_slot(self, download_id: str) -> None:
        async with self._slot_freed:
            await self._slot_freed.wait_for(
                lambda: self._active < self.max_concurrent and self._waiting[0] == download_id
            )
            self._waiting.pop(0)
            self._active += 1
            self._slot_freed.notify_all()
        self._publish_queue()

    async def _release_slot(self, held: bool) -> None:
        """Give back a slot (or a place in the queue) and let the next in line re-check."""
        async with self._slot_freed:
            if held:
                self._active -= 1
            self._slot_freed.notify_all()

    def _publish_queue(self) -> None:
        for position, download_id in enumerate(self._waiting, start=1):
            self.tracker.set_queue_position(download_id, position)

    async def _sha_of_existing(self, dest: Path) -> str:
        for state in self.tracker.list_all():
            if state.path == str(dest) and state.status is DownloadStatus.COMPLETE and state.sha256:
                return state.sha256
        return await asyncio.to_thread(_sha256_file, dest)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * 1024 * 1024):
            h.update(block)
    return h.hexdigest()
