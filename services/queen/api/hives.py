"""/v1/hives: the hives this queen knows, and registering one. Thin on purpose."""

from __future__ import annotations

from fastapi import APIRouter, Response

from services.queen.api.deps import ServiceDep
from shared.wire.common import error_responses
from shared.wire.queen import HiveBody, HiveList, RegisterHive

router = APIRouter(prefix="/v1", tags=["queen"], responses=error_responses(401, 422))


@router.get("/hives")
async def list_hives(service: ServiceDep) -> HiveList:
    return HiveList(hives=[HiveBody.model_validate(h.to_dict()) for h in service.registry.all()])


@router.post("/hives", status_code=201, responses={200: {"model": HiveBody, "description": "a known hive, refreshed"}})
async def register_hive(body: RegisterHive, response: Response, service: ServiceDep) -> HiveBody:
    known = service.registry.get(body.hive_id) is not None
    hive, _ = service.register(body.hive_id, body.url)
    response.status_code = 200 if known else 201
    return HiveBody.model_validate(hive.to_dict())
