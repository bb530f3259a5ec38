"""The history mirror (history/mirror.py) with a real DownloadTracker and a HistoryStore on a
SQLite file: records follow the tracker's events into the store, checkpoints land in them, a
restart restores the tracker from them, pruning forgets old finished downloads, and stray partials
no download wants are swept."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from services.hive.disk.partfile import part_path
from services.hive.history.mirror import EVENT_ID_GAP, History
from services.hive.history.store import COLUMNS, DownloadRecord, HistoryStore
from services.hive.tracker.tracker import DownloadTracker, StreamDecision
from shared.models import DownloadStatus, ErrorCode
from tests.hive.history.support import record, reopen

S = DownloadStatus
URL = "http://files.test/org/a.bin"
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


@dataclass
class Hive:
    tracker: DownloadTracker
    history: History
    store: HistoryStore
    records: list[DownloadRecord]  # what the store held when it opened


@asynccontextmanager
async def mirrored(db: Path, flush_interval: float, ttl: float, max_entries: int) -> AsyncIterator[Hive]:
    """A tracker (an event for every byte update) mirrored into a store on `db`; closed at the end."""
    store = HistoryStore(db, flush_interval=flush_interval)
    records = await store.open()
    tracker = DownloadTracker(progress_interval=0.0)
    try:
        yield Hive(tracker, History(tracker, store, ttl=ttl, max_entries=max_entries), store, records)
    finally:
        await store.close()


def run(
    db: Path,
    scenario: Callable[[Hive], Awaitable[None]],
    flush_interval: float = 0.5,
    ttl: float = 86400.0,
    max_entries: int = 1000,
) -> None:
    """`scenario` on a hive's tracker and history over the store on `db`, which is closed after it."""

    async def go() -> None:
        async with mirrored(db, flush_interval, ttl, max_entries) as hive:
            await scenario(hive)

    asyncio.run(go())


def stored(db: Path, download_id: str) -> DownloadRecord:
    """The record as the database holds it once the store is closed."""
    (rec,) = [r for r in reopen(db) if r.download_id == download_id]
    return rec


def stored_now(db: Path, download_id: str) -> DownloadRecord:
    """The record as the database holds it now, read by another connection (the store stays open)."""
    with sqlite3.connect(db) as conn:
        names = ", ".join(f'"{c}"' for c in COLUMNS)
        row = conn.execute(f"SELECT {names} FROM downloads WHERE download_id = ?", (download_id,)).fetchone()
    assert row is not None, f"{download_id} is not in the database"
    return DownloadRecord(**dict(zip(COLUMNS, row, strict=True)))


def finished(download_id: str, seq: int, status: S = S.COMPLETE, **fields: object) -> DownloadRecord:
    return record(download_id, seq, status=status.value, last_event_id=5, **fields)


def test_a_new_download_is_persisted_and_its_events_follow_it_into_the_store(tmp_path: Path) -> None:
    db, dest = tmp_path / "hive.db", tmp_path / "models" / "a.bin"
    seen: dict[str, DownloadRecord] = {}
    last_event_id: list[int] = []

    async def scenario(hive: Hive) -> None:
        hive.history.new_record(
            "dl-1", URL, URL, dest, "e" * 64, None, 777, include=("*.json",), exclude=("x/*",), pull_id="p-1"
        )
        hive.tracker.start_download("dl-1", URL, 300)
        await hive.store.sync()
        seen["queued"] = stored_now(db, "dl-1")
        hive.tracker.set_status("dl-1", S.DOWNLOADING)
        hive.tracker.update_progress("dl-1", 120)
        await hive.store.sync()
        seen["downloading"] = stored_now(db, "dl-1")
        hive.tracker.complete_download("dl-1", sha256="ab" * 32, path=str(dest))
        last_event_id.append(hive.tracker.last_event_id("dl-1"))

    run(db, scenario)
    queued = seen["queued"]
    assert (queued.status, queued.model_ref, queued.url, queued.dest) == ("queued", URL, URL, str(dest))
    assert (queued.expected_sha256, queued.max_bps, queued.pull_id) == ("e" * 64, 777, "p-1")
    assert (queued.include, queued.exclude, queued.total_bytes) == ('["*.json"]', '["x/*"]', 300)
    assert (seen["downloading"].status, seen["downloading"].bytes_downloaded) == ("downloading", 120)
    done = stored(db, "dl-1")
    assert (done.status, done.sha256, done.bytes_downloaded) == ("complete", "ab" * 32, 300)
    assert done.completed_at is not None
    assert [done.last_event_id] == last_event_id


