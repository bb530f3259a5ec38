"""/v1/downloads: downloads across hives, and their relayed streams. Thin on purpose."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import structlog
from fastapi import APIRouter, Header, Response
from starlette.background import BackgroundTask

from services.queen.api.deps import HubDep, RelayDep, ServiceDep, SettingsDep
from services.queen.api.sse import event_stream
from services.queen.streams.download_feed import open_feed
from shared.errors import ApiError
from shared.limits import DOWNLOAD_ID_RE
from shared.mailbox import Mailbox
from shared.models import DownloadStatus
from shared.sse import frame, parse_last_event_id
from shared.wire.common import error_responses
from shared.wire.hive import DownloadStateBody, StartDownload
from shared.wire.queen import DownloadList, QueenStartDownload

router = APIRouter(prefix="/v1", tags=["queen"], responses=error_responses(401, 422))

_ONE = error_responses(404, 503)  # the routes of one download: unknown, or its hive unreachable


async def _drain(queue: Mailbox) -> AsyncIterator[bytes]:
    while batch := await queue.next_batch():
        # each event encoded once for every client; what piled up goes out in one write
        yield b"".join(frame(event) for event in batch)


@router.post(
    "/downloads",
    status_code=202,
    responses={
        200: {"model": DownloadStateBody, "description": "the active download of the same file"},
        **error_responses(404, 503),
    },
)
async def start_download(body: QueenStartDownload, response: Response, service: ServiceDep) -> DownloadStateBody:
    request = StartDownload(**body.model_dump(exclude={"hive_id"}))  # every field the hive takes from a user
    status, state = await service.start_download(request, body.hive_id)
    response.status_code = status
    return DownloadStateBody.model_validate(state)


@router.get("/downloads")
async def list_downloads(service: ServiceDep, status: DownloadStatus | None = None) -> DownloadList:
    downloads, unreachable = await service.list_downloads(status.value if status else None)
    states = [DownloadStateBody.model_validate(d) for d in downloads]
    return DownloadList(downloads=states, unreachable_hives=unreachable)


@router.get("/downloads/stream", response_model=None)
async def stream_all(hub: HubDep, settings: SettingsDep) -> Response:
    """Every download on every hive. Last-Event-ID is ignored: a new connection gets the full current state."""
    queue = hub.join()

    async def events() -> AsyncIterator[bytes]:
        try:
            async for sse in _drain(queue):
                yield sse
        finally:
            hub.leave(queue)

    return event_stream(events(), settings, BackgroundTask(hub.leave, queue))


def _checked(download_id: str) -> str:
    """An id that cannot be a hive's is a 404 here: it never reaches a hive URL or the logs."""
    if not DOWNLOAD_ID_RE.fullmatch(download_id):
        raise ApiError(404, "NOT_FOUND", f"no download {download_id[:80]!r}")
    structlog.contextvars.bind_contextvars(download_id=download_id)
    return download_id


@router.get("/downloads/{download_id}", responses=_ONE)
async def get_download(download_id: str, service: ServiceDep) -> DownloadStateBody:
    return DownloadStateBody.model_validate(await service.get_download(_checked(download_id)))


@router.delete("/downloads/{download_id}", responses={**_ONE, **error_responses(409)})
async def cancel_download(download_id: str, service: ServiceDep) -> DownloadStateBody:
    return DownloadStateBody.model_validate(await service.cancel_download(_checked(download_id)))


@router.get("/downloads/{download_id}/stream", response_model=None, responses=_ONE)
async def stream_download(
    download_id: str,
    service: ServiceDep,
    relay: RelayDep,
    hub: HubDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    _checked(download_id)
    after = parse_last_event_id(last_event_id)
    hive = await service.owner_of(download_id)
    try:
        feed = await open_feed(hub, relay, download_id, hive, after)
    except ApiError as exc:
        if exc.status == 404:
            service.registry.forget_download(download_id)
        raise
    if feed is None:
        return Response(status_code=204)

    async def events() -> AsyncIterator[bytes]:
        try:
            async for event in feed.events():
                yield frame(event)
        finally:
            feed.close()

    return event_stream(events(), settings, BackgroundTask(feed.close))
