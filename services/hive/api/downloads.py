"""/v2/downloads: HTTP <-> DownloadManager / DownloadTracker. Thin on purpose."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Response
from sse_starlette import EventSourceResponse

from services.hive.api.deps import ManagerDep, ModelStoreDep, SettingsDep, TrackerDep
from services.hive.downloads.manager import InvalidModelRef, NotCancellable, StillActive
from services.hive.peers.pull_part import PullPart
from services.hive.store.watch import repo_of
from services.hive.tracker.tracker import DownloadTracker, StreamDecision
from shared.errors import ApiError
from shared.limits import DOWNLOAD_ID_RE
from shared.models import DownloadState, DownloadStatus
from shared.sse import frame, parse_last_event_id
from shared.wire.common import error_responses
from shared.wire.hive import DownloadStateBody, Forgotten, HiveDownloadList, ModelFileBody, StartDownload

router = APIRouter(prefix="/v2/downloads", tags=["downloads"], responses=error_responses(401, 422))

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
    body: StartDownload, response: Response, manager: ManagerDep, settings: SettingsDep, store: ModelStoreDep
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
    if not created and (repo := repo_of(state.model_ref, settings.hf_endpoint)) is not None:
        store.mark_used(repo)  # a join uses the model too (a new download marks it itself: store/watch.py)
    return state_body(state, settings.id)


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
