"""DownloadRunner: the life of a download's task, from its place in the queue to its terminal state.

At most `max_concurrent` downloads run at once; the rest wait `queued` in arrival order (a whole
model holds one place). A task ends complete, failed (its code and message) or cancelled; a cancel
by the user drops the partial, a shutdown keeps it for a resume. A URL download's partial goes
after a failure; a hub download's partials are the HubFetcher's to drop, file by file, as they stop
(a full disk keeps them for a later request). History is pruned here too, since only the runner
knows which destinations are busy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime

import structlog

from services.hive.disk.partfile import part_path
from services.hive.downloads.slots import SlotQueue
from services.hive.history.mirror import History
from services.hive.hub.fetch import HubFetcher
from services.hive.hub.jobs import HubJob
from services.hive.tracker.tracker import DownloadTracker
from services.hive.transfer import Downloader, DownloadError, DownloadJob
from services.hive.transfer.throttle import Throttle
from shared.models import DownloadStatus, ErrorCode

__all__ = ["DownloadRunner"]

log = structlog.get_logger()


@dataclass(slots=True)
class _Running:
    task: asyncio.Task[None]
    key: Hashable
    job: DownloadJob | HubJob
    user_cancelled: bool = False
    started: bool = False  # its task has run: a task cancelled before that runs none of `_run`


class DownloadRunner:
    def __init__(
        self,
        tracker: DownloadTracker,
        downloader: Downloader,
        hub: HubFetcher,
        history: History,
        throttle: Throttle,
        max_concurrent: int = 3,
    ) -> None:
        self.tracker = tracker
        self.downloader = downloader
        self.hub = hub
        self.history = history
        self.throttle = throttle
        self._running: dict[str, _Running] = {}
        self._by_key: dict[Hashable, str] = {}  # what a running download is of -> its id (see DownloadManager)
        self._slots = SlotQueue(max_concurrent, tracker.set_queue_position)

    def running(self, key: Hashable) -> str | None:
        """The download running (or queued) for `key`, if any."""
        return self._by_key.get(key)

    @property
    def busy(self) -> dict[Hashable, str]:
        """What running downloads are of: their partials and records are not to be swept."""
        return self._by_key

    def running_ids(self) -> set[str]:
        return set(self._running)

    def planned(self, digest: str) -> bool:
        """A fleet pull's part, queued or not planned yet, was told of this blob (hub_first or sources)."""
        return any(
            isinstance(r.job, HubJob) and (digest in r.job.hub_first or digest in r.job.sources)
            for r in self._running.values()
        )

    async def cancel(self, download_id: str) -> None:
        """Stop a running or queued download as the user asked: its partial goes."""
        running = self._running.get(download_id)
        if running is not None:
            running.user_cancelled = True
            self.hub.discard_on_stop(download_id)
            running.task.cancel()
            await asyncio.wait({running.task}, timeout=30)
            if not running.started:  # cancelled before its first step: end it here, as `_run` would have
                _drop_partial(running.job)
                self._finish_quietly(download_id, DownloadStatus.CANCELLED)
                log.info("download_cancelled", download_id=download_id)
                await self._ended(download_id, running.key, holding_slot=False)

    def active_count(self) -> int:
        return len(self._running)

    async def shutdown(self) -> None:
        """Stop every transfer, keeping partial files (a restarted hive resumes them)."""
        tasks = [r.task for r in self._running.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)

    def prune(self, now: datetime | None = None) -> int:
        """Forget old finished entries (History.prune), keeping partials of active destinations."""
        return self.history.prune(busy=self._by_key, now=now)

    async def prune_forever(self, interval: float = 60.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.prune()

    def enqueue(self, job: DownloadJob | HubJob, key: Hashable, max_bps: int | None) -> None:
        self._by_key[key] = job.download_id
        self._slots.join(job.download_id)
        self.throttle.set_download_limit(job.download_id, max_bps)
        task = asyncio.create_task(self._run(job, key), name=job.download_id)
        self._running[job.download_id] = _Running(task, key, job)

    async def _transfer(self, job: DownloadJob | HubJob) -> tuple[str, str | None]:
        """The work of one download: (its path, its sha256)."""
        if isinstance(job, HubJob):
            hub_result = await self.hub.run(job, self.tracker)
            return str(hub_result.path), hub_result.sha256
        result = await self.downloader.run(job, self.tracker)
        log.info("download_fetched", download_id=job.download_id, size=result.size, resumed=result.resumed)
        return str(job.dest), result.sha256

    async def _run(self, job: DownloadJob | HubJob, key: Hashable) -> None:
        download_id = job.download_id
        bound = log.bind(download_id=download_id)
        holding_slot = False
        if (me := self._running.get(download_id)) is not None:
            me.started = True
        try:
            await self._slots.acquire(download_id)
            holding_slot = True
            self.tracker.set_status(download_id, DownloadStatus.STARTING)
            bound.info("download_starting")
            path, sha = await self._transfer(job)
            self.tracker.complete_download(download_id, sha256=sha, path=path)
            bound.info("download_complete", path=path, sha256=sha)
        except asyncio.CancelledError:
            running = self._running.get(download_id)
            if running is not None and running.user_cancelled:
                _drop_partial(job)
                self._finish_quietly(download_id, DownloadStatus.CANCELLED)
                bound.info("download_cancelled")
            else:
                bound.info("download_interrupted")  # shutdown: keep the partial for a resume
                raise
        except DownloadError as exc:
            if exc.code != ErrorCode.INSUFFICIENT_DISK:
                _drop_partial(job)
            self._finish_quietly(download_id, DownloadStatus.FAILED, exc.message, exc.code)
            bound.warning("download_failed", code=exc.code, error=exc.message)
        except Exception as exc:
            _drop_partial(job)
            self._finish_quietly(download_id, DownloadStatus.FAILED, "internal error", ErrorCode.DOWNLOAD_FAILED)
            bound.error("download_crashed", error_type=type(exc).__name__, exc_info=exc)
        finally:
            await self._ended(download_id, key, holding_slot)

    async def _ended(self, download_id: str, key: Hashable, holding_slot: bool) -> None:
        """A download's task is over: its place in the queue, its key and its cap go."""
        self._running.pop(download_id, None)
        self.throttle.forget(download_id)
        if self._by_key.get(key) == download_id:
            del self._by_key[key]
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


def _drop_partial(job: DownloadJob | HubJob) -> None:
    """A URL download's partial goes after a cancel or failure (a hub download's partials are the
    HubFetcher's to drop, file by file, as they stop)."""
    if isinstance(job, DownloadJob):
        part_path(job.dest).unlink(missing_ok=True)
