"""/v2/blobs: the blobs this hive serves its peers, by digest (README, "Fleet pulls"). Thin: what a
blob is and how a partial is followed are `services.hive.peers.blobs`'."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response
from fastapi.responses import JSONResponse, StreamingResponse

from services.hive.api.deps import ManagerDep, ServeThrottleDep, SettingsDep, StatsDep
from services.hive.peers.blobs import BadRange, find_blob, follow, parse_range, safe_prefix
from services.hive.peers.serve import BlobFileResponse
from shared.errors import ApiError, error_body
from shared.wire.common import error_responses

router = APIRouter(prefix="/v2/blobs", tags=["peers"], responses=error_responses(401, 404))


@router.get("/{digest}", response_class=Response, responses={206: {"description": "the range asked for"}})
async def get_blob(
    digest: str,
    settings: SettingsDep,
    manager: ManagerDep,
    throttle: ServeThrottleDep,
    stats: StatsDep,
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
    status = 206 if span is not None else 200
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{total}"
    if view.blob is not None:
        try:
            file = view.blob.open("rb", buffering=0)  # (kept open: a blob removed meanwhile is still sent whole)
        except OSError:
            raise ApiError(404, "NOT_FOUND", f"no blob {digest[:80]!r} on this hive") from None
        return BlobFileResponse(file, start, stop, status_code=status, headers=headers, throttle=throttle, stats=stats)
    body = follow(view, start, stop, lambda: find_blob(models, view.digest), sent=stats.served, take=throttle.take)
    return StreamingResponse(body, status_code=status, headers=headers, media_type="application/octet-stream")
