"""A hive's parts wired as services/hive/main.py wires them, without the HTTP layer: for tests that
drive the download policy (DownloadManager, DownloadRunner, HubPlanner) directly on a real server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from services.hive.downloads.manager import DownloadManager
from services.hive.downloads.runner import DownloadRunner
from services.hive.history.mirror import History
from services.hive.history.store import DownloadRecord, HistoryStore
from services.hive.hub.api import HubApi
from services.hive.hub.fetch import HubFetcher
from services.hive.hub.plan import HubPlanner
from services.hive.hub.trees import TreeCache
from services.hive.main import downloader_config
from services.hive.settings import HiveSettings
from services.hive.tracker.tracker import DownloadTracker
from services.hive.transfer import Downloader
from services.hive.transfer.throttle import Throttle
from shared.models import DownloadState
from tests.conftest import FAST_HIVE

__all__ = ["HiveParts", "ended", "hive_parts"]


@dataclass
class HiveParts:
    settings: HiveSettings
    tracker: DownloadTracker
    store: HistoryStore
    records: list[DownloadRecord]  # what the store held when it opened (not recovered: `manager.recover`)
    history: History
    throttle: Throttle
    downloader: Downloader
    planner: HubPlanner
    runner: DownloadRunner
    manager: DownloadManager


@asynccontextmanager
async def hive_parts(
    models_dir: Path, hf_endpoint: str, disk_free: Callable[[Path], int] | None = None, **settings: Any
) -> AsyncIterator[HiveParts]:
    """The parts of a hive on `models_dir` (its history in `.rbee/hive.db`) whose HF_ENDPOINT is
    `hf_endpoint`; keywords override HiveSettings (FAST_HIVE's test-sized defaults), `disk_free` the
    Downloader's. Shut down at the end as the hive's lifespan does: transfers stopped, partials kept."""
    hive = HiveSettings(models_dir=models_dir, hf_endpoint=hf_endpoint, **{**FAST_HIVE, **settings})
    hive.models_dir.mkdir(parents=True, exist_ok=True)
    config = downloader_config(hive)
    async with httpx.AsyncClient(timeout=Downloader.timeouts(config)) as client:
        store = HistoryStore(hive.state_db_path)
        records = await store.open()
        tracker = DownloadTracker(progress_interval=hive.progress_interval)
        history = History(tracker, store, ttl=hive.history_ttl, max_entries=hive.history_max)
        throttle = Throttle(hive.bandwidth_limit)
        downloader = Downloader(client, config, throttle=throttle, checkpoints=history, disk_free=disk_free)
        models = hive.models_dir.resolve()
        planner = HubPlanner(HubApi(downloader.requester, config), models, TreeCache(models), downloader.disk_free)
        fetcher = HubFetcher(downloader, planner, files_concurrent=hive.model_files_concurrent)
        runner = DownloadRunner(tracker, downloader, fetcher, history, throttle, hive.max_concurrent)
        manager = DownloadManager(
            tracker, downloader, models, hive.hf_endpoint,
            history=history, throttle=throttle, hub=fetcher, runner=runner,
        )  # fmt: skip
        try:
            yield HiveParts(hive, tracker, store, records, history, throttle, downloader, planner, runner, manager)
        finally:
            await runner.shutdown()
            await store.close()
            downloader.close()


async def ended(tracker: DownloadTracker, download_id: str) -> DownloadState:
    """The download's state once its stream has carried its terminal event (within 30 s)."""
    async with asyncio.timeout(30):
        async for _ in tracker.stream_progress(download_id):
            pass
    state = tracker.get_download(download_id)
    assert state is not None and state.status.is_terminal, state
    return state
