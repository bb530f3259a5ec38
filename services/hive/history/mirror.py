"""The history mirror: one DownloadRecord per download, kept in step with the tracker and the store.

Every tracker event is mirrored into its record and queued for the HistoryStore (at once on a
status change, batched otherwise); the transfers' checkpoints (validator, total, segment plan)
land here too, so a restarted hive can resume. `restore` rebuilds the tracker from the records
after a start, `prune` forgets old finished entries, `remove_orphans` deletes partials no record
wants. A failed download whose disk filled up keeps its partial for a later request to carry on
(`kept_partial`); forgetting it deletes that partial unless the destination is in use again.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.hive.cache.layout import hub_dir, partials_dir
from services.hive.disk.partfile import part_path
from services.hive.history.store import DownloadRecord, HistoryStore
from services.hive.refs import PART_SUFFIX
from services.hive.tracker.tracker import DownloadTracker, InvalidTransition, UnknownDownload
from shared.models import DownloadState, DownloadStatus, ErrorCode, ProgressEvent, rfc3339

__all__ = ["EVENT_ID_GAP", "History"]

# After a restart, ids jump past anything emitted but not yet checkpointed.
EVENT_ID_GAP = 1000


class History:
    def __init__(
        self,
        tracker: DownloadTracker,
        store: HistoryStore | None,
        ttl: float = 7 * 86400,
        max_entries: int = 1000,
    ) -> None:
        self.tracker = tracker
        self.store = store
        self.ttl = ttl
        self.max_entries = max_entries
        self._records: dict[str, DownloadRecord] = {}
        self._seq = 0
        tracker.add_listener(self._record_event)

    # -- records -----------------------------------------------------------------------------

    def new_record(
        self,
        download_id: str,
        model_ref: str,
        url: str,
        dest: Path,
        expected: str | None,
        token_origin: str | None,
        max_bps: int | None,
        *,
        include: tuple[str, ...] | None = None,
        exclude: tuple[str, ...] | None = None,
        pull_id: str | None = None,
        sources: str | None = None,
    ) -> None:
        self._seq += 1
        now = rfc3339(datetime.now(UTC))
        assert now is not None
        self._records[download_id] = DownloadRecord(
            download_id=download_id,
            seq=self._seq,
            model_ref=model_ref,
            url=url,
            dest=str(dest),
            status=DownloadStatus.QUEUED.value,
            started_at=now,
            expected_sha256=expected,
            max_bps=max_bps,
            token_origin=token_origin,
            include=None if include is None else json.dumps(list(include)),
            exclude=None if exclude is None else json.dumps(list(exclude)),
            pull_id=pull_id,
            sources=sources,
        )

    def record(self, download_id: str) -> DownloadRecord | None:
        return self._records.get(download_id)

    def patterns(self, download_id: str) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
        """A whole model's include and exclude globs, as its request gave them."""
        rec = self._records.get(download_id)
        if rec is None:
            return None, None
        return _patterns(rec.include), _patterns(rec.exclude)

    def _record_event(self, state: DownloadState, event: ProgressEvent) -> None:
        """Tracker listener: mirror the state into the history record (batched writes)."""
        rec = self._records.get(state.download_id)
        if rec is None or self.store is None:
            return
        status_changed = rec.status != state.status.value
        rec.status = state.status.value
        rec.bytes_downloaded = state.bytes_downloaded
        rec.total_bytes = state.total_bytes
        rec.started_at = rfc3339(state.started_at) or rec.started_at
        rec.completed_at = rfc3339(state.completed_at)
        rec.error, rec.error_code, rec.sha256 = state.error, state.error_code, state.sha256
        rec.commit = state.commit
        rec.files_total, rec.files_done, rec.warning = state.files_total, state.files_done, state.warning
        if state.path:  # a hub download's path is known once its commit is
            rec.dest = state.path
        rec.last_event_id = event.id
        self.store.put(rec, urgent=status_changed)

    def kept_partial(self, url: str, dest: Path) -> DownloadRecord | None:
        """The newest failed record whose partial of this same URL was kept for a resume."""
        if not part_path(dest).is_file():
            return None
        kept = [r for r in self._records.values() if _kept_for_resume(r) and r.url == url and Path(r.dest) == dest]
        return max(kept, key=lambda r: r.seq, default=None)

    # -- checkpoints (the downloader's Checkpoints) -------------------------------------------

    def checkpoint(self, download_id: str, validator: str | None, total: int | None, digest: str | None) -> None:
        rec = self._records.get(download_id)
        if rec is None or self.store is None:
            return
        if (rec.validator, rec.total_bytes, rec.hub_digest) != (validator, total, digest):
            rec.validator, rec.total_bytes, rec.hub_digest = validator, total, digest
            self.store.put(rec, urgent=True)

    def checkpoint_segments(self, download_id: str, plan_json: str) -> None:
        rec = self._records.get(download_id)
        if rec is not None and self.store is not None:
            rec.segments = plan_json
            self.store.put(rec)

    async def persist_segments(self, download_id: str, plan_json: str) -> None:
        """The first plan of a segmented transfer, in the database before the partial grows holes."""
        rec = self._records.get(download_id)
        if rec is not None and self.store is not None:
            rec.segments = plan_json
            self.store.put(rec, urgent=True)
            await self.store.sync()

    # -- recovery and pruning ------------------------------------------------------------------

    def restore(self, records: list[DownloadRecord]) -> list[DownloadRecord]:
        """Rebuild the tracker from history: finished downloads listed, the unfinished ones
        queued again and returned (in arrival order) for the caller to resume."""
        unfinished = []
        for rec in records:
            self._seq = max(self._seq, rec.seq)
            self._records[rec.download_id] = rec
            state = _state_of(rec)
            if state.status.is_terminal:
                self.tracker.restore(state, rec.last_event_id + 1)
                continue
            state.status, state.speed_bps, state.eta_secs = DownloadStatus.QUEUED, 0, None
            rec.status = DownloadStatus.QUEUED.value
            self.tracker.restore(state, rec.last_event_id + EVENT_ID_GAP)
            unfinished.append(rec)
        return unfinished

    def remove_orphans(self, models_dir: Path, running: Collection[str], keep_under: Collection[Path] = ()) -> int:
        """Delete partials under `models_dir` that neither a running download nor a kept one wants
        (`keep_under`: folders of partials that running hub downloads own)."""
        wanted = {
            part_path(Path(r.dest)) for r in self._records.values() if r.download_id in running or _kept_for_resume(r)
        }
        removed = 0
        hub, hub_partials = hub_dir(models_dir), partials_dir(models_dir)
        for partial in models_dir.rglob(f"*{PART_SUFFIX}"):
            if partial.parent in keep_under or partial.is_relative_to(hub) or partial.is_symlink():
                continue  # (a repo's own files may end in .part: the hub cache is not ours to sweep)
            if partial.is_relative_to(hub_partials) and partial.with_suffix(".json").is_file():
                continue  # a hub blob's partial with its notes: a later request for the model resumes it
            if partial.is_file() and partial not in wanted:
                partial.unlink(missing_ok=True)
                removed += 1
        for notes in hub_partials.glob("*/*.json"):  # notes whose partial is gone
            if not notes.with_suffix(PART_SUFFIX).exists():
                notes.unlink(missing_ok=True)
        return removed

    def over_capacity(self, active: int) -> bool:
        """More finished records (all but the `active` ones) than `max_entries` by a margin: prune
        (it is O(records), so it runs at most once per tenth of `max_entries` finished downloads)."""
        return len(self._records) - active > self.max_entries + max(16, self.max_entries // 10)

    def prune(self, busy: Collection[object], now: datetime | None = None) -> int:
        """Forget finished entries older than the TTL and beyond the newest `max_entries`."""
        now = now or datetime.now(UTC)
        finished = [s for s in self.tracker.list_all() if s.status.is_terminal]  # newest first
        cutoff = now - timedelta(seconds=self.ttl)
        doomed = [
            s.download_id
            for i, s in enumerate(finished)
            if i >= self.max_entries or (s.completed_at or s.started_at) < cutoff
        ]
        self.drop(doomed, busy)
        return len(doomed)

    def drop(self, download_ids: list[str], busy: Collection[object]) -> None:
        """Forget downloads; a kept partial goes too unless its destination is `busy` again."""
        for download_id in download_ids:
            try:
                self.tracker.forget(download_id)
            except (UnknownDownload, InvalidTransition):
                continue
            rec = self._records.pop(download_id, None)
            if rec is not None and _kept_for_resume(rec) and Path(rec.dest) not in busy:
                part_path(Path(rec.dest)).unlink(missing_ok=True)
        if self.store is not None and download_ids:
            self.store.delete(download_ids)


def _kept_for_resume(rec: DownloadRecord) -> bool:
    """A failed download whose partial is kept: the disk filled up, a later request carries on."""
    return (
        rec.status == DownloadStatus.FAILED.value
        and rec.error_code == ErrorCode.INSUFFICIENT_DISK
        and bool(rec.validator)
    )


def _state_of(rec: DownloadRecord) -> DownloadState:
    return DownloadState(
        download_id=rec.download_id,
        model_ref=rec.model_ref,
        status=DownloadStatus(rec.status),
        bytes_downloaded=rec.bytes_downloaded,
        total_bytes=rec.total_bytes,
        started_at=rec.started,
        completed_at=rec.completed,
        error=rec.error,
        error_code=rec.error_code,
        path=rec.dest,
        sha256=rec.sha256,
        commit=rec.commit,
        files_total=rec.files_total,
        files_done=rec.files_done,
        warning=rec.warning,
        pull_id=rec.pull_id,
    )


def _patterns(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return tuple(str(v) for v in value) if isinstance(value, list) else None
