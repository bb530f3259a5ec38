"""rbee-hive: builds the app (tracker, downloader, manager) and serves it with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from services.hive.api import blobs, downloads, models, plans
from services.hive.api import settings as settings_routes
from services.hive.cache.layout import marks_file
from services.hive.downloads.manager import DownloadManager
from services.hive.downloads.runner import DownloadRunner
from services.hive.history.mirror import History
from services.hive.history.store import HistoryStore
from services.hive.hub.api import HubApi
from services.hive.hub.fetch import HubFetcher
from services.hive.hub.plan import HubPlanner
from services.hive.hub.trees import TreeCache
from services.hive.metrics import HiveCollector, HiveStats, render_metrics
from services.hive.net.quota import HubQuota
from services.hive.peers.blobs import quiet_short_bodies
from services.hive.registration import register_forever
from services.hive.settings import HiveSettings
from services.hive.store.events import ModelEvents
from services.hive.store.inventory import Inventory
from services.hive.store.marks import Marks
from services.hive.store.models import ModelStore
from services.hive.store.room import DiskRoom
from services.hive.store.watch import ActiveModels, DownloadWatch
from services.hive.tracker.tracker import DownloadTracker
from services.hive.transfer import Downloader, DownloaderConfig
from services.hive.transfer.throttle import Throttle
from shared.auth import TokenAuthMiddleware
from shared.error_handlers import install_error_handlers
from shared.limits import HIVE_MAX_BODY, BodySizeLimitMiddleware
from shared.logging import CorrelationIdMiddleware
from shared.runtime_metrics import register_runtime_metrics
from shared.service import run_service
from shared.wire.hive import HiveHealth

__all__ = ["create_app", "main"]


def downloader_config(settings: HiveSettings) -> DownloaderConfig:
    return DownloaderConfig(
        connect_timeout=settings.connect_timeout,
        stall_timeout=settings.stall_timeout,
        max_attempts=settings.max_attempts,
        retry_base_delay=settings.retry_base_delay,
        retry_max_delay=settings.retry_max_delay,
        write_batch_bytes=settings.write_batch_bytes,
        segments=settings.segments,
        segment_min_bytes=settings.segment_min_bytes,
        split_below_bps=settings.split_below_bps,
        direct_io=settings.direct_io,
        thread_above_bps=settings.thread_above_bps,
        hf_token=settings.hub_token(),
        allowed_hosts=settings.allowed_host_set,
        hub_cdn_hosts=settings.hub_cdn_host_set,
        range_limit=settings.range_limit_bytes,
        rate_limit_max_wait=settings.rate_limit_max_wait,
        peer_wait_secs=settings.peer_wait_secs,
        peer_min_bps=settings.peer_min_bps,
        peer_slow_secs=settings.peer_slow_secs,
    )


def _model_store(settings: HiveSettings, tracker: DownloadTracker) -> ModelStore:
    """The model store on the hive's cache, told of every download by the tracker (README, "The model store")."""
    models_dir = settings.models_dir.resolve()
    events = ModelEvents(settings.id, tracker.broadcast)
    running = ActiveModels(tracker, settings.hf_endpoint)
    store = ModelStore(models_dir, Inventory(models_dir), Marks(marks_file(models_dir)), events, running)
    tracker.add_listener(DownloadWatch(store, settings.hf_endpoint).on_event)
    return store


def create_app(settings: HiveSettings | None = None) -> FastAPI:
    settings = settings or HiveSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.models_dir.mkdir(parents=True, exist_ok=True)
        config = downloader_config(settings)
        async with httpx.AsyncClient(
            timeout=Downloader.timeouts(config),
            # idle connections to file servers are bounded: the pool only drops expired ones when used
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=16),
            headers={"User-Agent": "rbee-hive/0.1"},
        ) as client:
            await asyncio.to_thread(model_store.open)
            store = HistoryStore(settings.state_db_path)
            records = await store.open()
            history = History(tracker, store, ttl=settings.history_ttl, max_entries=settings.history_max)
            throttle = Throttle(settings.bandwidth_limit)
            downloader = Downloader(  # one HubQuota: every download and API call of this hive shares the hub's windows
                client, config, throttle=throttle, stats=stats, checkpoints=history, quota=HubQuota()
            )
            models_dir = settings.models_dir.resolve()
            planner = HubPlanner(
                HubApi(downloader.requester, config),
                models_dir,
                TreeCache(models_dir),
                downloader.disk_free,
                room=room,
            )
            hub = HubFetcher(
                downloader,
                planner,
                files_concurrent=settings.model_files_concurrent,
                peer_token=settings.api_token,
            )
            runner = DownloadRunner(tracker, downloader, hub, history, throttle, settings.max_concurrent)
            manager = DownloadManager(
                tracker,
                downloader,
                models_dir,
                settings.hf_endpoint,
                history=history,
                throttle=throttle,
                hub=hub,
                runner=runner,
            )
            await manager.recover(records)
            app.state.manager = manager
            pruner = asyncio.create_task(runner.prune_forever(), name="history-pruner")
            watcher = asyncio.create_task(model_store.watch_forever(), name="model-store-watch")
            flusher = asyncio.create_task(tracker.flush_forever(), name="progress-flusher")
            registration = (
                asyncio.create_task(register_forever(settings, client), name="queen-registration")
                if settings.queen_url
                else None
            )
            try:
                yield
            finally:
                if registration is not None:
                    registration.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await registration
                pruner.cancel()
                watcher.cancel()
                flusher.cancel()
                await runner.shutdown()
                await store.close()
                downloader.close()

    tracker = DownloadTracker(progress_interval=settings.progress_interval)
    model_store = _model_store(settings, tracker)
    room = DiskRoom(model_store, tracker, settings.cache_max_bytes, settings.min_free_bytes)
    app = FastAPI(title="rbee-hive", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.tracker = tracker
    app.state.store = model_store
    app.state.room = room
    registry = CollectorRegistry()
    stats = HiveStats()
    registry.register(HiveCollector(tracker, settings.id, stats, model_store))
    register_runtime_metrics(registry)
    install_error_handlers(app)
    quiet_short_bodies(logging.getLogger("uvicorn.error"))  # a peer's blob body may end short (peers/blobs.py)
    for router in (downloads.router, settings_routes.router, blobs.router, plans.router, models.router):
        app.include_router(router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> HiveHealth:
        return HiveHealth(status="ok", hive_id=settings.id, active_downloads=len(tracker.list_active()))

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics() -> Response:
        return Response(render_metrics(registry), media_type=CONTENT_TYPE_LATEST)

    # inside the token check: no body is read without a token
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=HIVE_MAX_BODY)
    app.add_middleware(TokenAuthMiddleware, token=settings.api_token)
    app.add_middleware(CorrelationIdMiddleware)
    return app


def main(argv: list[str] | None = None) -> None:
    run_service(
        "rbee-hive",
        "rbee hive: model downloads on one node",
        HiveSettings,
        create_app,
        lambda s: {"hive_id": s.id},
        argv=argv,
    )


if __name__ == "__main__":
    main()
