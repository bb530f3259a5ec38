"""The planner of a hub download: what it takes, all known before any byte moves (README, "Whole models").

- `present`: a request's files when every one is in the cache at the commit the ref names now (one
  question to the hub, none for a commit);
- `plan`: the commit (the revision API for a model, a one-byte probe for one file; a restarted
  download keeps the commit it had) and the files (the tree API, every page, kept in `TreeCache`,
  picked with `include` / `exclude`); a gated repo proves access on one file;
- `make_room` / `check_disk`: the bytes still missing, less what their partials hold, must fit on the
  disk (with the model store's budget: room is made for them by evicting models, `store/room.py`);
- `report`: all of that for `POST /v2/plans`, nothing fetched.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import structlog

from services.hive.cache.repo import COMMIT_RE, RepoCache
from services.hive.hub.api import HubApi, RepoFile
from services.hive.hub.jobs import HubJob, PlanReport, Present
from services.hive.hub.selection import select_paths
from services.hive.hub.trees import TreeCache
from services.hive.net.errors import DownloadError
from services.hive.net.retry import Waiting
from services.hive.refs import HubRef
from services.hive.store.room import DiskRoom
from services.hive.tracker.tracker import DownloadTracker
from shared.models import DownloadStatus, ErrorCode

__all__ = ["HUB_UNREACHABLE", "HubPlanner"]

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


class HubPlanner:
    """Plans hub downloads on this hive's cache; asks the hub through `api`, keeps listings in `trees`."""

    def __init__(
        self,
        api: HubApi,
        models_dir: Path,
        trees: TreeCache,
        disk_free: Callable[[Path], int],
        *,
        check_timeout: float = 5.0,
        room: DiskRoom | None = None,
    ) -> None:
        """`room`: the model store's disk budget (none: what is missing must fit in the free disk)."""
        self.api = api
        self.room = room
        self.models_dir = models_dir
        self.trees = trees
        self.disk_free = disk_free
        self.check_timeout = check_timeout  # the one question a request for something present asks

    def cache(self, hub_ref: HubRef) -> RepoCache:
        return RepoCache(self.models_dir, hub_ref.repo_id)

    def partial_dir(self, hub_ref: HubRef) -> Path:
        return self.cache(hub_ref).partial("0" * 40).parent

    def listed_files(
        self, hub_ref: HubRef, commit: str, include: tuple[str, ...] | None, exclude: tuple[str, ...] | None
    ) -> list[RepoFile] | None:
        """The files a finished model took, from the kept listing (None when it is not kept)."""
        files = self.trees.load(hub_ref.repo_id, commit)
        return None if files is None else _select(files, include, exclude)

    def file_states(
        self,
        hub_ref: HubRef,
        commit: str,
        include: tuple[str, ...] | None,
        exclude: tuple[str, ...] | None,
        other: DownloadStatus,
    ) -> list[dict[str, object]] | None:
        """A model's files as the cache holds them now: each complete, or `other` (the download's
        status when it ended, else queued). None when the commit's listing is not kept."""
        listed = self.listed_files(hub_ref, commit, include, exclude)
        if listed is None:
            return None
        cache = self.cache(hub_ref)
        states: list[dict[str, object]] = []
        for f in listed:
            there = cache.has(commit, f.path, f.digest)
            status = DownloadStatus.COMPLETE if there else other
            states.append({"path": f.path, "size": f.size, "bytes": f.size if there else 0, "status": status.value})
        return states

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
            commit, files = await self.plan(job, bound, check_access=True)
        except DownloadError as exc:
            if exc.code != ErrorCode.GATED_REPO:
                raise
            refused = exc  # (the metadata is public: the commit and files are known all the same, digests masked)
            commit = job.commit or (await self.api.revision(hub_ref)).commit
            files = _select(await self._listing(hub_ref, commit), job.include, job.exclude)
        missing = [f for f in files if not (f.digest and cache.blob(f.digest).is_file())]
        present = frozenset(f.digest for f in files if f not in missing)
        free = self.disk_free(self.models_dir) if self.room is None else self.room.room_for(hub_ref.repo_id)
        return PlanReport(commit, files, self.needed(cache, missing), present, free, refused)

    async def plan(
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
        listing = await self._listing(hub_ref, commit, waiting)
        files = _select(listing, job.include, job.exclude)
        if not files:
            raise DownloadError(
                ErrorCode.NOT_FOUND,
                f"no file of {hub_ref.repo_id} at {commit[:12]} matches include {list(job.include or ['*'])}"
                f" and exclude {list(job.exclude or [])} ({len(listing)} files in the commit)",
            )
        masked = [f.path for f in files if not f.digest]
        if gated or masked:  # metadata of a gated repo is public (its digests masked): access shows on a file
            await self.api.probe(hub_ref, commit, files[0].path, waiting=waiting)
        if masked:
            said = f"the hub's tree masks the digest of {masked[0]!r}, yet lets this hive read it"
            raise DownloadError(ErrorCode.DOWNLOAD_FAILED, said)
        bound.info("hub_commit_pinned", commit=commit, listed=len(listing), selected=len(files))
        return commit, files

    async def _listing(self, hub_ref: HubRef, commit: str, waiting: Waiting | None = None) -> list[RepoFile]:
        """The commit's files, kept in `trees` once asked; a listing with masked digests is never kept."""
        listing = self.trees.load(hub_ref.repo_id, commit)
        if listing is None:
            listing = await self.api.tree(hub_ref, commit, waiting=waiting)
            if all(f.digest for f in listing):
                self.trees.save(hub_ref.repo_id, commit, listing)
        return listing

    def needed(self, cache: RepoCache, missing: list[RepoFile]) -> int:
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

    async def make_room(self, download_id: str, cache: RepoCache, missing: list[RepoFile]) -> None:
        """Before the first byte: room for what is missing, made by the model store's budget (evicting
        models it may) and reserved till `release`; without one, `check_disk`."""
        if self.room is None:
            self.check_disk(cache, missing)
        else:
            await self.room.make_room(download_id, cache.repo_id, self.needed(cache, missing))

    def release(self, download_id: str) -> None:
        """The download has ended: what it reserved is free for others."""
        if self.room is not None:
            self.room.release(download_id)

    def check_disk(self, cache: RepoCache, missing: list[RepoFile]) -> None:
        needed = self.needed(cache, missing)
        if not needed:
            return
        where = self.models_dir
        free = self.disk_free(where)
        if needed > free:
            raise DownloadError(
                ErrorCode.INSUFFICIENT_DISK,
                f"the download needs {needed} more bytes but only {free} are free under {where}",
            )


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
