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
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import structlog

from services.hive.cache.notes import PartialNotes, TreeCache
from services.hive.cache.repo import COMMIT_RE, RepoCache
from services.hive.disk.fileio import sha256_file
from services.hive.hub.api import HubApi, RepoFile
from services.hive.hub.progress import FileProgress, ModelProgress
from services.hive.hub.selection import select_paths
from services.hive.refs import HubRef
from services.hive.tracker.tracker import DownloadTracker
from services.hive.transfer import Downloader, DownloadError, DownloadJob, DownloadResult
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
_ENDED_KEPT = 256  # ended models whose files (with their sources) GET shows from memory; older: from disk
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
    # a fleet pull: peer hives (base URLs) that have or are getting a blob, by digest, and the blobs
    # this hive fetches from the hub at once; any other blob comes from its peers first
    sources: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    hub_first: frozenset[str] = frozenset()
    pull_id: str | None = None

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
class PlanReport:
    """What a download of a model would take on this hive (`POST /v2/plans`): the commit and files,
    what is still missing and whether it fits, and whether the hub lets this hive read the repo."""

    commit: str
    files: list[RepoFile]
    needed_bytes: int  # the bytes not yet in the cache or a partial
    present: frozenset[str]  # digests whose blobs are in the cache
    free_bytes: int
    refused: DownloadError | None  # the hub's refusal of this hive's token (a gated repo), if any


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
        peer_token: str | None = None,
        peer_attempts: int = 2,
    ) -> None:
        self.downloader = downloader
        self.api = api
        self.models_dir = models_dir
        self.trees = TreeCache(models_dir)
        self.files_concurrent = files_concurrent
        self.disk_free = disk_free or downloader.disk_free
        self.check_timeout = check_timeout  # the one question a request for something present asks
        self.peer_token = peer_token  # RBEE_API_TOKEN: peers' blob routes are behind it too
        self.peer_attempts = peer_attempts  # failed attempts on a peer before the next source
        self._runs: dict[str, ModelProgress] = {}
        self._ended: OrderedDict[str, list[dict[str, object]]] = OrderedDict()  # the last files of ended models
        self._blob_locks: dict[Path, tuple[asyncio.Lock, list[int]]] = {}
        # the notes of partials kept when their download stopped (the disk filled up): the last checkpoint
        # (the exact segment plan) could not be written to that full disk, so a later request resumes from these
        self._kept_notes: dict[Path, PartialNotes] = {}

    def cache(self, hub_ref: HubRef) -> RepoCache:
        return RepoCache(self.models_dir, hub_ref.repo_id)

    # -- what a download shows -------------------------------------------------------------

    def files_of(self, download_id: str) -> list[dict[str, object]] | None:
        run = self._runs.get(download_id)
        if run is not None and run.whole:
            return run.file_states()
        return self._ended.get(download_id)

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
        pinned = job.commit or (rev if COMMIT_RE.fullmatch(rev) else None)
        commit = pinned or cache.read_ref(rev)
        if commit is None:
            return None
        files = self._on_disk(job, cache, commit)
        if files is None:
            return None
        warning = None
        if pinned is None:
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

    async def report(self, job: HubJob) -> PlanReport:
        """The plan of `job` on this hive, nothing fetched: commit and files (the revision and tree
        APIs, or the pinned commit's kept listing), the bytes still missing against the free disk,
        and, for a gated repo, whether this hive's token may read it. Raises DownloadError when the
        hub refuses the repo or revision outright."""
        hub_ref, cache = job.hub_ref, self.cache(job.hub_ref)
        bound = log.bind(download_id=job.download_id, repo_id=hub_ref.repo_id)
        refused = None
        try:
            commit, files = await self._plan(job, bound, check_access=True)
        except DownloadError as exc:
            if exc.code != ErrorCode.GATED_REPO:
                raise
            refused = exc  # (the metadata is public: the commit and files are known all the same)
            commit = job.commit or (await self.api.revision(hub_ref)).commit
            files = self.listed_files(hub_ref, commit, job.include, job.exclude) or []
        missing = [f for f in files if not (f.digest and cache.blob(f.digest).is_file())]
        present = frozenset(f.digest for f in files if f not in missing)
        free = self.disk_free(self.models_dir)
        return PlanReport(commit, files, self._needed(cache, missing), present, free, refused)

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
                    progress.finished(f.path)
                else:
                    missing.append(f)
            self._check_disk(cache, missing)
            bound.info(
                "hub_download_planned", commit=commit, files=len(files), missing=len(missing), total=progress.total
            )
            fetched = await self._fetch_all(job, cache, commit, missing, progress)
            # the snapshot is linked once every blob is in place, then the ref: huggingface_hub never
            # finds a snapshot of this download with a file missing
            digests = {f.path: f.digest for f in files} | {path: digest for path, (digest, _) in fetched.items()}
            for f in files:
                cache.link(commit, f.path, digests[f.path])
            sha = fetched[files[0].path][1] if not job.whole and files[0].path in fetched else None
            if not job.whole and sha is None:
                sha = await _sha256_of(cache, RepoFile(files[0].path, files[0].size, digests[files[0].path]))
            cache.write_ref(hub_ref.revision, commit)
        except asyncio.CancelledError:
            progress.stopped(DownloadStatus.CANCELLED)
            raise
        except BaseException:
            progress.stopped(DownloadStatus.FAILED)
            raise
        finally:
            if self._runs.get(job.download_id) is progress:
                del self._runs[job.download_id]
            if job.whole:
                self._ended[job.download_id] = progress.file_states()
                while len(self._ended) > _ENDED_KEPT:
                    self._ended.popitem(last=False)
        return HubResult(path, commit, sha, len(files))

    async def _plan(
        self,
        job: HubJob,
        bound: structlog.typing.FilteringBoundLogger,
        tracker: DownloadTracker | None = None,
        check_access: bool = False,
    ) -> tuple[str, list[RepoFile]]:
        """The commit and the files of the download, all checked before any byte moves (a wait for
        the hub's rate-limit window shows in the download's state, as a transfer's does)."""
        hub_ref = job.hub_ref

        def waiting(until: datetime | None, reason: str | None) -> None:
            if tracker is not None:
                tracker.set_waiting(job.download_id, until, reason)

        if not job.whole:
            assert hub_ref.file is not None
            commit, file = await self.api.probe(hub_ref, job.commit or hub_ref.revision, hub_ref.file, waiting=waiting)
            if job.commit is not None and commit != job.commit:
                raise DownloadError(ErrorCode.DOWNLOAD_FAILED, f"the hub answered commit {commit} for {job.commit}")
            return commit, [file]
        gated = False
        if job.commit is None or check_access:
            revision = await self.api.revision(hub_ref, waiting=waiting)
            commit, gated = job.commit or revision.commit, revision.gated
        else:
            commit = job.commit
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

    def _needed(self, cache: RepoCache, missing: list[RepoFile]) -> int:
        """The bytes `missing` still take on disk, less what their partials hold."""
        needed = 0
        for f in missing:
            try:
                st = cache.partial(f.digest).stat() if f.digest else None
            except OSError:
                st = None
            # what the partial really holds: a segmented one is as long as the file but sparse
            have = 0 if st is None else min(st.st_size, st.st_blocks * 512)
            needed += max(0, f.size - have)
        return needed

    def _check_disk(self, cache: RepoCache, missing: list[RepoFile]) -> None:
        needed = self._needed(cache, missing)
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
    ) -> dict[str, tuple[str, str | None]]:
        """Fetch the files into their blobs, `files_concurrent` at once (the blobs this hive seeds for a
        fleet first, then the largest); the first failure stops the rest. path -> (digest, sha256 if
        fetched here)."""
        if not missing:
            return {}
        gate = asyncio.Semaphore(self.files_concurrent)
        ordered = sorted(missing, key=lambda f: (f.digest not in job.hub_first, -f.size))
        tasks = [
            asyncio.create_task(self._fetch_one(job, cache, commit, f, progress, gate), name=f"{job.download_id}:{i}")
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
        gate: asyncio.Semaphore,
    ) -> tuple[str, str | None]:
        """One file into its blob: (its digest, its sha256 when it was fetched here). A file the hub
        gave no digest for (a server that is no real hub) is named by the sha256 its bytes have."""
        # the partial's name: the digest, else one made from commit and path
        name = f.digest or hashlib.sha1(f"{commit}/{f.path}".encode(), usedforsecurity=False).hexdigest()
        partial = cache.partial(name)
        blob = cache.blob(f.digest) if f.digest else partial.with_name(f"{name}.fetched")
        digest: str = f.digest
        sha: str | None = None
        async with gate, self._blob_lock(partial):
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

    def _sources(self, job: HubJob, f: RepoFile) -> list[str | None]:
        """Where the file is fetched from, in order: peers (base URLs) and the hub (None). A blob this
        hive fetches from the hub at once (`hub_first`) goes there first; any other one comes from the
        peers that have or are getting it, and from the hub only when none of them could give it."""
        peers: list[str | None] = list(job.sources.get(f.digest, ())) if f.digest else []
        return [None, *peers] if f.digest in job.hub_first or not peers else [*peers, None]

    async def _fetch_from_sources(
        self, job: HubJob, commit: str, f: RepoFile, blob: Path, partial: Path, progress: ModelProgress
    ) -> DownloadResult:
        """The file into `blob`, from the first source that gives it whole and verified; what one
        source brought stays in the partial for the next (Range), unless it failed the digest."""
        sources = self._sources(job, f)
        for i, peer in enumerate(sources):
            notes = self._notes_for(partial)
            if peer is None:
                url = job.hub_ref.resolve_url(commit, f.path)  # at the commit: never a moved branch's bytes
                token_origin, peer_token, attempts = job.token_origin, None, None
            else:
                url = f"{peer.rstrip('/')}/v2/blobs/{f.digest}"
                token_origin, peer_token, attempts = None, self.peer_token, self.peer_attempts
            file_job = DownloadJob(
                job.download_id,
                url,
                blob,
                job.expected_sha256,
                token_origin,
                validator=notes.validator if peer is None else None,
                total=notes.total if notes.total is not None else f.size or None,
                segments=notes.segments,
                hub_digest=f.digest or None,
                partial=partial,
                pinned=bool(f.digest),
                peer_token=peer_token,
                max_attempts=attempts,
                may_split=not (job.sources or job.hub_first),  # (a fleet pull's part: one connection a file)
            )
            progress.source(f.path, "hub" if peer is None else peer)
            progress.started(f.path)
            last = i == len(sources) - 1
            try:
                result = await self.downloader.run(
                    file_job, FileProgress(progress, f.path), notes, file=f.path, source=peer or "hub"
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
    return await asyncio.to_thread(sha256_file, cache.blob(f.digest))
