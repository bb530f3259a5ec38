"""/v2/settings: the hive's settings that change while it runs (the bandwidth limit)."""

from __future__ import annotations

from fastapi import APIRouter

from services.hive.api.deps import ManagerDep
from shared.wire.common import error_responses
from shared.wire.hive import BandwidthLimit

router = APIRouter(prefix="/v2/settings", tags=["settings"], responses=error_responses(401, 422))


@router.get("/bandwidth")
async def get_bandwidth(manager: ManagerDep) -> BandwidthLimit:
    return BandwidthLimit(bandwidth_limit=manager.throttle.limit)


@router.put("/bandwidth")
async def set_bandwidth(body: BandwidthLimit, manager: ManagerDep) -> BandwidthLimit:
    """Change HIVE_BANDWIDTH_LIMIT while running; takes effect within a second."""
    manager.set_bandwidth_limit(body.bandwidth_limit)
    return BandwidthLimit(bandwidth_limit=manager.throttle.limit)
