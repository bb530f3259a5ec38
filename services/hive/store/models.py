"""ModelStore: the hive's Hugging Face cache as a model store (README, "The model store").

It answers what is in the cache (the `Inventory`, with each model's pin and last use from `Marks` and
whether a download of it runs), deletes a model or one revision (`removal`), pins, marks models used,
and tells of every change (`ModelEvents`): the hive's own, and what other tools did, noticed when the
inventory looks again. Domain errors carry a `code`; the route turns them into HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import structlog

from services.hive.cache.layout import trash_dir
from services.hive.store.budget import Candidate
from services.hive.store.events import ModelEvents
from services.hive.store.inventory import Change, Inventory
from services.hive.store.marks import Marks
from services.hive.store.removal import empty_trash, remove_repo, remove_revision
from services.hive.store.sizes import RepoScan, revision_size
from shared.models import rfc3339
from shared.wire.models import ModelAction, ModelBody, ModelEventBody, RevisionBody

__all__ = ["ModelBusy", "ModelNotFound", "ModelPinned", "ModelStore", "Running", "StoreError"]

log = structlog.get_logger()

Running = Callable[
    [], Mapping[str, set[str | None]]
]  # repo_id -> the commits its running downloads fill (None: not known yet)


class StoreError(Exception):
    status = 400
    code = "INVALID_REQUEST"


class ModelNotFound(StoreError):
    status, code = 404, "NOT_FOUND"


class ModelBusy(StoreError):
    status, code = 409, "MODEL_IN_USE"


class ModelPinned(StoreError):
    status, code = 409, "MODEL_PINNED"


class DeleteFailed(StoreError):
    status, code = 500, "DELETE_FAILED"


def news(before: RepoScan | None, after: RepoScan | None) -> list[tuple[ModelAction, str | None, int]]:
    """What a change of one model's folder tells: (action, commit, size) for each revision that came or went,
    or the whole model gone."""
    if after is None:
        return [] if before is None else [(ModelAction.DELETED, None, before.size_on_disk)]
    had = {r.commit for r in before.revisions} if before is not None else set()
    now = {r.commit for r in after.revisions}
    told: list[tuple[ModelAction, str | None, int]] = []
    for r in after.revisions:
        if r.commit not in had:
            told.append((ModelAction.ADDED, r.commit, revision_size(r, after.blob_sizes)))
    if before is not None:
        for r in before.revisions:
            if r.commit not in now:
                told.append((ModelAction.DELETED, r.commit, revision_size(r, before.blob_sizes)))
    return told


class ModelStore:
    def __init__(
        self, models_dir: Path, inventory: Inventory, marks: Marks, events: ModelEvents, running: Running
    ) -> None:
        self.models_dir = models_dir
        self.inventory = inventory
        self.marks = marks
        self.events = events
        self.running = running
        self.trash = trash_dir(models_dir)
        self._bodies: dict[str, tuple[RepoScan, tuple[object, ...], ModelBody]] = {}  # repo_id -> what it was made of

    def open(self) -> None:
        """At start, off the event loop: what a killed deletion left goes, then the cache is read once."""
        if removed := empty_trash(self.trash):
            log.info("model_trash_emptied", entries=removed)
        self.marks.load()
        self.inventory.load()

    # -- what is there ---------------------------------------------------------------------

    async def look(self) -> None:
        """Notice now what other tools added or removed, and tell of it; the disk is read on a thread."""
        looked = await asyncio.to_thread(self.inventory.look, *self.inventory.stamps())
        self._tell(self.inventory.apply(looked))

    async def watch_forever(self, interval: float = 1.0) -> None:
        """Notice what other tools change, every `interval` seconds (the hive's lifespan runs this)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.look()
            except OSError as exc:  # (the models dir gone or unreadable a moment: the next look tries again)
                log.warning("model_store_look_failed", error=str(exc))
            except Exception:  # never the end of the watch: what other tools change is still noticed later
                log.exception("model_store_look_failed")

    def models(self) -> list[ModelBody]:
        """Every model, by repo id, from the index (a body is made again only when its model changed)."""
        running = self.running()
        return [self._body(scan, running) for scan in sorted(self.inventory.all(), key=lambda s: s.repo_id)]

    def model(self, repo_id: str) -> ModelBody:
        return self._body(self._scan(repo_id), self.running())

    def candidates(self) -> list[Candidate]:
        """Every model as eviction sees it."""
        running = self.running()
        return [
            Candidate(
                s.repo_id,
                s.size_on_disk,
                u.timestamp() if (u := self.marks.last_used(s.repo_id)) else s.last_modified,
                self.marks.pinned(s.repo_id),
                s.repo_id in running,
            )
            for s in self.inventory.all()
        ]

    def used_bytes(self) -> int:
        return self.inventory.used()

    # -- changes ---------------------------------------------------------------------------

    async def delete(self, repo_id: str, revision: str | None = None, force: bool = False) -> ModelEventBody:
        """Remove the model, or one revision of it (and the blobs only it used)."""
        scan = self._scan(repo_id)
        if repo_id in self.running():
            raise ModelBusy(f"a download of {repo_id} is running on this hive; cancel it first")
        if self.marks.pinned(repo_id) and not force:
            raise ModelPinned(f"{repo_id} is pinned: unpin it, or delete with force=true")
        if revision is not None and scan.revision(revision) is None:
            raise ModelNotFound(f"{repo_id} has no revision {revision[:80]!r} on this hive")
        return await self._remove(scan, revision, ModelAction.DELETED)

    async def evict(self, repo_id: str) -> int:
        """Remove a whole model to make room; the bytes freed. Checked again now, not as it was when
        chosen: a download of it may have begun, or a pin come, since (ModelBusy, ModelPinned)."""
        scan = self._scan(repo_id)
        if repo_id in self.running():
            raise ModelBusy(f"a download of {repo_id} began meanwhile")
        if self.marks.pinned(repo_id):
            raise ModelPinned(f"{repo_id} was pinned meanwhile")
        return (await self._remove(scan, None, ModelAction.EVICTED)).size_on_disk

    def pin(self, repo_id: str, pinned: bool) -> ModelBody:
        scan = self._scan(repo_id)
        if self.marks.pin(repo_id, pinned):
            self.events.emit(ModelAction.PINNED if pinned else ModelAction.UNPINNED, repo_id, None, scan.size_on_disk)
        return self._body(scan, self.running())

    def mark_used(self, repo_id: str) -> None:
        """A download, a join or a serving engine used the model now: its `last_used`, and a log line (not
        a `model` event: those are the five actions of README "Progress events")."""
        self.marks.used(repo_id, datetime.now(UTC))
        log.info("model_used", repo_id=repo_id)

    def use(self, repo_id: str) -> ModelBody:
        """POST …/used: the model must be here."""
        scan = self._scan(repo_id)
        self.mark_used(repo_id)
        return self._body(scan, self.running())

    def written(self, repo_id: str) -> None:
        """The hive put files of the model in place (a download ended): read its folder again, tell what came."""
        self._tell([self.inventory.rescan(repo_id)])

    # -- internals -------------------------------------------------------------------------

    def _scan(self, repo_id: str) -> RepoScan:
        scan = self.inventory.get(repo_id)
        if scan is None:  # (another tool may have put it there since the last look)
            self._tell([self.inventory.rescan(repo_id)])
            scan = self.inventory.get(repo_id)
        if scan is None:
            raise ModelNotFound(f"no model {repo_id!r} in this hive's cache")
        return scan

    async def _remove(self, scan: RepoScan, revision: str | None, action: ModelAction) -> ModelEventBody:
        repo_id, root = scan.repo_id, self.inventory.root(scan.repo_id)
        if self.inventory.is_changing(repo_id):
            raise ModelBusy(f"{repo_id} is being deleted")
        whole = revision is None or len(scan.revisions) == 1
        with self.inventory.changing(repo_id):
            if whole:
                await asyncio.to_thread(remove_repo, root, self.trash)
                self.marks.forget(repo_id)
                self._bodies.pop(repo_id, None)
            else:
                assert revision is not None
                await asyncio.to_thread(remove_revision, root, scan, revision, self.trash)
            _, _, after = self.inventory.rescan(repo_id)
        freed = scan.size_on_disk - (after.size_on_disk if after is not None else 0)
        if after is not None and (whole or after.revision(revision or "") is not None):
            # (permissions, a read-only disk: what could not go is still there; nothing is told as gone)
            self._tell([(repo_id, scan, after)])
            log.error("model_delete_failed", repo_id=repo_id, revision=revision, freed=freed)
            raise DeleteFailed(f"{repo_id} could not be removed from this hive's disk ({freed} bytes freed)")
        commit = None if revision is None else revision
        self.events.emit(action, repo_id, commit, freed)
        return ModelEventBody(
            action=action, repo_id=repo_id, commit=commit, size_on_disk=freed, hive_id=self.events.hive_id
        )

    def _tell(self, changes: list[Change]) -> None:
        for repo_id, before, after in changes:
            for action, commit, size in news(before, after):
                self.events.emit(action, repo_id, commit, size)
            if after is None and before is not None:
                self.marks.forget(repo_id)
                self._bodies.pop(repo_id, None)

    def _body(self, scan: RepoScan, running: Mapping[str, set[str | None]]) -> ModelBody:
        filling = running.get(scan.repo_id)
        marks = (self.marks.pinned(scan.repo_id), self.marks.last_used(scan.repo_id), filling)
        cached = self._bodies.get(scan.repo_id)
        if cached is not None and cached[0] is scan and cached[1] == marks:
            return cached[2]
        body = self._make_body(scan, filling or set())
        self._bodies[scan.repo_id] = (scan, marks, body)
        return body

    def _make_body(self, scan: RepoScan, filling: set[str | None]) -> ModelBody:
        revisions = [
            RevisionBody(
                commit=r.commit,
                refs=list(r.refs),
                files=r.files,
                size_on_disk=revision_size(r, scan.blob_sizes),
                complete=not r.broken and r.commit not in filling,
            )
            for r in scan.revisions
        ]
        return ModelBody(
            repo_id=scan.repo_id,
            size_on_disk=scan.size_on_disk,
            revisions=revisions,
            last_used=rfc3339(self.marks.last_used(scan.repo_id)),
            pinned=self.marks.pinned(scan.repo_id),
            in_use=bool(filling),
        )
