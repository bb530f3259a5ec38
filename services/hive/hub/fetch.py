"""Hub downloads into the Hugging Face cache: one file of a repo, or every file of one commit.

For each download (`HubJob`), in order (README, "Whole models"):
1. the plan (`HubPlanner.plan`): the commit pinned, the files listed and picked, a gated repo's
   access proved, the bytes still missing checked against the disk — all before the first byte;
2. fetch the missing files, `files_concurrent` at once and small ones beside them (`selection.fetch_order`),
   each from its sources in order (`sources.order_sources`: peers and the hub) into its partial under
   `.rbee/partial/`, verified against the hub's digest (the Downloader), renamed to `blobs/{digest}` and linked from
   `snapshots/{commit}/{path}`; a blob already there (another revision's, an earlier pull's) is
   linked without a byte fetched;
3. write `refs/{rev}` once every file is in place, so huggingface_hub never sees half a snapshot.

One fetch per blob at a time on this hive (`_blob_lock`): two downloads that share a file take
turns, and the second finds the blob in place. A file that fails fails the download with the file's
path in the message and its code; its siblings are stopped. Partials of unfinished files go when
the download is cancelled or fails (`ModelProgress.discard`), and stay when the hive shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path

import structlog

from services.hive.cache.partials import PartialNotes
from services.hive.cache.repo import RepoCache
from services.hive.disk.fileio import sha256_file
from services.hive.hub.api import RepoFile
from services.hive.hub.jobs import HubJob, HubResult
from services.hive.hub.plan import HubPlanner
from services.hive.hub.progress import FileProgress, ModelProgress
from services.hive.hub.selection import SMALL_FILE, fetch_order
from services.hive.hub.sources import file_job, order_sources
from services.hive.refs import HubRef
from services.hive.tracker.tracker import DownloadTracker
from services.hive.transfer import Downloader, DownloadError, DownloadResult
from shared.models import DownloadState, DownloadStatus, ErrorCode

__all__ = ["HubFetcher"]

log = structlog.get_logger()

_ENDED_KEPT = 256  # ended models whose files (with their sources) GET shows from memory; older: from disk


class HubFetcher:
    """Runs hub downloads: the plan from `planner`, each missing file through `downloader`."""

    def __init__(
        self,
        downloader: Downloader,
        planner: HubPlanner,
        *,
        files_concurrent: int = 4,
        peer_token: str | None = None,
        peer_attempts: int = 2,
    ) -> None:
        self.downloader = downloader
        self.planner = planner
        self.files_concurrent = files_concurrent
        self.peer_token = peer_token  # RBEE_API_TOKEN: peers' blob routes are behind it too
        self.peer_attempts = peer_attempts  # failed attempts on a peer before the next source
        self._runs: dict[str, ModelProgress] = {}
        self._ended: OrderedDict[str, list[dict[str, object]]] = OrderedDict()  # the last files of ended models
        self._blob_locks: dict[Path, tuple[asyncio.Lock, list[int]]] = {}
        # the notes of partials kept when their download stopped (the disk filled up): the last checkpoint
        # (the exact segment plan) could not be written to that full disk, so a later request resumes from these
        self._kept_notes: dict[Path, PartialNotes] = {}

    # -- what a download shows -------------------------------------------------------------

    def files_of(self, download_id: str) -> list[dict[str, object]] | None:
        run = self._runs.get(download_id)
        if run is not None and run.whole:
            return run.file_states()
        return self._ended.get(download_id)

    def files(
        self, state: DownloadState, hub_ref: HubRef, include: tuple[str, ...] | None, exclude: tuple[str, ...] | None
    ) -> list[dict[str, object]]:
        """A whole model's files, each with its status and bytes: live while it runs, else as the cache
        holds them (a file not there shows the download's end status, or queued before it ran)."""
        if (running := self.files_of(state.download_id)) is not None:
            return running
        if state.commit is None:
            return []
        other = state.status if state.status.is_terminal else DownloadStatus.QUEUED
        return self.planner.file_states(hub_ref, state.commit, include, exclude, other) or []

    def planned(self, digest: str) -> bool:
        """A running download here will fetch this blob (it is not in place yet)."""
        return any(
            e.file.digest == digest and e.status != DownloadStatus.COMPLETE.value
            for run in self._runs.values()
            for e in run.entries.values()
        )

    def discard_on_stop(self, download_id: str) -> None:
        """The download is being cancelled: its partials go as its files stop."""
        if (run := self._runs.get(download_id)) is not None:
            run.discard = True

    # -- the download ----------------------------------------------------------------------

    async def run(self, job: HubJob, tracker: DownloadTracker) -> HubResult:
        hub_ref, cache = job.hub_ref, self.planner.cache(job.hub_ref)
        bound = log.bind(download_id=job.download_id, repo_id=hub_ref.repo_id)
        commit, files = await self.planner.plan(job, bound, tracker)
        path = cache.snapshot_dir(commit) if job.whole else cache.snapshot_file(commit, files[0].path)
        tracker.set_commit(job.download_id, commit)
        tracker.set_path(job.download_id, str(path))
        progress = ModelProgress(tracker, job.download_id, files, job.whole)
        self._runs[job.download_id] = progress
        try:
            progress.show_plan()
            missing = []
            for f in files:
                if f.digest and cache.blob(f.digest).is_file():
                    progress.finished(f.path)
                else:
                    missing.append(f)
            await self.planner.make_room(job.download_id, cache, missing)
            bound.info(
                "hub_download_planned", commit=commit, files=len(files), missing=len(missing), total=progress.total
            )
            fetched = await self._fetch_all(job, cache, commit, missing, progress)
            # linked once every blob is in place, then the ref: never a snapshot with a file missing
            digests = {f.path: f.digest for f in files} | {path: digest for path, (digest, _) in fetched.items()}
            one, got = files[0].path, fetched.get(files[0].path, ("", None))[1]  # sha256: fetched, LFS name or read
            sha = None if job.whole else await _checked_sha(job, cache, one, digests[one], got)
            for f in files:
                cache.link(commit, f.path, digests[f.path])
            cache.write_ref(hub_ref.revision, commit)
        except asyncio.CancelledError:
            progress.stopped(DownloadStatus.CANCELLED)
            raise
        except BaseException:
            progress.stopped(DownloadStatus.FAILED)
            raise
        finally:
            self.planner.release(job.download_id)
            if self._runs.get(job.download_id) is progress:
                del self._runs[job.download_id]
            if job.whole:
                self._ended[job.download_id] = progress.file_states()
                while len(self._ended) > _ENDED_KEPT:
                    self._ended.popitem(last=False)
        return HubResult(path, commit, sha, len(files))

    async def _fetch_all(
        self, job: HubJob, cache: RepoCache, commit: str, missing: list[RepoFile], progress: ModelProgress
    ) -> dict[str, tuple[str, str | None]]:
        """Fetch the files into their blobs in `fetch_order`, `files_concurrent` large ones at once and as
        many small ones beside them; the first failure stops the rest. path -> (digest, sha256 if here)."""
        if not missing:
            return {}
        gates = {small: asyncio.Semaphore(self.files_concurrent) for small in (True, False)}
        ordered = fetch_order(missing, job.hub_first)
        tasks = [
            asyncio.create_task(self._fetch_one(job, cache, commit, f, progress, gates), name=f"{job.download_id}:{i}")
            for i, f in enumerate(ordered)
        ]
        failed: list[asyncio.Task[tuple[str, str | None]]] = []
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t for t in done if not t.cancelled() and t.exception() is not None]
            if failed:
                exc = failed[0].exception()
                if not (isinstance(exc, DownloadError) and exc.code == ErrorCode.INSUFFICIENT_DISK):
                    progress.discard = True
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # every file stopped, its partial closed
            if progress.discard:  # (cancelled or failed) the partials of files that had not started go too
                for f, task in zip(ordered, tasks, strict=True):
                    if task.cancelled() or task.exception() is not None:
                        self._discard_idle(cache, f)
        if failed:
            raise failed[0].exception()  # type: ignore[misc]
        return {f.path: task.result() for f, task in zip(ordered, tasks, strict=True)}

    def _discard_idle(self, cache: RepoCache, f: RepoFile) -> None:
        """Drop a stopped file's partial unless another download is fetching that blob now."""
        if not f.digest:
            return
        partial = cache.partial(f.digest)
        lock = self._blob_locks.get(partial)
        if lock is None or not lock[0].locked():
            _discard(partial, PartialNotes(partial))

    async def _fetch_one(
        self,
        job: HubJob,
        cache: RepoCache,
        commit: str,
        f: RepoFile,
        progress: ModelProgress,
        gates: dict[bool, asyncio.Semaphore],  # (by whether the file is small)
    ) -> tuple[str, str | None]:
        """One file into its blob: (its digest, its sha256 when it was fetched here). A file the hub
        gave no digest for (a server that is no real hub) is named by the sha256 its bytes have."""
        # the partial's name: the digest, else one made from commit and path
        name = f.digest or hashlib.sha1(f"{commit}/{f.path}".encode(), usedforsecurity=False).hexdigest()
        partial = cache.partial(name)
        blob = cache.blob(f.digest) if f.digest else partial.with_name(f"{name}.fetched")
        digest: str = f.digest
        sha: str | None = None
        async with gates[f.size < SMALL_FILE], self._blob_lock(partial):
            if not blob.is_file() or not f.digest:  # (another download may have put it in place meanwhile)
                result = await self._fetch_from_sources(job, commit, f, blob, partial, progress)
                sha = result.sha256
                if not f.digest:
                    digest = sha
                    cache.blob(digest).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(blob, cache.blob(digest))
        progress.finished(f.path)
        return digest, sha

    def _notes_for(self, partial: Path) -> PartialNotes:
        """What the partial's transfer learnt: the notes kept in memory when it stopped (its disk full,
        they may be newer than the file), else its notes file."""
        notes = self._kept_notes.pop(partial, None)
        if notes is None or not partial.is_file():
            notes = PartialNotes.load(partial)
        return notes

    async def _fetch_from_sources(
        self, job: HubJob, commit: str, f: RepoFile, blob: Path, partial: Path, progress: ModelProgress
    ) -> DownloadResult:
        """The file into `blob`, from the first source that gives it whole and verified; what one
        source brought stays in the partial for the next (Range), unless it failed the digest."""
        sources = order_sources(job, f)
        for i, peer in enumerate(sources):
            notes = self._notes_for(partial)
            peer_token, attempts = (None, None) if peer is None else (self.peer_token, self.peer_attempts)
            one = file_job(job, commit, f, peer, notes, blob, partial, peer_token, attempts)
            progress.source(f.path, "hub" if peer is None else peer)
            progress.started(f.path)
            last = i == len(sources) - 1
            try:
                result = await self.downloader.run(
                    one, FileProgress(progress, f.path), notes, file=f.path, source=peer or "hub"
                )
            except DownloadError as exc:
                if last or exc.code == ErrorCode.INSUFFICIENT_DISK:
                    if exc.code != ErrorCode.INSUFFICIENT_DISK:
                        progress.discard = True
                        _discard(partial, notes)
                    else:
                        self._kept_notes[partial] = notes
                    raise DownloadError(exc.code, f"{f.path}: {exc.message}") from None
                log.warning(
                    "hub_file_source_failed",
                    download_id=job.download_id,
                    file=f.path,
                    source=peer or "hub",
                    code=exc.code,
                    error=exc.message,
                )
                continue
            except BaseException:
                if progress.discard:
                    _discard(partial, notes)
                else:  # (a sibling's disk filled up, or the hive stops): kept, with what it learnt
                    self._kept_notes[partial] = notes
                raise
            notes.remove()
            return result
        raise AssertionError("no source")  # (the hub is always among them)

    @contextlib.asynccontextmanager
    async def _blob_lock(self, blob: Path) -> AsyncIterator[None]:
        lock, users = self._blob_locks.setdefault(blob, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._blob_locks[blob]


def _discard(partial: Path, notes: PartialNotes) -> None:
    partial.unlink(missing_ok=True)
    notes.remove()


async def _checked_sha(job: HubJob, cache: RepoCache, path: str, digest: str, got: str | None) -> str:
    sha = got if got else digest if len(digest) == 64 else await asyncio.to_thread(sha256_file, cache.blob(digest))
    if job.expected_sha256 is not None and sha != job.expected_sha256:
        raise DownloadError(ErrorCode.CHECKSUM_MISMATCH, f"{path} has sha256 {sha}, not {job.expected_sha256}")
    return sha
