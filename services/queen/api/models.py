"""/v1/models: the models on every hive, and deleting or pinning one across hives (README, "The model
store"). Thin on purpose: the inventory answers from memory, the ModelStore fans changes out.

A repo id is `org/repo` or `repo`; the `…/pin` routes come first, as on the hive, so `/v1/models/gpt2/pin`
is gpt2's pin.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.queen.api.deps import ModelsDep
from services.queen.models.targets import checked_repo_id
from shared.limits import COMMIT_PATTERN
from shared.wire.common import error_responses
from shared.wire.models import FleetModels, ModelResults

router = APIRouter(prefix="/v1/models", tags=["models"], responses=error_responses(401, 422))

_CHANGE = error_responses(404)
Hives = Annotated[
    str | None,
    Query(max_length=4096, description="`all`, or hive ids separated by commas; default: every hive holding it"),
]


@router.get("")
async def list_models(models: ModelsDep) -> FleetModels:
    """Models by hives, from what the hives' streams said (no hive is asked now)."""
    return models.fleet()


@router.put("/{repo_id:path}/pin", responses=_CHANGE)
async def pin_model(repo_id: str, models: ModelsDep, hives: Hives = None) -> ModelResults:
    return await models.change(checked_repo_id(repo_id), hives, "PUT", "/pin", {})


@router.delete("/{repo_id:path}/pin", responses=_CHANGE)
async def unpin_model(repo_id: str, models: ModelsDep, hives: Hives = None) -> ModelResults:
    return await models.change(checked_repo_id(repo_id), hives, "DELETE", "/pin", {})


@router.delete("/{repo_id:path}", responses=_CHANGE)
async def delete_model(
    repo_id: str,
    models: ModelsDep,
    hives: Hives = None,
    revision: Annotated[str | None, Query(pattern=COMMIT_PATTERN)] = None,
    force: bool = False,
) -> ModelResults:
    """The model (or one revision of it) deleted on each hive: a result per hive."""
    params = {"revision": revision} if revision else {}
    if force:
        params["force"] = "true"
    return await models.change(checked_repo_id(repo_id), hives, "DELETE", "", params)
