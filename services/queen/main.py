"""rbee-queen: builds the app (registry, hive client, relays, health checks) and serves it with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from services.queen.api.downloads import router as downloads_router
from services.queen.api.hives import router as hives_router
from services.queen.api.models import router as models_router
from services.queen.api.page import PUBLIC_PATHS
from services.queen.api.page import router as page_router
from services.queen.api.pulls import router as pulls_router
from services.queen.hives.client import HiveClient
from services.queen.hives.registry import HiveRegistry
from services.queen.metrics import QueenCollector
from services.queen.models.inventory import FleetInventory
from services.queen.models.presence import FleetPresence
from services.queen.models.store import ModelStore
from services.queen.pulls.service import PullService
from services.queen.pulls.streams import PullStreamConfig, PullStreams
from services.queen.service import QueenService
from services.queen.settings import QueenSettings
from services.queen.streams.aggregate import AggregateConfig, AggregateHub
from services.queen.streams.relay import DownloadRelay, RelayConfig
from services.queen.streams.upstream import RelayStats
from shared.auth import TokenAuthMiddleware
from shared.error_handlers import install_error_handlers
from shared.limits import BodySizeLimitMiddleware
from shared.logging import CorrelationIdMiddleware
from shared.runtime_metrics import register_runtime_metrics
from shared.service import run_service
from shared.wire.queen import QueenHealth

__all__ = ["create_app", "main"]


def create_app(settings: QueenSettings | None = None) -> FastAPI:
    settings = settings or QueenSettings()
    registry = HiveRegistry(max_downloads=settings.max_tracked_downloads)
    stats = RelayStats()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(
            timeout=settings.hive_timeout,
            # One stream per hive plus one per watched download, and the API calls: no cap on
            # connections in use. Idle ones are bounded, and dropped before a hive's own keep-alive
            # timeout (uvicorn's, 5 s) closes them under us.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64, keepalive_expiry=4.0),
            headers={"User-Agent": "rbee-queen/0.1"},
        ) as client:
            hives = HiveClient(client, settings.api_token, settings.hive_timeout, settings.upstream_read_timeout)
            inventory = FleetInventory()
            app.state.models = models = ModelStore(
                registry, hives, inventory, settings.hive_timeout, settings.orchestrator_id
            )
            presence = FleetPresence(registry, hives, inventory, settings.plan_timeout)
            hub = AggregateHub(
                hives,
                registry.record_download,
                AggregateConfig(
                    settings.orchestrator_id,
                    settings.client_queue_size,
                    settings.relay_backoff_initial,
                    settings.relay_backoff_max,
                    settings.hive_timeout,
                ),
                stats,
                models,
            )
            relay = DownloadRelay(
                hives,
                registry.url_of,
                RelayConfig(
                    settings.orchestrator_id,
                    settings.unreachable_budget,
                    settings.relay_backoff_initial,
                    settings.relay_backoff_max,
                ),
                stats,
            )
            service = QueenService(settings, registry, hives, hub, presence)
            app.state.service, app.state.relay, app.state.hub = service, relay, hub
            app.state.pulls = pulls = PullService(settings, registry, hives, presence)
            app.state.pull_streams = pull_streams = PullStreams(
                relay,
                registry.get,
                PullStreamConfig(
                    settings.orchestrator_id,
                    settings.fanout_timeout,
                    settings.unreachable_budget,
                    settings.relay_backoff_initial,
                    settings.relay_backoff_max,
                ),
            )
            app.state.metrics = CollectorRegistry()
            app.state.metrics.register(QueenCollector(registry, relay, hub, stats, inventory))
            register_runtime_metrics(app.state.metrics)
            for hive_id, url in settings.hives.items():
                service.register(hive_id, url, source="static")
            health = asyncio.create_task(service.run_health_checks(), name="health-checks")
            cancels = asyncio.create_task(pulls.reapply_cancels_forever(), name="pull-cancels")
            try:
                yield
            finally:
                for task in (health, cancels):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await service.close()
                await pull_streams.aclose()
                await relay.close()
                await hub.close()
                await models.close()

    app = FastAPI(title="rbee-queen", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.registry = registry
    install_error_handlers(app)
    app.include_router(hives_router)
    app.include_router(downloads_router)
    app.include_router(pulls_router)
    app.include_router(models_router)
    app.include_router(page_router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> QueenHealth:
        hives = registry.all()
        return QueenHealth(
            status="ok",
            orchestrator_id=settings.orchestrator_id,
            hives=len(hives),
            healthy_hives=sum(1 for h in hives if h.healthy),
        )

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(app.state.metrics), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodySizeLimitMiddleware)
    app.add_middleware(TokenAuthMiddleware, token=settings.api_token, open_paths=PUBLIC_PATHS)
    app.add_middleware(CorrelationIdMiddleware)
    return app


def main(argv: list[str] | None = None) -> None:
    run_service("rbee-queen", "rbee queen: hive registry, relay, aggregation", QueenSettings, create_app, argv=argv)


if __name__ == "__main__":
    main()
