"""Hub downloads into the Hugging Face cache: one file of a repo, or every file of one commit.

For each download (`HubJob`), in order (README, "Whole models"):
1. pin the commit: the revision API for a model, a one-byte read of the file for one file (a
   restarted download keeps the commit it had);
2. list the commit's files (the tree API, every page; kept in `TreeCache`), pick them with
   `include` / `exclude`; a gated repo proves access on one file; the bytes still missing must fit
   on the disk — all before the first byte;
3. fetch the missing files, `files_concurrent` at once, each from `resolve/{commit}/{path}` (one
   file: from the ref's own `resolve/{rev}/{path}`, pinned by the digest the probe saw) into
   its partial under `.rbee/partial/`, verified against the hub's digest (the Downloader), renamed
   to `blobs/{digest}` and linked from `snapshots/{commit}/{path}`; a blob already there (another
   revision's, an earlier pull's) is linked without a byte fetched;
4. write `refs/{rev}` once every file is in place, so huggingface_hub never sees half a snapshot.

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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog

from services.hive.hf_cache import COMMIT_RE, RepoCache
from services.hive.hub_api import HubApi, RepoFile
from services.hive.hub_state import PartialNotes, TreeCache
from services.hive.model_files import FileProgress, ModelProgress
from services.hive.refs import HubRef
from services.hive.selection import select_paths
from services.hive.tracker import DownloadTracker
from services.hive.transfer import Downloader, DownloadError, DownloadJob
from shared.models import DownloadStatus, ErrorCode

__all__ = ["HubFetcher", "HubJob", "HubResult", "Present"]

log = structlog.get_logger()

_REFUSALS = frozenset(
    {
        ErrorCode.GATED_REPO,
        ErrorCode.REPO_NOT_FOUND,
        ErrorCode.REVISION_NOT_FOUND,
        ErrorCode.NOT_FOUND,
        ErrorCode.UNAUTHORIZED,
        ErrorCode.HOST_NOT_ALLOWED,
    }
)
HUB_UNREACHABLE = "the hub could not be asked which commit {rev!r} names now; the files on disk were used as they are"


@dataclass(frozen=True, slots=True)
class HubJob:
    download_id: str
    hub_ref: HubRef
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    commit: str | None = None  # pinned: a restarted download keeps the commit it started on
    token_origin: str | None = None
    expected_sha256: str | None = None  # one file only

    @property
    def whole(self) -> bool:
        return self.hub_ref.file is None


@dataclass(frozen=True, slots=True)
class HubResult:
    path: Path  # the snapshot directory of a model, the snapshot file of one file
    commit: str
    sha256: str | None  # one file only
    files: int


@dataclass(frozen=True, slots=True)
class Present:
    """What a request finds already in the cache, at the commit the ref names now."""

    path: Path
    commit: str
    files: list[RepoFile]
    warning: str | None  # set when the hub could not be asked and the disk was trusted


class HubFetcher:
    def __init__(
        self,
        downloader: Downloader,
        api: HubApi,
        models_dir: Path,
        *,
        files_concurrent: int = 4,
        disk_free: Callable[[Path], int] | None = None,
        check_timeout: float = 5.0,
    ) -> None:
        self.downloader = downloader
        self.api = api
        self.models_dir = models_dir
        self.trees = TreeCache(models_dir)
        self.files_concurrent = files_concurrent
        self.disk_free = disk_free or downloader.disk_free
        self.check_timeout = check_timeout  # the one question a request for something present asks
        self._runs: dict[str, ModelProgress] = {}
        self._blob_locks: dict[Path, tuple[asyncio.Lock, list[int]]] = {}
        # the notes of partials kept when their download stopped (the disk filled up): the last checkpoint
        # (the exact segment plan) could not be written to that full disk, so a later request resumes from these
        self._kept_notes: dict[Path, PartialNotes] = {}

    def cache(self, hub_ref: HubRef) -> RepoCache:
        return RepoCache(self.models_dir, hub_ref.repo_id)

    # -- what a download shows -------------------------------------------------------------

    def files_of(self, download_id: str) -> list[dict[str, object]] | None:
        run = self._runs.get(download_id)
        return run.file_states() if run is not None and run.whole else None

    def discard_on_stop(self, download_id: str) -> None:
        """The download is being cancelled: its partials go as its files stop."""
        if (run := self._runs.get(download_id)) is not None:
            run.discard = True

    def partial_dir(self, hub_ref: HubRef) -> Path:
        return self.cache(hub_ref).partial("0" * 40).parent

    def listed_files(
        self, hub_ref: HubRef, commit: str, include: tuple[str, ...] | None, exclude: tuple[str, ...] | None
    ) -> list[RepoFile] | None:
        """The files a finished model took, from the kept listing (None when it is not kept)."""
        files = self.trees.load(hub_ref.repo_id, commit)
        return None if files is None else _select(files, include, exclude)

    # -- a request for what may be on disk ---------------------------------------------------

    async def present(self, job: HubJob) -> Present | None:
        """The download's files when all are in the cache at the commit the ref names now (one
        question to the hub; none for a commit, whose files never change). None: download it."""
        hub_ref, cache = job.hub_ref, self.cache(job.hub_ref)
        rev = hub_ref.revision
        commit = rev if COMMIT_RE.fullmatch(rev) else cache.read_ref(rev)
        if commit is None:
            return None
        files = self._on_disk(job, cache, commit)
        if files is None:
            return None
        warning = None
        if commit != rev:
            try:
                async with asyncio.timeout(self.check_timeout):
                    if job.whole:
                        now = (await self.api.revision(hub_ref, attempts=1)).commit
                    else:
                        assert hub_ref.file is not None
                        now, _ = await self.api.probe(hub_ref, rev, hub_ref.file, attempts=1)
            except DownloadError as exc:
                if exc.code in _REFUSALS:
                    return None  # the download says why, as it would have without the disk
                warning = HUB_UNREACHABLE.format(rev=rev)
            except TimeoutError:
                warning = HUB_UNREACHABLE.format(rev=rev)
            else:
                if now != commit:
                    return None
        path = cache.snapshot_dir(commit) if job.whole else cache.snapshot_file(commit, files[0].path)
        return Present(path, commit, files, warning)

    def _on_disk(self, job: HubJob, cache: RepoCache, commit: str) -> list[RepoFile] | None:
        if job.whole:
            files = self.listed_files(job.hub_ref, commit, job.include, job.exclude)
        else:
            assert job.hub_ref.file is not None
            files = _linked_file(cache, commit, job.hub_ref.file)
        if not files or not all(cache.has(commit, f.path, f.digest) for f in files):
            return None
        return files

    # -- the download ----------------------------------------------------------------------

    async def run(self, job: HubJob, tracker: DownloadTracker) -> HubResult:
        hub_ref, cache = job.hub_ref, self.cache(job.hub_ref)
        bound = log.bind(download_id=job.download_id, repo_id=hub_ref.repo_id)
        commit, files = await self._plan(job, bound, tracker)
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
                    cache.link(commit, f.path, f.digest)
                    progress.finished(f.path)
                else:
                    missing.append(f)
            self._check_disk(cache, missing)
            bound.info(
                "hub_download_planned", commit=commit, files=len(files), missing=len(missing), total=progress.total
            )
            sha = await self._fetch_all(job, cache, commit, missing, progress)
            if not job.whole and sha is None:
                sha = await _sha256_of(cache, files[0])
            cache.write_ref(hub_ref.revision, commit)
        except asyncio.CancelledError:
            progress.stopped(DownloadStatus.CANCELLED)
            raise
        except DownloadError:
            progress.stopped(DownloadStatus.FAILED)
            raise
        finally:
            if self._runs.get(job.download_id) is progress:
                del self._runs[job.download_id]
        return HubResult(path, commit, sha, len(files))

    async def _plan(
        self, job: HubJob, bound: structlog.typing.FilteringBoundLogger, tracker: DownloadTracker
    ) -> tuple[str, list[RepoFile]]:
        """The commit and the files of the download, all checked before any byte moves (a wait for
        the hub's rate-limit window shows in the download's state, as a transfer's does)."""
        hub_ref = job.hub_ref

        def waiting(until: datetime | None, reason: str | None) -> None:
            tracker.set_waiting(job.download_id, until, reason)

        if not job.whole:
            assert hub_ref.file is not None
            commit, file = await self.api.probe(hub_ref, job.commit or hub_ref.revision, hub_ref.file, waiting=waiting)
            if job.commit is not None and commit != job.commit:
                raise DownloadError(ErrorCode.DOWNLOAD_FAILED, f"the hub answered commit {commit} for {job.commit}")
            return commit, [file]
        gated = False
        commit = job.commit
        if commit is None:
            revision = await self.api.revision(hub_ref, waiting=waiting)
            commit, gated = revision.commit, revision.gated
        listing = self.trees.load(hub_ref.repo_id, commit)
        if listing is None:
            listing = await self.api.tree(hub_ref, commit, waiting=waiting)
            self.trees.save(hub_ref.repo_id, commit, listing)
        files = _select(listing, job.include, job.exclude)
        if not files:
            raise DownloadError(
                ErrorCode.NOT_FOUND,
                f"no file of {hub_ref.repo_id} at {commit[:12]} matches include {list(job.include or ['*'])}"
                f" and exclude {list(job.exclude or [])} ({len(listing)} files in the commit)",
            )
        if gated:  # metadata of a gated repo is public: access shows on a file
            await self.api.probe(hub_ref, commit, files[0].path, waiting=waiting)
        bound.info("hub_commit_pinned", commit=commit, listed=len(listing), selected=len(files))
        return commit, files

    def _check_disk(self, cache: RepoCache, missing: list[RepoFile]) -> None:
        needed = 0
        for f in missing:
            try:
                have = cache.partial(f.digest).stat().st_size
            except OSError:
                have = 0
            needed += max(0, f.size - have)
        if not needed:
            return
        where = self.models_dir
        free = self.disk_free(where)
        if needed > free:
            raise DownloadError(
                ErrorCode.INSUFFICIENT_DISK,
                f"the download needs {needed} more bytes but only {free} are free under {where}",
            )

    async def _fetch_all(
        self, job: HubJob, cache: RepoCache, commit: str, missing: list[RepoFile], progress: ModelProgress
    ) -> str | None:
        """Fetch the files, largest first, `files_concurrent` at once; the first failure stops the rest."""
        if not missing:
            return None
        gate = asyncio.Semaphore(self.files_concurrent)
        ordered = sorted(missing, key=lambda f: -f.size)
        tasks = [
            asyncio.create_task(self._fetch_one(job, cache, commit, f, progress, gate), name=f"{job.download_id}:{i}")
            for i, f in enumerate(ordered)
        ]
        failed: list[asyncio.Task[str | None]] = []
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t for t in done if not t.cancelled() and t.exception() is not None]
            if failed:
                exc = failed[0].exception()
                if isinstance(exc, DownloadError) and exc.code != ErrorCode.INSUFFICIENT_DISK:
                    progress.discard = True
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # every file stopped, its partial closed
        if failed:
            raise failed[0].exception()  # type: ignore[misc]
        shas = [t.result() for t in tasks]
        return shas[0] if len(shas) == 1 else None

    async def _fetch_one(
        self,
        job: HubJob,
        cache: RepoCache,
        commit: str,
        f: RepoFile,
        progress: ModelProgress,
        gate: asyncio.Semaphore,
    ) -> str | None:
        """One file into its blob and the snapshot; its sha256 when it was fetched. A file the hub gave
        no digest for (a server that is no real hub) is named by the sha256 its bytes have."""
        # the partial's name: the digest, else one made from commit and path
        name = f.digest or hashlib.sha1(f"{commit}/{f.path}".encode(), usedforsecurity=False).hexdigest()
        partial = cache.partial(name)
        blob = cache.blob(f.digest) if f.digest else partial.with_name(f"{name}.fetched")
        digest, sha = f.digest, None
        async with gate, self._blob_lock(partial):
            if not blob.is_file() or not f.digest:  # (another download may have put it in place meanwhile)
                notes = self._kept_notes.pop(partial, None)
                if notes is None or not partial.is_file():
                    notes = PartialNotes.load(partial)
                file_job = DownloadJob(
                    job.download_id,
                    # a model's files at its commit; one file at the ref's revision, pinned by its digest
                    job.hub_ref.resolve_url(commit if job.whole else job.hub_ref.revision, f.path),
                    blob,
                    job.expected_sha256,
                    job.token_origin,
                    validator=notes.validator,
                    total=notes.total,
                    segments=notes.segments,
                    hub_digest=f.digest or None,
                    partial=partial,
                )
                try:
                    result = await self.downloader.run(file_job, FileProgress(progress, f.path), notes, file=f.path)
                except DownloadError as exc:
                    if exc.code != ErrorCode.INSUFFICIENT_DISK:
                        progress.discard = True
                        _discard(partial, notes)
                    else:
                        self._kept_notes[partial] = notes
                    raise DownloadError(exc.code, f"{f.path}: {exc.message}") from None
                except BaseException:
                    if progress.discard:
                        _discard(partial, notes)
                    else:  # (a sibling's disk filled up, or the hive stops): kept, with what it learnt
                        self._kept_notes[partial] = notes
                    raise
                notes.remove()
                sha = result.sha256
                if not f.digest:
                    digest = sha
                    cache.blob(digest).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(blob, cache.blob(digest))
        cache.link(commit, f.path, digest)
        progress.finished(f.path)
        return sha

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


def _select(files: list[RepoFile], include: tuple[str, ...] | None, exclude: tuple[str, ...] | None) -> list[RepoFile]:
    by_path = {f.path: f for f in files}
    return [by_path[p] for p in select_paths(by_path, include, exclude)]


def _linked_file(cache: RepoCache, commit: str, path: str) -> list[RepoFile] | None:
    """The snapshot's link for `path` as a RepoFile (its blob's name is the digest), if it is there."""
    link = cache.snapshot_file(commit, path)
    try:
        digest = os.path.basename(os.readlink(link))
        size = link.stat().st_size
    except (OSError, ValueError):
        return None
    return [RepoFile(path, size, digest)]


def _discard(partial: Path, notes: PartialNotes) -> None:
    partial.unlink(missing_ok=True)
    notes.remove()


async def _sha256_of(cache: RepoCache, f: RepoFile) -> str:
    if len(f.digest) == 64:
        return f.digest  # an LFS file's blob is named by its verified sha256
    return await asyncio.to_thread(_sha256_file, cache.blob(f.digest))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(8 * 1024 * 1024):
            h.update(block)
    return h.hexdigest()
