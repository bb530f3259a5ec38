"""/v2/downloads: HTTP <-> DownloadManager / DownloadTracker. Thin on purpose."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Response
from fastapi.responses import JSONResponse, StreamingResponse
from sse_starlette import EventSourceResponse

from services.hive.blobs import BadRange, find_blob, follow, parse_range, safe_prefix
from services.hive.deps import ManagerDep, SettingsDep, TrackerDep
from services.hive.manager import InvalidModelRef, NotCancellable, PullPart, StillActive
from services.hive.tracker import DownloadTracker, StreamDecision
from services.hive.transfer import DownloadError
from shared.errors import ApiError, error_body
from shared.limits import DOWNLOAD_ID_RE
from shared.models import DownloadState, DownloadStatus, ErrorCode
from shared.sse import frame, parse_last_event_id
from shared.wire.common import ErrorDetail, error_responses
from shared.wire.hive import (
    BandwidthLimit,
    DownloadStateBody,
    Forgotten,
    HiveDownloadList,
    ModelFileBody,
    PlanBody,
    PlannedFile,
    PlanRequest,
    StartDownload,
)

router = APIRouter(prefix="/v2/downloads", tags=["downloads"], responses=error_responses(401, 422))
settings_router = APIRouter(prefix="/v2/settings", tags=["settings"], responses=error_responses(401, 422))
blobs_router = APIRouter(prefix="/v2/blobs", tags=["peers"], responses=error_responses(401, 404))
plans_router = APIRouter(prefix="/v2/plans", tags=["peers"], responses=error_responses(401, 422))

_ONE = error_responses(404)  # the routes of one download
_SAME_FILE: dict[int | str, dict[str, Any]] = {
    200: {"model": DownloadStateBody, "description": "the active download of the same file"}
}


def state_json(state: DownloadState, hive_id: str) -> dict[str, Any]:
    return {**state.to_dict(), "hive_id": hive_id}


def state_body(state: DownloadState, hive_id: str) -> DownloadStateBody:
    return DownloadStateBody.model_validate(state_json(state, hive_id))


def _not_found(download_id: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"no download {download_id[:80]!r} on this hive")


def _checked(download_id: str) -> str:
    """Refuse an id that cannot be one of ours (404) before it reaches the manager, tracker or store."""
    if not DOWNLOAD_ID_RE.fullmatch(download_id):
        raise _not_found(download_id)
    structlog.contextvars.bind_contextvars(download_id=download_id)  # this request's log lines
    return download_id


def _known(manager_state: DownloadState | None, download_id: str) -> DownloadState:
    if manager_state is None:
        raise _not_found(download_id)
    return manager_state


def _sse(stream: AsyncIterator[bytes], keepalive: float) -> EventSourceResponse:
    return EventSourceResponse(stream, ping=keepalive, send_timeout=60, headers={"Cache-Control": "no-store"})


@router.post("", status_code=202, responses=_SAME_FILE)
async def start_download(
    body: StartDownload, response: Response, manager: ManagerDep, settings: SettingsDep
) -> DownloadStateBody:
    try:
        pull = None
        if body.commit or body.sources or body.hub_first or body.pull_id:
            pull = PullPart(
                body.commit,
                {d.lower(): tuple(urls) for d, urls in (body.sources or {}).items()},
                frozenset(d.lower() for d in body.hub_first or ()),
                body.pull_id,
            )
        state, created = await manager.start(
            body.model_ref, body.sha256, body.max_bps, body.include, body.exclude, pull
        )
    except InvalidModelRef as exc:
        raise ApiError(422, exc.code, str(exc)) from None
    response.status_code = 202 if created else 200
    return state_body(state, settings.id)


_PLAN_STATUS: dict[str, int] = {
    ErrorCode.DOWNLOAD_FAILED: 502,  # the hub could not be asked
    ErrorCode.DOWNLOAD_TIMEOUT: 502,
    ErrorCode.REPO_NOT_FOUND: 404,
    ErrorCode.REVISION_NOT_FOUND: 404,
    ErrorCode.NOT_FOUND: 404,
}


@plans_router.post("", responses=error_responses(404, 502))
async def plan_model(body: PlanRequest, manager: ManagerDep, settings: SettingsDep) -> PlanBody:
    """What pulling a whole model would take on this hive, nothing fetched (a fleet pull's preflight)."""
    try:
        report = await manager.plan(body.model_ref, body.include, body.exclude, body.commit)
    except InvalidModelRef as exc:
        raise ApiError(422, exc.code, str(exc)) from None
    except DownloadError as exc:
        status = _PLAN_STATUS.get(exc.code, 422)
        raise ApiError(status, exc.code, exc.message) from None
    refused = report.refused
    return PlanBody(
        model_ref=body.model_ref,
        commit=report.commit,
        files=[
            PlannedFile(path=f.path, size=f.size, digest=f.digest, present=f.digest in report.present)
            for f in report.files
        ],
        total_bytes=sum(f.size for f in report.files),
        needed_bytes=report.needed_bytes,
        free_bytes=report.free_bytes,
        fits=report.needed_bytes <= report.free_bytes,
        access_error=None if refused is None else ErrorDetail(code=refused.code, message=refused.message),
        hive_id=settings.id,
    )


@router.get("")
async def list_downloads(
    manager: ManagerDep, settings: SettingsDep, status: DownloadStatus | None = None
) -> HiveDownloadList:
    states = manager.list_downloads(status)
    return HiveDownloadList(hive_id=settings.id, downloads=[state_body(s, settings.id) for s in states])


@router.get("/stream", response_model=None)
async def stream_all(tracker: TrackerDep, settings: SettingsDep) -> EventSourceResponse:
    async def events() -> AsyncIterator[bytes]:
        sub = tracker.subscribe(None)
        try:
            extra = {"hive_id": settings.id}
            while batch := await sub.next_batch():
                # one write for what piled up (a burst of downloads' events), not one per event
                yield b"".join(frame(event, extra) for event in batch)
        finally:
            tracker.unsubscribe(sub)

    return _sse(events(), settings.keepalive_secs)


@router.get("/{download_id}", responses=_ONE)
async def get_download(download_id: str, manager: ManagerDep, settings: SettingsDep) -> DownloadStateBody:
    _checked(download_id)
    body = state_body(_known(manager.get(download_id), download_id), settings.id)
    if (files := manager.files(download_id)) is not None:
        body.files = [ModelFileBody.model_validate(f) for f in files]
    return body


@router.delete("/{download_id}", responses=error_responses(404, 409))
async def cancel_download(download_id: str, manager: ManagerDep, settings: SettingsDep) -> DownloadStateBody:
    if manager.get(_checked(download_id)) is None:
        raise _not_found(download_id)
    try:
        state = await manager.cancel(download_id)
    except NotCancellable as exc:
        raise ApiError(409, "ALREADY_FINISHED", str(exc), state=state_json(exc.state, settings.id)) from None
    return state_body(state, settings.id)


@router.delete("/{download_id}/history", responses=error_responses(404, 409))
async def forget_download(download_id: str, manager: ManagerDep, delete_file: bool = False) -> Forgotten:
    """Remove a finished download from the history; the model file stays unless delete_file=true."""
    if manager.get(_checked(download_id)) is None:
        raise _not_found(download_id)
    try:
        deleted = manager.forget(download_id, delete_file)
    except StillActive as exc:
        raise ApiError(409, "STILL_ACTIVE", str(exc)) from None
    return Forgotten(download_id=download_id, forgotten=True, file_deleted=deleted)


@settings_router.get("/bandwidth")
async def get_bandwidth(manager: ManagerDep) -> BandwidthLimit:
    return BandwidthLimit(bandwidth_limit=manager.throttle.limit)


@settings_router.put("/bandwidth")
async def set_bandwidth(body: BandwidthLimit, manager: ManagerDep) -> BandwidthLimit:
    """Change HIVE_BANDWIDTH_LIMIT while running; takes effect within a second."""
    manager.set_bandwidth_limit(body.bandwidth_limit)
    return BandwidthLimit(bandwidth_limit=manager.throttle.limit)


@router.get("/{download_id}/stream", response_model=None, responses=_ONE)
async def stream_download(
    download_id: str,
    tracker: TrackerDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    after = parse_last_event_id(last_event_id)
    decision = tracker.stream_decision(_checked(download_id), after)
    if decision == StreamDecision.NOT_FOUND:
        raise _not_found(download_id)
    if decision == StreamDecision.ENDED:
        return Response(status_code=204)
    return _sse(_one_download(tracker, download_id, after, settings.id), settings.keepalive_secs)


async def _one_download(
    tracker: DownloadTracker, download_id: str, after: int | None, hive_id: str
) -> AsyncIterator[bytes]:
    async for event in tracker.stream_progress(download_id, after):
        yield frame(event, {"hive_id": hive_id})


@blobs_router.get("/{digest}", response_class=Response, responses={206: {"description": "the range asked for"}})
async def get_blob(
    digest: str,
    settings: SettingsDep,
    manager: ManagerDep,
    range_: Annotated[str | None, Header(alias="range")] = None,
) -> Response:
    """A blob this hive holds, or the part of one it is downloading that is on disk, by digest (for
    peers in a fleet pull; README, "Fleet pulls"). The body follows a partial as it grows."""
    models = settings.models_dir.resolve()
    view = find_blob(models, digest.lower())
    if view is None or view.total is None:
        if view is None and not manager.planned(digest.lower()):
            raise ApiError(404, "NOT_FOUND", f"no blob {digest[:80]!r} on this hive")
        return JSONResponse(  # a download here will fetch it: a peer asks again
            error_body("NOT_READY", "this hive has not begun the blob yet"),
            status_code=503,
            headers={"Retry-After": "1", "X-Rbee-Blob-State": "planned"},
        )
    total = view.total
    try:
        span = parse_range(range_, total)
    except BadRange:
        return JSONResponse(
            error_body("RANGE_NOT_SATISFIABLE", f"serves one range within the blob's {total} bytes"),
            status_code=416,
            headers={"Content-Range": f"bytes */{total}"},
        )
    start, stop = span if span is not None else (0, total)
    headers = {
        "ETag": f'"{view.digest}"',
        "Accept-Ranges": "bytes",
        "Content-Length": str(stop - start),
        "X-Rbee-Blob-State": "complete" if view.blob is not None else "partial",
        "X-Rbee-Available": str(total if view.blob is not None else safe_prefix(view.partial) if view.partial else 0),
        "Cache-Control": "no-store",
    }
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{total}"
    body = follow(view, start, stop, lambda: find_blob(models, view.digest))
    return StreamingResponse(
        body, status_code=206 if span is not None else 200, headers=headers, media_type="application/octet-stream"
    )
