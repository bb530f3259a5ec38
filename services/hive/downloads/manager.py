"""DownloadManager: admits requests as tracked downloads (README, "The hive's API").

A ref is validated before anything is touched; a request joins the running download of the same
thing (a URL download by its destination, an `hf:` ref by what it names: repo, revision, file or file
selection, fleet pull); what is already on disk completes at once; anything else gets its record in
the History and is handed to the DownloadRunner (`runner.py`: the queue, the task, the end). `hf:`
refs are planned by the HubPlanner and fetched by the HubFetcher into the Hugging Face cache; URL
downloads go through the Downloader. `recover` resumes what the history holds after a crash.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import structlog

from services.hive.cache.layout import hub_dir
from services.hive.disk.fileio import sha256_file
from services.hive.disk.partfile import part_path
from services.hive.downloads.recovery import recovery_plan, resuming
from services.hive.downloads.runner import DownloadRunner
from services.hive.history.mirror import History
from services.hive.history.store import DownloadRecord
from services.hive.hub.fetch import HubFetcher
from services.hive.hub.jobs import HubJob, PlanReport
from services.hive.peers.pull_part import PullPart
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
from services.hive.transfer import Downloader, DownloadJob
from services.hive.transfer.throttle import Throttle
from shared.models import DownloadState, DownloadStatus

__all__ = ["DownloadManager", "InvalidModelRef", "NotCancellable", "StillActive", "UnknownDownload", "new_download_id"]

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
        runner: DownloadRunner,
    ) -> None:
        """`history` and `throttle` are the ones `downloader` was built with, `hub` is built on it
        (and plans with `hub.planner`), `runner` runs the tasks."""
        self.tracker = tracker
        self.downloader = downloader
        self.models_dir = models_dir
        self.hf_endpoint = hf_endpoint
        self.history = history
        self.throttle = throttle
        self.hub = hub
        self.planner = hub.planner
        self.runner = runner

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
        if (existing := self.runner.running(dest)) is not None:
            return self._state(existing), False
        download_id = new_download_id()
        expected = sha256.lower() if sha256 else None
        if dest.is_file() and not part_path(dest).exists():
            digest = await self._sha_of_existing(dest)
            if expected is None or digest == expected:
                size = dest.stat().st_size
                self._record(download_id, model_ref, ref.url, dest, expected, None, max_bps, None, size, path=dest)
                return self._complete_at_once(download_id, dest, digest), False
        token_origin = origin_of(ref.url) if ref.hub else None
        kept = self.history.kept_partial(ref.url, dest)
        job = DownloadJob(download_id, ref.url, dest, expected, token_origin)
        if kept is not None:  # a partial an earlier download kept (the disk filled up): carry on from it
            job = resuming(job, kept)
        self._record(download_id, model_ref, ref.url, dest, expected, token_origin, max_bps, None, path=dest)
        self.runner.enqueue(job, dest, max_bps)
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
        expected = sha256.lower() if sha256 else None
        origin = ref.hub_ref.endpoint_origin
        job = HubJob.of(download_id, ref.hub_ref, include, exclude, pull, token_origin=origin, expected_sha256=expected)
        key = _hub_key(job)
        if (existing := self.runner.running(key)) is not None:
            return self._state(existing), False
        present = await self.planner.present(job)
        if (existing := self.runner.running(key)) is not None:  # (one came while the hub was asked)
            return self._state(existing), False
        sha: str | None = None
        if present is not None and not job.whole:
            sha = await self._sha_of_existing(present.path)
            if job.expected_sha256 not in (None, sha):
                present = None
        if present is not None:
            total = sum(f.size for f in present.files)
            self._record(
                download_id, ref.raw, ref.url, present.path, None, None, max_bps, job, total, path=present.path
            )
            self.tracker.set_commit(download_id, present.commit)
            if job.whole:
                self.tracker.set_files(download_id, len(present.files), len(present.files))
            self.tracker.set_warning(download_id, present.warning)
            return self._complete_at_once(download_id, present.path, sha, present.warning), False
        root = self.planner.cache(ref.hub_ref).root
        record = (ref.raw, ref.url, root, job.expected_sha256, job.token_origin, max_bps, job)
        self._record(download_id, *record, sources=pull.to_json())
        self.runner.enqueue(job, key, max_bps)
        log.info("download_requested", download_id=download_id, model_ref=ref.raw, include=include, exclude=exclude)
        return self._state(download_id), True

    def _record(
        self, download_id: str, model_ref: str, url: str, dest: Path, expected: str | None, token_origin: str | None,
        max_bps: int | None, hub: HubJob | None, total: int | None = None, *, path: Path | None = None,
        sources: str | None = None,
    ) -> None:  # fmt: skip
        """A new download's record in the history and its first state (queued)."""
        include, exclude, pull_id = (None, None, None) if hub is None else (hub.include, hub.exclude, hub.pull_id)
        self.history.new_record(
            download_id, model_ref, url, dest, expected, token_origin, max_bps,
            include=include, exclude=exclude, pull_id=pull_id, sources=sources,
        )  # fmt: skip
        shown = None if path is None else str(path)
        self.tracker.start_download(download_id, model_ref, total, path=shown, pull_id=pull_id)

    def _complete_at_once(
        self, download_id: str, path: Path, sha: str | None, warning: str | None = None
    ) -> DownloadState:
        """A download whose file or model was found complete on disk: complete without a byte fetched."""
        self.tracker.complete_download(download_id, sha256=sha, path=str(path))
        log.info("download_already_present", download_id=download_id, path=str(path), warning=warning)
        return self._state(download_id)

    async def plan(
        self, model_ref: str, include: list[str] | None, exclude: list[str] | None, commit: str | None
    ) -> PlanReport:
        """What pulling a whole model would take here (HubPlanner.report); InvalidModelRef for other refs."""
        ref, _ = self.parse(model_ref)
        if not ref.whole_model or ref.hub_ref is None:
            raise InvalidModelRef("a plan is made for whole-model refs (hf:{org}/{repo}[@{rev}]) only")
        origin = ref.hub_ref.endpoint_origin
        job = HubJob.of("plan", ref.hub_ref, include, exclude, PullPart(commit), token_origin=origin)
        return await self.planner.report(job)

    async def cancel(self, download_id: str) -> DownloadState:
        state = self._state(download_id)
        if state.status is DownloadStatus.CANCELLED:
            return state
        if state.status.is_terminal:
            raise NotCancellable(state)
        await self.runner.cancel(download_id)
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
                if path not in self.runner.busy:
                    path.unlink()
                    deleted = True
        self.history.drop([download_id], busy=self.runner.busy)
        return deleted

    def planned(self, digest: str) -> bool:
        """A download here will fetch this blob: a running one has it among its missing files, or a
        fleet pull's part, queued or not planned yet, was told of it (its hub_first or sources)."""
        return self.hub.planned(digest) or self.runner.planned(digest)

    def get(self, download_id: str) -> DownloadState | None:
        return self.tracker.get_download(download_id)

    def files(self, download_id: str) -> list[dict[str, object]] | None:
        """A whole model's files with their own status and bytes (None for anything else)."""
        state = self.tracker.get_download(download_id)
        if state is None or not state.whole_model:
            return None
        ref = parse_model_ref(state.model_ref, self.hf_endpoint).hub_ref
        return None if ref is None else self.hub.files(state, ref, *self.history.patterns(download_id))

    def list_downloads(self, status: DownloadStatus | None = None) -> list[DownloadState]:
        states = self.tracker.list_all()
        return [s for s in states if status is None or s.status is status]

    def set_bandwidth_limit(self, rate: int) -> None:
        self.throttle.set_limit(rate)
        log.info("bandwidth_limit_changed", bandwidth_limit=rate)

    # -- start-up and shutdown -------------------------------------------------------------

    async def recover(self, records: list[DownloadRecord]) -> None:
        """Rebuild state from history: finished downloads listed, unfinished ones resumed."""
        unfinished = self.history.restore(records)
        plan = recovery_plan(records, unfinished, self.hf_endpoint, self.history.patterns)
        for job, max_bps in plan.resumed:
            self.runner.enqueue(job, _hub_key(job) if isinstance(job, HubJob) else job.dest, max_bps)
        keep_under = {self.planner.partial_dir(ref) for ref in plan.hub_refs}
        removed = self.history.remove_orphans(self.models_dir, running=self.runner.running_ids(), keep_under=keep_under)
        pruned = self.runner.prune()
        log.info(
            "history_recovered", records=len(records), resumed=len(unfinished), orphans_removed=removed, pruned=pruned
        )

    # -- the task --------------------------------------------------------------------------

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
