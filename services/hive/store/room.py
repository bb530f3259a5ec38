"""DiskRoom: a download makes room before its first byte (README, "The model store").

Once a download's size is known (a hub download's plan: the bytes still missing), `make_room` counts
it against the budget and the free disk (`budget.bytes_to_free`), with what the other running
downloads have reserved and not written yet; evicts whole models, least recently used first, never a
pinned one, one in use or the one downloading (`budget.choose_evictions`); and reserves the bytes till
the download ends (`release`). If no choice frees enough, nothing is evicted and the download fails at
once with INSUFFICIENT_DISK, naming the pinned and in-use models that hold the space. One download at
a time decides (a lock), so two never count the same free bytes.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import structlog

from services.hive.net.errors import DownloadError
from services.hive.store.budget import budget_bytes, bytes_to_free, choose_evictions, room_for
from services.hive.store.models import ModelNotFound, ModelStore, StoreError
from services.hive.tracker.tracker import DownloadTracker
from shared.models import ErrorCode
from shared.wire.models import DiskBody

__all__ = ["DiskRoom", "DiskUsage"]

log = structlog.get_logger()


class DiskUsage(NamedTuple):
    total: int
    free: int


def disk_usage(path: Path) -> DiskUsage:
    usage = shutil.disk_usage(path)
    return DiskUsage(usage.total, usage.free)


class DiskRoom:
    def __init__(
        self,
        store: ModelStore,
        tracker: DownloadTracker,
        max_bytes: str,
        min_free: int,
        usage: Callable[[Path], DiskUsage] = disk_usage,
    ) -> None:
        """`max_bytes` is HIVE_CACHE_MAX_BYTES as given (bytes, `NN%`, `0`), `min_free` HIVE_MIN_FREE_BYTES."""
        self.store = store
        self.tracker = tracker
        self.max_bytes = max_bytes
        self.min_free = min_free
        self.usage = usage
        self._reserved: dict[str, tuple[int, int]] = {}  # download_id -> (bytes reserved, its bytes then)
        self._lock = asyncio.Lock()

    def disk(self) -> DiskBody:
        usage = self.usage(self.store.models_dir)
        return DiskBody(used=self.store.used_bytes(), budget=budget_bytes(self.max_bytes, usage.total), free=usage.free)

    def room_for(self, repo_id: str | None) -> int:
        """The most a new download of `repo_id` could have here, evicting what may go (a plan's free bytes)."""
        usage = self.usage(self.store.models_dir)
        evictable = sum(c.size for c in self.store.candidates() if not (c.pinned or c.in_use or c.repo_id == repo_id))
        budget = budget_bytes(self.max_bytes, usage.total)
        return room_for(self.store.used_bytes(), usage.free, self.reserved(), budget, self.min_free, evictable)

    def reserved(self, but: str | None = None) -> int:
        """What running downloads (but `but`) will still write of what they reserved."""
        left = 0
        for download_id, (needed, then) in self._reserved.items():
            state = self.tracker.get_download(download_id)
            if download_id == but or state is None or state.status.is_terminal:
                continue
            left += max(0, needed - max(0, state.bytes_downloaded - then))
        return left

    async def make_room(self, download_id: str, repo_id: str | None, needed: int) -> None:
        """Evict what must go for `needed` more bytes, and reserve them; DownloadError INSUFFICIENT_DISK if
        that cannot be done (nothing evicted then)."""
        if needed <= 0:
            return
        async with self._lock:
            await self.store.look()
            usage = self.usage(self.store.models_dir)
            budget = budget_bytes(self.max_bytes, usage.total)
            reserved = self.reserved(but=download_id)
            used = self.store.used_bytes()
            to_free = bytes_to_free(needed, used, usage.free, reserved, budget, self.min_free)
            candidates = self.store.candidates()
            chosen = choose_evictions(candidates, to_free, keep=repo_id)
            bound = log.bind(download_id=download_id, repo_id=repo_id)
            if chosen is None:
                pinned = sorted(c.repo_id for c in candidates if c.pinned)
                in_use = sorted(c.repo_id for c in candidates if c.in_use and not c.pinned)
                message = (
                    f"the download needs {needed} bytes; {to_free} more must be freed (cache {used} bytes, budget"
                    f" {budget if budget is not None else 'none'}, {usage.free} free, {reserved} reserved by running"
                    f" downloads, HIVE_MIN_FREE_BYTES {self.min_free}), and only unpinned models not in use may go;"
                    f" pinned: {', '.join(pinned) or 'none'}; in use: {', '.join(in_use) or 'none'}"
                )
                bound.warning("disk_room_refused", needed=needed, to_free=to_free, pinned=pinned, in_use=in_use)
                raise DownloadError(ErrorCode.INSUFFICIENT_DISK, message)
            kept: list[str] = []
            for candidate in chosen:
                try:
                    freed = await self.store.evict(candidate.repo_id)
                except ModelNotFound:  # (gone meanwhile: its bytes are free all the same)
                    continue
                except StoreError:  # (in use or pinned since it was chosen: it stays)
                    kept.append(candidate.repo_id)
                    continue
                bound.info("model_evicted_for_room", evicted=candidate.repo_id, freed=freed, needed=needed)
            if kept:
                raise DownloadError(
                    ErrorCode.INSUFFICIENT_DISK,
                    f"the download needs {needed} bytes; {to_free} more had to be freed, but"
                    f" {', '.join(kept)} began a download or was pinned while room was being made",
                )
            state = self.tracker.get_download(download_id)
            self._reserved[download_id] = (needed, state.bytes_downloaded if state is not None else 0)

    def release(self, download_id: str) -> None:
        self._reserved.pop(download_id, None)
