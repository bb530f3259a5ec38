"""DiskRoom: what running downloads reserved counts for the next one, and eviction goes least recently
used first (services/hive/store/room.py, on a real cache and tracker; the filesystem's numbers given)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.hive.cache.layout import marks_file
from services.hive.net.errors import DownloadError
from services.hive.store.events import ModelEvents
from services.hive.store.inventory import Inventory
from services.hive.store.marks import Marks
from services.hive.store.models import DeleteFailed, ModelStore
from services.hive.store.room import DiskRoom, DiskUsage
from services.hive.store.watch import ActiveModels
from services.hive.tracker.tracker import DownloadTracker
from shared.models import DownloadStatus, ProgressEvent
from tests.hive.store.cache_trees import commit_of, write_repo


def store_on(tmp_path: Path, tracker: DownloadTracker, told: list[ProgressEvent]) -> ModelStore:
    for name in ("org/old", "org/new", "org/pinned"):
        write_repo(tmp_path / "hub", name, {commit_of(name): {"w.bin": name.encode() * 30}})  # 210-240 bytes
    store = ModelStore(
        tmp_path,
        Inventory(tmp_path),
        Marks(marks_file(tmp_path)),
        ModelEvents("h", told.append),
        ActiveModels(tracker, "https://hub.example"),
    )
    store.open()
    store.marks.used("org/old", datetime(2026, 1, 1, tzinfo=UTC))
    store.marks.used("org/new", datetime(2026, 6, 1, tzinfo=UTC))
    store.pin("org/pinned", True)
    return store


def test_a_running_downloads_reservation_counts_and_the_lru_model_goes(tmp_path: Path) -> None:
    tracker = DownloadTracker()
    told: list[ProgressEvent] = []
    store = store_on(tmp_path, tracker, told)
    used = store.used_bytes()
    room = DiskRoom(store, tracker, str(used + 300), 0, lambda _p: DiskUsage(10**9, 10**8))

    async def run() -> None:
        for d in ("d1", "d2"):
            tracker.start_download(d, f"hf:org/{d}", 300)
            tracker.set_status(d, DownloadStatus.DOWNLOADING)
        await room.make_room("d1", "org/d1", 300)  # fits the budget as it is
        assert store.inventory.get("org/old") is not None and room.reserved() == 300
        await room.make_room("d2", "org/d2", 200)  # d1's 300 reserved: the least recently used goes
        assert store.inventory.get("org/old") is None and store.inventory.get("org/new") is not None
        tracker.update_progress("d1", 250)
        assert room.reserved(but="d2") == 50  # what d1 has still to write
        room.release("d1")
        room.release("d2")
        assert room.reserved() == 0

    asyncio.run(run())
    assert [(e.data["action"], e.data["repo_id"]) for e in told][-1] == ("evicted", "org/old")
    assert store.events.evictions == 1


def test_when_only_pinned_and_in_use_models_hold_the_space_nothing_goes(tmp_path: Path) -> None:
    tracker = DownloadTracker()
    store = store_on(tmp_path, tracker, [])
    tracker.start_download("busy", "hf:org/new@main", 10)  # a download of org/new runs
    budget = store.used_bytes() + 10
    room = DiskRoom(store, tracker, str(budget), 0, lambda _p: DiskUsage(10**9, 10**8))
    tracker.start_download("d", "hf:org/big", None)
    old = store.inventory.get("org/old")
    assert old is not None
    with pytest.raises(DownloadError) as refused:
        asyncio.run(room.make_room("d", "org/big", old.size_on_disk + 11))  # more than evicting org/old gives
    assert refused.value.code == "INSUFFICIENT_DISK"
    assert "pinned: org/pinned" in refused.value.message and "in use: org/new" in refused.value.message
    assert {s.repo_id for s in store.inventory.all()} == {"org/old", "org/new", "org/pinned"}  # none went
    # HIVE_MIN_FREE_BYTES counts as the budget does: the free disk less it must hold the download
    tight = DiskRoom(store, tracker, "0", 1000, lambda _p: DiskUsage(10**9, 1000 + 100))
    asyncio.run(tight.make_room("d", "org/big", 100))
    assert store.inventory.get("org/old") is not None  # it fit: nothing went


def test_a_model_pinned_or_downloaded_after_it_was_chosen_stays_and_the_download_is_refused(tmp_path: Path) -> None:
    tracker = DownloadTracker()
    store = store_on(tmp_path, tracker, [])
    room = DiskRoom(store, tracker, str(store.used_bytes()), 0, lambda _p: DiskUsage(10**9, 10**8))
    tracker.start_download("d", "hf:org/big", None)
    evict = store.evict

    async def a_download_of_it_begins_first(repo_id: str) -> int:  # (between the choice and the removal)
        tracker.start_download("late", f"hf:{repo_id}", 10)
        return await evict(repo_id)

    store.evict = a_download_of_it_begins_first  # type: ignore[method-assign]
    with pytest.raises(DownloadError) as refused:
        asyncio.run(room.make_room("d", "org/big", 100))
    assert refused.value.code == "INSUFFICIENT_DISK" and "org/old" in refused.value.message
    assert store.inventory.get("org/old") is not None  # it stayed: its download would link its blobs


def test_a_delete_that_removes_nothing_is_an_error_not_a_deleted_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    told: list[ProgressEvent] = []
    store = store_on(tmp_path, DownloadTracker(), told)
    monkeypatch.setattr("services.hive.store.models.remove_repo", lambda root, trash: None)  # (a read-only disk)
    with pytest.raises(DeleteFailed):
        asyncio.run(store.delete("org/old"))
    assert store.inventory.get("org/old") is not None
    assert not [e for e in told if e.data["action"] == "deleted"]