def test_a_status_change_is_written_at_once_not_at_the_next_batch(tmp_path: Path) -> None:
    db = tmp_path / "hive.db"

    async def scenario(hive: Hive) -> None:
        hive.history.new_record("dl-1", URL, URL, tmp_path / "a.bin", None, None, None)
        hive.tracker.start_download("dl-1", URL)
        hive.tracker.set_status("dl-1", S.STARTING)
        deadline = time.monotonic() + 10  # the batch would wait a minute
        while _status_in_db(db, "dl-1") != "starting":
            assert time.monotonic() < deadline, "the status change never reached the database"
            await asyncio.sleep(0.01)

    run(db, scenario, flush_interval=60.0)


def _status_in_db(db: Path, download_id: str) -> str | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT status FROM downloads WHERE download_id = ?", (download_id,)).fetchone()
    return None if row is None else str(row[0])


def test_checkpoints_land_in_the_record_and_a_segment_plan_is_in_the_database_before_it_returns(
    tmp_path: Path,
) -> None:
    db = tmp_path / "hive.db"

    async def scenario(hive: Hive) -> None:
        hive.history.new_record("dl-1", URL, URL, tmp_path / "a.bin", None, None, None)
        hive.tracker.start_download("dl-1", URL)
        hive.history.checkpoint("dl-1", '"etag-1"', 4096, "d" * 64)
        await hive.history.persist_segments("dl-1", '{"chunks": [[0, 4096]]}')
        now = stored_now(db, "dl-1")  # no sync: persist_segments waited for the write
        assert now.segments == '{"chunks": [[0, 4096]]}'
        hive.history.checkpoint_segments("dl-1", '{"chunks": [[2048, 4096]]}')

    run(db, scenario, flush_interval=60.0)
    rec = stored(db, "dl-1")
    assert (rec.validator, rec.total_bytes, rec.hub_digest) == ('"etag-1"', 4096, "d" * 64)
    assert rec.segments == '{"chunks": [[2048, 4096]]}'  # the later plan, written at close


def test_restore_lists_finished_downloads_and_returns_the_unfinished_to_resume(tmp_path: Path) -> None:
    db = tmp_path / "hive.db"
    done = finished("dl-done", 1, sha256="ab" * 32)
    failed = finished("dl-failed", 2, S.FAILED, error="gone", error_code=ErrorCode.NOT_FOUND)
    running = record("dl-run", 3, status="downloading", bytes_downloaded=500, total_bytes=900, last_event_id=12)
    queued = record("dl-queued", 4, last_event_id=1)

    async def scenario(hive: Hive) -> None:
        tracker = hive.tracker
        unfinished = hive.history.restore([done, failed, running, queued])
        assert [r.download_id for r in unfinished] == ["dl-run", "dl-queued"]
        assert [s.download_id for s in tracker.list_all()] == ["dl-queued", "dl-run", "dl-failed", "dl-done"]
        restored_done = tracker.get_download("dl-done")
        assert restored_done is not None and (restored_done.status, restored_done.sha256) == (S.COMPLETE, "ab" * 32)
        assert tracker.last_event_id("dl-done") == 5  # its terminal event keeps its id
        assert tracker.stream_decision("dl-done", 5) == StreamDecision.ENDED
        restored_failed = tracker.get_download("dl-failed")
        assert restored_failed is not None and restored_failed.error_code == ErrorCode.NOT_FOUND
        again = tracker.get_download("dl-run")
        assert again is not None and (again.status, again.bytes_downloaded) == (S.QUEUED, 500)
        assert tracker.last_event_id("dl-run") == 12 + EVENT_ID_GAP  # past anything sent before the crash
        hive.history.new_record("dl-new", URL, URL, tmp_path / "b.bin", None, None, None)
        new = hive.history.record("dl-new")
        assert new is not None and new.seq == 5  # after every restored one

    run(db, scenario)
    assert stored(db, "dl-run").status == "queued"  # the restored state went to the store too


