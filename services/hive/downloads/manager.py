"""DownloadManager: turns requests into tracked download tasks, and owns their policy.

Dedupe (a URL download by its destination, an `hf:` ref by what it names: repo, revision, file or
file selection), what is already on disk, the concurrency limit (the rest wait `queued` in arrival
order; a whole model holds one place), cancellation, and what happens to partials after a cancel or
a failure. `hf:` refs run through the HubFetcher into the Hugging Face cache; URL downloads through
the Downloader. The records of it all are the History's (history.py); `recover` resumes what it
holds after a crash.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import structlog

from services.hive.cache.layout import hub_dir
from services.hive.disk.fileio import sha256_file
from services.hive.disk.partfile import part_path
from services.hive.downloads.slots import SlotQueue
from services.hive.history.mirror import History
from services.hive.history.store import DownloadRecord
from services.hive.hub.fetch import HubFetcher
from services.hive.hub.jobs import HubJob, PlanReport
from services.hive.refs import (
    HostNotAllowed,
    InvalidModelRef,
    ModelRef,
    host_allowed,
    origin_of,
    parse_model_ref,
    resolve_in,
)
from services.hive.tracker.tracker import DownloadTracker, UnknownDownload
from services.hive.transfer import Downloader, DownloadError, DownloadJob
from services.hive.transfer.throttle import Throttle
from shared.models import DownloadState, DownloadStatus, ErrorCode

__all__ = [
    "DownloadManager",
    "InvalidModelRef",
    "NotCancellable",
    "PullPart",
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


Key = Path | tuple[object, ...]  # a URL download's destination, or what an hf: ref names


@dataclass(slots=True)
class _Running:
    task: asyncio.Task[None]
    key: Key
    job: DownloadJob | HubJob
    user_cancelled: bool = False


@dataclass(frozen=True, slots=True)
class PullPart:
    """What the queen says of a download that is one hive's part of a fleet pull."""

    commit: str | None = None
    sources: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    hub_first: frozenset[str] = frozenset()
    pull_id: str | None = None

    def to_json(self) -> str | None:
        if self == PullPart():
            return None
        sources = {d: list(p) for d, p in self.sources.items()}
        return json.dumps({"commit": self.commit, "sources": sources, "hub_first": sorted(self.hub_first)})

    @classmethod
    def from_json(cls, text: str | None) -> PullPart:
        try:
            data = json.loads(text) if text else {}
            sources = {str(d): tuple(str(u) for u in urls) for d, urls in dict(data.get("sources") or {}).items()}
            return cls(data.get("commit"), sources, frozenset(data.get("hub_first") or ()))
        except (ValueError, TypeError, AttributeError):
            return cls()


