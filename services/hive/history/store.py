"""Download history in embedded SQLite: the hive's source of truth across restarts.

WAL journal, one writer thread, and writes batched: callers mark records dirty (cheap, in
memory) and a flusher writes them every `flush_interval` seconds, at once on status changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

__all__ = ["COLUMNS", "SCHEMA_VERSION", "DownloadRecord", "HistoryStore", "migrate"]

log = structlog.get_logger()


@dataclass(slots=True, kw_only=True)
class DownloadRecord:
    """One download's row. Its fields are the table's columns, in this order (`COLUMNS`)."""

    download_id: str
    seq: int
    model_ref: str
    url: str
    dest: str
    status: str
    bytes_downloaded: int = 0
    total_bytes: int | None = None
    started_at: str
    completed_at: str | None = None
    error: str | None = None
    error_code: str | None = None
    sha256: str | None = None
    expected_sha256: str | None = None
    validator: str | None = None
    max_bps: int | None = None
    token_origin: str | None = None
    last_event_id: int = 0
    segments: str | None = None  # the SegmentPlan of a segmented partial, for resuming it
    commit: str | None = None  # the hub's X-Repo-Commit for the file (hf: refs)
    hub_digest: str | None = None  # the hub's digest of the file (sha256, or a git blob sha1), to verify a resume
    include: str | None = None  # a whole model's include globs (a JSON list), or None for all files
    exclude: str | None = None  # its exclude globs (a JSON list)
    files_total: int | None = None  # a whole model's file count
    files_done: int | None = None
    warning: str | None = None
    pull_id: str | None = None  # the queen's fleet pull it belongs to
    sources: str | None = None  # a fleet pull's peers and hub-first blobs (JSON), for a resume

    @property
    def started(self) -> datetime:
        return datetime.fromisoformat(self.started_at.replace("Z", "+00:00"))

    @property
    def completed(self) -> datetime | None:
        return datetime.fromisoformat(self.completed_at.replace("Z", "+00:00")) if self.completed_at else None


COLUMNS = tuple(f.name for f in fields(DownloadRecord))
_COLUMN_LIST = ", ".join(f'"{c}"' for c in COLUMNS)  # quoted: `commit` is an SQL keyword

# The schema's history, one step per version (`PRAGMA user_version` says how many have run). A
# step is never edited once released: a new column is a new step (ALTER TABLE ... ADD COLUMN) plus
# a field of DownloadRecord, so a hive.db written by any earlier version opens and keeps its rows.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the table as it was before versions were counted (a db of that time already has it)
    (
        """CREATE TABLE IF NOT EXISTS downloads (
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
        )""",
        "CREATE INDEX IF NOT EXISTS downloads_status ON downloads(status)",
    ),
    # 2: what the hub said of a file, so a resumed download is verified against it too
    (
        'ALTER TABLE downloads ADD COLUMN "commit" TEXT',
        "ALTER TABLE downloads ADD COLUMN hub_digest TEXT",
    ),
    # 3: whole models (which files, how many are in place), a state's warning, fleet pulls
    (
        'ALTER TABLE downloads ADD COLUMN "include" TEXT',
        'ALTER TABLE downloads ADD COLUMN "exclude" TEXT',
        "ALTER TABLE downloads ADD COLUMN files_total INTEGER",
        "ALTER TABLE downloads ADD COLUMN files_done INTEGER",
        "ALTER TABLE downloads ADD COLUMN warning TEXT",
        "ALTER TABLE downloads ADD COLUMN pull_id TEXT",
        "ALTER TABLE downloads ADD COLUMN sources TEXT",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database up to SCHEMA_VERSION; the version it was at before."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        log.warning("history_schema_newer", version=version, known=SCHEMA_VERSION)
        return int(version)
    for number, steps in enumerate(_MIGRATIONS[version:], start=version + 1):
        with conn:
            conn.execute("BEGIN")
            for step in steps:
                conn.execute(step)
            conn.execute(f"PRAGMA user_version = {number}")
    return int(version)


class HistoryStore:
    def __init__(self, path: Path, flush_interval: float = 0.5) -> None:
        self.path = path
        self.flush_interval = flush_interval
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rbee-db")
        self._conn: sqlite3.Connection | None = None
        self._dirty: dict[str, DownloadRecord] = {}
        self._deleted: set[str] = set()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle (sync parts run on the writer thread) --------------------------------------

    def _open(self) -> list[DownloadRecord]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        migrate(conn)
        self._conn = conn
        rows = conn.execute(f"SELECT {_COLUMN_LIST} FROM downloads ORDER BY seq").fetchall()
        return [DownloadRecord(**dict(zip(COLUMNS, row, strict=True))) for row in rows]

    async def open(self) -> list[DownloadRecord]:
        """Open (creating) the database and return every record in arrival order."""
        records = await asyncio.get_running_loop().run_in_executor(self._executor, self._open)
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._flusher(), name="history-flusher")
        return records

    async def close(self) -> None:
        task, self._task = self._task, None  # the flusher's loop ends once this is None
        if task is not None:
            if self._wake is not None:
                self._wake.set()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.sync()  # also waits out a write the cancelled flusher had handed to the executor
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)

    # -- writes ------------------------------------------------------------------------------

    def put(self, record: DownloadRecord, urgent: bool = False) -> None:
        """Queue a record to be written (latest version wins); urgent ones go out at once."""
        self._deleted.discard(record.download_id)
        self._dirty[record.download_id] = record
        if urgent and self._wake is not None:
            self._wake.set()

    def delete(self, download_ids: Iterable[str]) -> None:
        for download_id in download_ids:
            self._dirty.pop(download_id, None)
            self._deleted.add(download_id)
        if self._wake is not None:
            self._wake.set()

    async def flush(self) -> None:
        if not self._dirty and not self._deleted:
            return
        taken, deleted = self._dirty, self._deleted
        self._dirty, self._deleted = {}, set()
        rows = [tuple(getattr(r, c) for c in COLUMNS) for r in taken.values()]  # asdict: 300x slower
        # shielded: a cancel (close() stopping the flusher) must not cancel a write whose rows were taken
        write = asyncio.get_running_loop().run_in_executor(self._executor, self._write, rows, list(deleted))
        try:
            await asyncio.shield(write)
        except sqlite3.Error:
            # not written (busy past the timeout, disk full): queued again, unless newer news came since
            for download_id, rec in taken.items():
                if download_id not in self._deleted:
                    self._dirty.setdefault(download_id, rec)
            self._deleted |= {d for d in deleted if d not in self._dirty}
            raise

    async def sync(self) -> None:
        """Flush, and return only once every write queued so far (the flusher's too) is in the database."""
        await self.flush()
        await asyncio.get_running_loop().run_in_executor(self._executor, lambda: None)  # one writer: FIFO

    def _write(self, rows: list[tuple[Any, ...]], deleted: list[str]) -> None:
        conn = self._conn
        if conn is None:
            return
        placeholders = ", ".join("?" for _ in COLUMNS)
        with conn:
            conn.execute("BEGIN")
            conn.executemany(f"INSERT OR REPLACE INTO downloads ({_COLUMN_LIST}) VALUES ({placeholders})", rows)
            conn.executemany("DELETE FROM downloads WHERE download_id = ?", [(d,) for d in deleted])

    async def _flusher(self) -> None:
        assert self._wake is not None
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the cancel from close()
        # when the wake-up lands at the same moment, and the flusher would never stop.
        while self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except sqlite3.Error as exc:
                log.error("history_write_failed", error=str(exc))
