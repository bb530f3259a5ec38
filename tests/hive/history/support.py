"""What the history tests share: a record built directly, and the records a store holds on disk."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.hive.history.store import DownloadRecord, HistoryStore


def record(download_id: str, seq: int, **changes: object) -> DownloadRecord:
    rec = DownloadRecord(
        download_id=download_id,
        seq=seq,
        model_ref=f"hf:org/repo/{download_id}.bin",
        url=f"http://127.0.0.1/{download_id}.bin",
        dest=f"/models/{download_id}.bin",
        status="queued",
        started_at="2026-01-02T03:04:05Z",
    )
    for name, value in changes.items():
        setattr(rec, name, value)
    return rec


def reopen(path: Path) -> list[DownloadRecord]:
    async def go() -> list[DownloadRecord]:
        store = HistoryStore(path)
        try:
            return await store.open()
        finally:
            await store.close()

    return asyncio.run(go())