def _hub_key(job: HubJob) -> Key:
    """What a request joins: the same ref and selection, and the same fleet pull (a pull's part never
    joins another download, which may be at another commit or of another pull)."""
    ref = job.hub_ref
    return ("hf", ref.repo_id, ref.revision, ref.file, job.include, job.exclude, job.pull_id)


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
        hub: HubFetcher,
        max_concurrent: int = 3,
    ) -> None:
        """`history` and `throttle` are the ones `downloader` was built with, `hub` is built on it
        (and plans with `hub.planner`)."""
        self.tracker = tracker
        self.downloader = downloader
        self.models_dir = models_dir
        self.hf_endpoint = hf_endpoint
        self.history = history
        self.throttle = throttle
        self.hub = hub
        self.planner = hub.planner
        self._running: dict[str, _Running] = {}
        self._by_key: dict[Key, str] = {}
        self._slots = SlotQueue(max_concurrent, tracker.set_queue_position)

    # -- requests --------------------------------------------------------------------------

    def parse(self, model_ref: str) -> tuple[ModelRef, Path | None]:
        """Validate a ref and a URL download's destination; raises InvalidModelRef, touches nothing."""
        ref = parse_model_ref(model_ref, self.hf_endpoint)
        if not host_allowed(ref.url, self.downloader.config.allowed_hosts):
            raise HostNotAllowed("the ref's host is not in HIVE_ALLOWED_HOSTS")
        return ref, None if ref.rel_path is None else resolve_in(self.models_dir, ref.rel_path)

    async def start(
        self,
        model_ref: str,
        sha256: str | None = None,
        max_bps: int | None = None,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        pull: PullPart | None = None,
    ) -> tuple[DownloadState, bool]:
        """(state, created): the active download of the same file or model if there is one."""
        ref, dest = self.parse(model_ref)
        if (include is not None or exclude is not None) and not ref.whole_model:
            raise InvalidModelRef("include and exclude apply to whole-model refs (hf:{org}/{repo}[@{rev}]) only")
        if sha256 is not None and ref.whole_model:
            raise InvalidModelRef("sha256 applies to one file; a model's files are verified against the hub's digests")
        if pull is not None and dest is not None:
            raise InvalidModelRef("commit, sources, hub_first and pull_id apply to hf: refs only")
        if dest is None:
            return await self._start_hub(ref, sha256, max_bps, include, exclude, pull or PullPart())
        existing = self._by_key.get(dest)
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
        self._enqueue(job, dest, max_bps)
        log.info("download_requested", download_id=download_id, model_ref=model_ref, dest=str(dest))
        return self._state(download_id), True

    async def _start_hub(
        self,
        ref: ModelRef,
        sha256: str | None,
        max_bps: int | None,
        include: list[str] | None,
        exclude: list[str] | None,
        pull: PullPart,
    ) -> tuple[DownloadState, bool]:
        assert ref.hub_ref is not None
        download_id = new_download_id()
        job = HubJob(
            download_id,
            ref.hub_ref,
            None if include is None else tuple(include),
            None if exclude is None else tuple(exclude),
            commit=pull.commit,
            token_origin=ref.hub_ref.endpoint_origin,
            expected_sha256=sha256.lower() if sha256 else None,
            sources=pull.sources,
            hub_first=pull.hub_first,
            pull_id=pull.pull_id,
        )
        key = _hub_key(job)
        if (existing := self._by_key.get(key)) is not None:
            return self._state(existing), False
        present = await self.planner.present(job)
        if (existing := self._by_key.get(key)) is not None:  # (one came while the hub was asked)
            return self._state(existing), False
        if present is not None and not job.whole:
            sha = await self._sha_of_existing(present.path)
            if job.expected_sha256 not in (None, sha):
                present = None
        if present is not None:
            self.history.new_record(
                download_id,
                ref.raw,
                ref.url,
                present.path,
                None,
                None,
                max_bps,
                include=job.include,
                exclude=job.exclude,
                pull_id=job.pull_id,
            )
            total = sum(f.size for f in present.files)
            self.tracker.start_download(download_id, ref.raw, total, path=str(present.path), pull_id=job.pull_id)
            self.tracker.set_commit(download_id, present.commit)
            if job.whole:
                self.tracker.set_files(download_id, len(present.files), len(present.files))
            self.tracker.set_warning(download_id, present.warning)
            self.tracker.complete_download(download_id, sha256=None if job.whole else sha, path=str(present.path))
            log.info(
                "download_already_present", download_id=download_id, path=str(present.path), warning=present.warning
            )
            return self._state(download_id), False
        root = self.planner.cache(ref.hub_ref).root
        self.history.new_record(
            download_id,
            ref.raw,
            ref.url,
            root,
            job.expected_sha256,
            job.token_origin,
            max_bps,
            include=job.include,
            exclude=job.exclude,
            pull_id=job.pull_id,
            sources=pull.to_json(),
        )
        self.tracker.start_download(download_id, ref.raw, pull_id=job.pull_id)
        self._enqueue(job, key, max_bps)
        log.info("download_requested", download_id=download_id, model_ref=ref.raw, include=include, exclude=exclude)
        return self._state(download_id), True

    async def plan(
        self, model_ref: str, include: list[str] | None, exclude: list[str] | None, commit: str | None
    ) -> PlanReport:
        """What pulling a whole model would take here (HubPlanner.report); InvalidModelRef for other refs."""
        ref, _ = self.parse(model_ref)
        if not ref.whole_model or ref.hub_ref is None:
            raise InvalidModelRef("a plan is made for whole-model refs (hf:{org}/{repo}[@{rev}]) only")
        job = HubJob(
            "plan",
            ref.hub_ref,
            None if include is None else tuple(include),
            None if exclude is None else tuple(exclude),
            commit=commit,
            token_origin=ref.hub_ref.endpoint_origin,
        )
        return await self.planner.report(job)

    async def cancel(self, download_id: str) -> DownloadState:
        state = self._state(download_id)
        if state.status is DownloadStatus.CANCELLED:
            return state
        if state.status.is_terminal:
            raise NotCancellable(state)
        running = self._running.get(download_id)
        if running is not None:
            running.user_cancelled = True
            self.hub.discard_on_stop(download_id)
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
            in_cache = path.resolve().is_relative_to(hub_dir(self.models_dir))  # (huggingface_hub's to manage)
            if path.is_file() and path.resolve().is_relative_to(self.models_dir) and not in_cache:
                if path not in self._by_key:
                    path.unlink()
                    deleted = True
        self.history.drop([download_id], busy=self._by_key)
        return deleted

    def planned(self, digest: str) -> bool:
        """A download here will fetch this blob: a running one has it among its missing files, or a
        fleet pull's part, queued or not planned yet, was told of it (its hub_first or sources)."""
        if self.hub.planned(digest):
            return True
        return any(
            isinstance(r.job, HubJob) and (digest in r.job.hub_first or digest in r.job.sources)
            for r in self._running.values()
        )

    def get(self, download_id: str) -> DownloadState | None:
        return self.tracker.get_download(download_id)

    def files(self, download_id: str) -> list[dict[str, object]] | None:
        """A whole model's files with their own status and bytes (None for anything else)."""
        if (running := self.hub.files_of(download_id)) is not None:
            return running
        state = self.tracker.get_download(download_id)
        if state is None or not state.whole_model:
            return None
        ref = parse_model_ref(state.model_ref, self.hf_endpoint).hub_ref
        listed = None
        if ref is not None and state.commit is not None:
            listed = self.planner.listed_files(ref, state.commit, *self.history.patterns(download_id))
        if ref is None or state.commit is None or listed is None:
            return []
        cache = self.planner.cache(ref)
        other = state.status.value if state.status.is_terminal else DownloadStatus.QUEUED.value
        files = []
        for f in listed:
            there = cache.has(state.commit, f.path, f.digest)
            files.append(
                {
                    "path": f.path,
                    "size": f.size,
                    "bytes": f.size if there else 0,
                    "status": "complete" if there else other,
                }
            )
        return files

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
        keep_under = set()
        for rec in unfinished:
            # HF_TOKEN goes to today's hub only: not to one HF_ENDPOINT named before a restart
            token_origin = rec.token_origin if rec.token_origin == hub else None
            hub_job = self._hub_job_of(rec, token_origin)
            if hub_job is not None:
                keep_under.add(self.planner.partial_dir(hub_job.hub_ref))
                self._enqueue(hub_job, _hub_key(hub_job), rec.max_bps)
                continue
            job = DownloadJob(rec.download_id, rec.url, Path(rec.dest), rec.expected_sha256, token_origin)
            self._enqueue(_resuming(job, rec), job.dest, rec.max_bps)
        for rec in records:  # a hub download that failed for a full disk kept its partial for a later request
            if rec.status == DownloadStatus.FAILED.value and rec.error_code == ErrorCode.INSUFFICIENT_DISK:
                if (kept := self._hub_job_of(rec, None)) is not None:
                    keep_under.add(self.planner.partial_dir(kept.hub_ref))
        removed = self.history.remove_orphans(self.models_dir, running=self._running, keep_under=keep_under)
        pruned = self.prune()
        log.info(
            "history_recovered", records=len(records), resumed=len(unfinished), orphans_removed=removed, pruned=pruned
        )

    def _hub_job_of(self, rec: DownloadRecord, token_origin: str | None) -> HubJob | None:
        """An unfinished hf: download resumed at the commit it had pinned (a hub download is one
        whose ref is hf:; one that never pinned a commit pins it now)."""
        try:
            ref = parse_model_ref(rec.model_ref, self.hf_endpoint)
        except InvalidModelRef:
            return None
        if ref.hub_ref is None:
            return None
        include, exclude = self.history.patterns(rec.download_id)
        pull = PullPart.from_json(rec.sources)
        return HubJob(
            rec.download_id,
            ref.hub_ref,
            include,
            exclude,
            rec.commit or pull.commit,
            token_origin,
            rec.expected_sha256,
            sources=pull.sources,
            hub_first=pull.hub_first,
            pull_id=rec.pull_id,
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
        return self.history.prune(busy=self._by_key, now=now)

    async def prune_forever(self, interval: float = 60.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.prune()

    # -- the task --------------------------------------------------------------------------

    def _enqueue(self, job: DownloadJob | HubJob, key: Key, max_bps: int | None) -> None:
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

    async def _run(self, job: DownloadJob | HubJob, key: Key) -> None:
        download_id = job.download_id
        bound = log.bind(download_id=download_id)
        holding_slot = False
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

    def _state(self, download_id: str) -> DownloadState:
        state = self.tracker.get_download(download_id)
        if state is None:
            raise UnknownDownload(download_id)
        return state

    async def _sha_of_existing(self, dest: Path) -> str:
        for state in self.tracker.list_all():
            if state.path == str(dest) and state.status is DownloadStatus.COMPLETE and state.sha256:
                return state.sha256
        return await asyncio.to_thread(sha256_file, dest)


def _drop_partial(job: DownloadJob | HubJob) -> None:
    """A URL download's partial goes after a cancel or failure (a hub download's partials are the
    HubFetcher's to drop, file by file, as they stop)."""
    if isinstance(job, DownloadJob):
        part_path(job.dest).unlink(missing_ok=True)


def _resuming(job: DownloadJob, rec: DownloadRecord) -> DownloadJob:
    """`job` carrying on from the partial `rec` left: what its transfer had learnt of the file."""
    return dataclasses.replace(
        job, validator=rec.validator, total=rec.total_bytes, segments=rec.segments, hub_digest=rec.hub_digest
    )
