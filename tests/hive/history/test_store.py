"""The history store on a real SQLite file: round trips, batching, deletes, and schema migrations."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from services.hive.history.store import COLUMNS, SCHEMA_VERSION, HistoryStore, migrate
from tests.hive.history.support import record, reopen

# The table exactly as hives wrote it before the schema had a version (user_version 0). A copy on
# purpose, not an import of the store's first migration: it stands for databases already on disk.
_UNVERSIONED_SCHEMA = """
CREATE TABLE downloads (
    download_id      TEXT PRIMARY KEY,
    seq              INTEGER NOT NULL,
    model_ref        TEXT NOT NULL,
    url              TEXT NOT NULL,
    dest             TEXT NOT NULL,
    status           TEXT NOT NULL,
    bytes_downloaded INTEGER NOT NULL DEFAULT 0,
    total_bytes      INTEGER,
    started_at       TEXT NOT NULL,
    completed_at     TEXT,
    error            TEXT,
    error_code       TEXT,
    sha256           TEXT,
    expected_sha256  TEXT,
    validator        TEXT,
    max_bps          INTEGER,
    token_origin     TEXT,
    last_event_id    INTEGER NOT NULL DEFAULT 0,
    segments         TEXT
);
CREATE INDEX downloads_status ON downloads(status);
"""


def test_records_round_trip_in_arrival_order(tmp_path: Path) -> None:
    path = tmp_path / "hive.db"
    first = record("dl-b", 1, status="complete", bytes_downloaded=10, total_bytes=10, sha256="ab" * 32)
    second = record("dl-a", 2, validator='"etag"', segments='{"total": 10}', max_bps=5, last_event_id=7)

    async def go() -> None:
        store = HistoryStore(path)
        assert await store.open() == []
        store.put(second)
        store.put(first)
        await store.close()

    asyncio.run(go())
    assert reopen(path) == [first, second]


def test_latest_put_wins_and_deletes_win_over_earlier_puts(tmp_path: Path) -> None:
    path = tmp_path / "hive.db"

    async def go() -> None:
        store = HistoryStore(path)
        await store.open()
        store.put(record("dl-a", 1, bytes_downloaded=1))
        store.put(record("dl-a", 1, bytes_downloaded=2))
        store.put(record("dl-b", 2))
        await store.sync()
        store.put(record("dl-b", 2, bytes_downloaded=3))
        store.delete(["dl-b"])
        await store.sync()
        await store.close()

    asyncio.run(go())
    assert [(r.download_id, r.bytes_downloaded) for r in reopen(path)] == [("dl-a", 2)]


def test_sync_returns_once_the_rows_are_in_the_database(tmp_path: Path) -> None:
    path = tmp_path / "hive.db"

    async def go() -> int:
        store = HistoryStore(path, flush_interval=60.0)  # the flusher would not write in time
        await store.open()
        store.put(record("dl-a", 1))
        await store.sync()
        with sqlite3.connect(path) as other:
            (count,) = other.execute("SELECT count(*) FROM downloads").fetchone()
        await store.close()
        return int(count)

    assert asyncio.run(go()) == 1


def test_a_new_database_is_at_the_current_schema_with_every_column(tmp_path: Path) -> None:
    path = tmp_path / "hive.db"
    reopen(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        columns = tuple(row[1] for row in conn.execute("PRAGMA table_info(downloads)"))
    assert columns == COLUMNS


def test_a_database_written_by_the_unversioned_schema_opens_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "hive.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(_UNVERSIONED_SCHEMA)
        conn.execute(
            "INSERT INTO downloads (download_id, seq, model_ref, url, dest, status, bytes_downloaded, total_bytes,"
            " started_at, validator, last_event_id, segments) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("dl-old", 4, "hf:o/r/m.bin", "http://h/m.bin", "/models/m.bin", "downloading", 5, 9,
             "2025-12-01T00:00:00Z", '"v1"', 12, None),
        )  # fmt: skip
    conn.close()
    (rec,) = reopen(path)
    assert rec == record(
        "dl-old", 4, model_ref="hf:o/r/m.bin", url="http://h/m.bin", dest="/models/m.bin", status="downloading",
        bytes_downloaded=5, total_bytes=9, started_at="2025-12-01T00:00:00Z", validator='"v1"', last_event_id=12,
    )  # fmt: skip
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    conn.close()


def test_migrate_runs_each_step_once(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "hive.db", isolation_level=None)
    try:
        assert migrate(conn) == 0
        assert migrate(conn) == SCHEMA_VERSION
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    finally:
        conn.close()


def test_close_right_after_an_urgent_write_returns_and_keeps_it(tmp_path: Path) -> None:
    """The flusher's wake-up and close()'s cancel landing together once hung close() for good."""
    path = tmp_path / "hive.db"

    async def go() -> None:
        for i in range(50):
            store = HistoryStore(path, flush_interval=60.0)
            await store.open()
            store.put(record(f"dl-{i}", i), urgent=True)
            await asyncio.wait_for(store.close(), timeout=10)

    asyncio.run(go())
    assert len(reopen(path)) == 50


def test_a_failed_write_is_queued_again_not_lost(tmp_path: Path) -> None:
    path = tmp_path / "hive.db"

    class FailsOnce(HistoryStore):
        failed = False

        def _write(self, rows: list[tuple[object, ...]], deleted: list[str]) -> None:
            if not self.failed:
                self.failed = True
                raise sqlite3.OperationalError("database is locked")
            super()._write(rows, deleted)  # type: ignore[arg-type]

    async def go() -> None:
        store = FailsOnce(path, flush_interval=60.0)
        await store.open()
        store.put(record("dl-a", 1))
        store.delete(["dl-gone"])
        with pytest.raises(sqlite3.OperationalError):
            await store.flush()
        store.put(record("dl-b", 2))
        await store.close()

    asyncio.run(go())
    assert [r.download_id for r in reopen(path)] == ["dl-a", "dl-b"]