def test_prune_forgets_the_oldest_finished_beyond_max_entries_and_keeps_active_ones(tmp_path: Path) -> None:
    db = tmp_path / "hive.db"
    old = [finished(f"dl-{i}", i) for i in range(1, 5)]
    active = record("dl-active", 5, status="downloading")

    async def scenario(hive: Hive) -> None:
        for rec in [*old, active]:
            hive.store.put(rec)
        hive.history.restore([*old, active])
        assert hive.history.prune(busy=set(), now=datetime(2026, 1, 2, 4, tzinfo=UTC)) == 2  # none past the TTL
        kept = [s.download_id for s in hive.tracker.list_all()]
        assert kept == ["dl-active", "dl-4", "dl-3"]
        assert hive.history.record("dl-1") is None and hive.history.record("dl-3") is not None

    run(db, scenario, max_entries=2)
    assert [r.download_id for r in reopen(db)] == ["dl-3", "dl-4", "dl-active"]


def test_prune_forgets_finished_downloads_older_than_the_ttl(tmp_path: Path) -> None:
    db = tmp_path / "hive.db"

    async def scenario(hive: Hive) -> None:
        hive.history.restore([finished("dl-old", 1), record("dl-active", 2, status="downloading")])
        assert hive.history.prune(busy=set(), now=datetime(2026, 1, 2, 4, tzinfo=UTC)) == 0  # an hour on: kept
        assert hive.history.prune(busy=set(), now=FAR_FUTURE) == 1
        assert [s.download_id for s in hive.tracker.list_all()] == ["dl-active"]

    run(db, scenario, ttl=7200.0)


def test_a_kept_partial_goes_with_its_record_unless_its_destination_is_busy(tmp_path: Path) -> None:
    db = tmp_path / "hive.db"
    dests = {name: tmp_path / "models" / f"{name}.bin" for name in ("free", "busy")}
    for dest in dests.values():
        dest.parent.mkdir(parents=True, exist_ok=True)
        part_path(dest).write_bytes(b"half")
    full = {"error_code": ErrorCode.INSUFFICIENT_DISK, "validator": '"etag"', "url": URL}
    recs = [finished(name, i, S.FAILED, dest=str(dest), **full) for i, (name, dest) in enumerate(dests.items(), 1)]

    async def scenario(hive: Hive) -> None:
        hive.history.restore(recs)
        kept = hive.history.kept_partial(URL, dests["busy"])
        assert kept is not None and kept.download_id == "busy"
        assert hive.history.prune(busy={dests["busy"]}, now=FAR_FUTURE) == 2

    run(db, scenario)
    assert not part_path(dests["free"]).exists()
    assert part_path(dests["busy"]).read_bytes() == b"half"


def test_remove_orphans_deletes_stray_partials_only(tmp_path: Path) -> None:
    db, models = tmp_path / "hive.db", tmp_path / "models"
    url_dir = models / "_url" / "files.test"
    running_dest = url_dir / "running.bin"
    kept_dest = url_dir / "kept.bin"
    hub_repo = models / ".rbee" / "partial" / "models--org--repo"
    owned = models / ".rbee" / "partial" / "models--org--owned"
    wanted = [
        part_path(running_dest),  # a running download's
        part_path(kept_dest),  # kept after the disk filled up
        models / "hub" / "models--org--repo" / "snapshots" / ("c" * 40) / "data.part",  # the repo's own file
        hub_repo / f"{'a' * 64}.part",  # a hub blob's partial with its notes
        owned / f"{'b' * 64}.part",  # in a folder a running hub download owns
    ]
    strays = [url_dir / "stray.bin.part", hub_repo / f"{'e' * 64}.part"]
    for path in [*wanted, *strays]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"bytes")
    (hub_repo / f"{'a' * 64}.json").write_text("{}")
    lonely_notes = hub_repo / f"{'f' * 64}.json"  # its partial is gone
    lonely_notes.write_text("{}")
    recs = [
        record("dl-run", 1, status="downloading", dest=str(running_dest)),
        finished("dl-kept", 2, S.FAILED, dest=str(kept_dest), error_code=ErrorCode.INSUFFICIENT_DISK, validator="v"),
    ]
    removed: list[int] = []

    async def scenario(hive: Hive) -> None:
        hive.history.restore(recs)
        removed.append(hive.history.remove_orphans(models, running={"dl-run"}, keep_under={owned}))

    run(db, scenario)
    assert removed == [2]
    assert [p for p in strays if p.exists()] == []
    assert [p for p in wanted if not p.exists()] == []
    assert not lonely_notes.exists()
