"""/v2/models: HTTP <-> the ModelStore (README, "The model store"). Thin on purpose.

A repo id is `org/repo` or `repo` (`/v2/models/gpt2`); the `…/pin` and `…/used` routes come first, so
`/v2/models/gpt2/pin` is gpt2's pin, not a model named `gpt2/pin` (GET reaches a model `org/pin`; its
DELETE is `org`'s unpin: such a model is deleted with huggingface_hub).
"""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Query, Response

from services.hive.api.deps import DiskRoomDep, ModelStoreDep, SettingsDep
from services.hive.cache.repo import COMMIT_RE
from services.hive.refs import InvalidModelRef, check_repo_id
from services.hive.store.models import StoreError
from shared.errors import ApiError
from shared.wire.common import error_responses
from shared.wire.models import HiveModels, ModelBody, ModelEventBody

router = APIRouter(prefix="/v2/models", tags=["models"], responses=error_responses(401, 422))

_ONE = error_responses(404)
_CHANGE = error_responses(404, 409)


def _repo(repo_id: str) -> str:
    try:
        check_repo_id(repo_id)
    except InvalidModelRef as exc:
        raise ApiError(422, exc.code, str(exc)) from None
    structlog.contextvars.bind_contextvars(repo_id=repo_id)
    return repo_id


def _api_error(exc: StoreError) -> ApiError:
    return ApiError(exc.status, exc.code, str(exc))


@router.get("", response_model=HiveModels)
async def list_models(store: ModelStoreDep, room: DiskRoomDep, settings: SettingsDep) -> Response:
    """Encoded once, not validated again on the way out: a thousand models' bodies are made when they
    change, not per request (bench `--only models`)."""
    body = HiveModels(models=store.models(), disk=room.disk(), hive_id=settings.id)
    return Response(body.model_dump_json(), media_type="application/json")


async def _pin(store: ModelStoreDep, repo_id: str, pinned: bool) -> ModelBody:
    try:
        return store.pin(repo_id, pinned)
    except StoreError as exc:
        raise _api_error(exc) from None


async def _used(store: ModelStoreDep, repo_id: str) -> ModelBody:
    try:
        return store.use(repo_id)
    except StoreError as exc:
        raise _api_error(exc) from None


async def _get(store: ModelStoreDep, repo_id: str) -> ModelBody:
    try:
        return store.model(repo_id)
    except StoreError as exc:
        raise _api_error(exc) from None


async def _delete(store: ModelStoreDep, repo_id: str, revision: str | None, force: bool) -> ModelEventBody:
    if revision is not None and not COMMIT_RE.fullmatch(revision):
        raise ApiError(422, "INVALID_REQUEST", "revision: a commit, 40 lowercase hex digits")
    try:
        return await store.delete(repo_id, revision, force)
    except StoreError as exc:
        raise _api_error(exc) from None


Revision = Annotated[str | None, Query(description="one commit: its snapshot, refs and the blobs only it uses")]
Force = Annotated[bool, Query(description="delete a pinned model")]


@router.put("/{repo_id:path}/pin", responses=_ONE)
async def pin(repo_id: str, store: ModelStoreDep) -> ModelBody:
    return await _pin(store, _repo(repo_id), True)


@router.delete("/{repo_id:path}/pin", responses=_ONE)
async def unpin(repo_id: str, store: ModelStoreDep) -> ModelBody:
    return await _pin(store, _repo(repo_id), False)


@router.post("/{repo_id:path}/used", responses=_ONE)
async def used(repo_id: str, store: ModelStoreDep) -> ModelBody:
    return await _used(store, _repo(repo_id))


@router.get("/{repo_id:path}", responses=_ONE)
async def get_model(repo_id: str, store: ModelStoreDep) -> ModelBody:
    return await _get(store, _repo(repo_id))


@router.delete("/{repo_id:path}", responses=_CHANGE)
async def delete_model(
    repo_id: str, store: ModelStoreDep, revision: Revision = None, force: Force = False
) -> ModelEventBody:
    return await _delete(store, _repo(repo_id), revision, force)
