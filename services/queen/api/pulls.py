"""/v1/pulls: fleet pulls, one model onto many hives (README, "Fleet pulls"). Thin on purpose."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import structlog
from fastapi import APIRouter, Header, Response
from starlette.background import BackgroundTask

from services.queen.api.deps import PullsDep, PullStreamsDep, SettingsDep
from services.queen.api.sse import event_stream
from services.queen.pulls.streams import PullClient
from shared.errors import ApiError
from shared.limits import PULL_ID_RE
from shared.sse import frame, parse_last_event_id
from shared.wire.common import error_responses
from shared.wire.queen import PullBody, PullList, PullStarted, QueenStartPull

router = APIRouter(prefix="/v1/pulls", tags=["pulls"], responses=error_responses(401, 422))

_ONE = error_responses(404, 503)  # the routes of one pull: unknown, or the hives could not tell


def _checked(pull_id: str) -> str:
    """An id that cannot be a pull's is a 404 here: it never reaches a hive or the logs."""
    if not PULL_ID_RE.fullmatch(pull_id):
        raise ApiError(404, "NOT_FOUND", f"no pull {pull_id[:80]!r}")
    structlog.contextvars.bind_contextvars(pull_id=pull_id)
    return pull_id


@router.post("", status_code=202, responses=error_responses(404, 502, 503, 507))
async def start_pull(body: QueenStartPull, pulls: PullsDep) -> PullStarted:
    """Preflight on every hive (reachable, room, access), then start each hive's part; 202 once all started."""
    pull = await pulls.start(body)
    assert pull.commit is not None
    return PullStarted(pull_id=pull.pull_id, commit=pull.commit, downloads=pull.downloads)


@router.get("")
async def list_pulls(pulls: PullsDep) -> PullList:
    found, unreachable = await pulls.list_pulls()
    return PullList(pulls=found, unreachable_hives=unreachable)


@router.get("/{pull_id}", responses=_ONE)
async def get_pull(pull_id: str, pulls: PullsDep) -> PullBody:
    return await pulls.state(await pulls.find(_checked(pull_id)))


@router.delete("/{pull_id}", responses=_ONE)
async def cancel_pull(pull_id: str, pulls: PullsDep) -> PullBody:
    return await pulls.cancel(await pulls.find(_checked(pull_id)))


@router.get("/{pull_id}/stream", response_model=None, responses=_ONE)
async def stream_pull(
    pull_id: str,
    pulls: PullsDep,
    streams: PullStreamsDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """Every hive's progress with the pull's totals, then one terminal event once every hive has ended."""
    pull = await pulls.find(_checked(pull_id))
    after = parse_last_event_id(last_event_id)
    client = await streams.open(pull)
    if client.feed.ended_for(after):
        client.close()
        return Response(status_code=204)
    return event_stream(_events(client, after or 0), settings, BackgroundTask(client.close))


async def _events(client: PullClient, last: int) -> AsyncIterator[bytes]:
    feed = client.feed
    try:
        while True:
            for event in feed.since(last):
                yield frame(event)
                last = event.id
                if event.is_terminal:
                    return
            await feed.wait_after(last)
    finally:
        client.close()
