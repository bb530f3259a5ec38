"""/v2/settings: the hive's settings that change while it runs (the bandwidth caps, README "Bandwidth")."""

from __future__ import annotations

from fastapi import APIRouter

from services.hive.api.deps import GovernorDep
from services.hive.bandwidth.schedule import ScheduleError
from shared.errors import ApiError
from shared.wire.common import error_responses
from shared.wire.hive import BandwidthLimit, BandwidthState, RuntimeSettings

router = APIRouter(prefix="/v2/settings", tags=["settings"], responses=error_responses(401, 422))


@router.get("")
async def get_settings(governor: GovernorDep) -> RuntimeSettings:
    """Every setting that changes while the hive runs, with what is in force now."""
    return RuntimeSettings(bandwidth=BandwidthState.model_validate(governor.state()))


@router.get("/bandwidth")
async def get_bandwidth(governor: GovernorDep) -> BandwidthState:
    return BandwidthState.model_validate(governor.state())


@router.put("/bandwidth")
async def set_bandwidth(body: BandwidthLimit, governor: GovernorDep) -> BandwidthState:
    """Change HIVE_BANDWIDTH_LIMIT and/or HIVE_BANDWIDTH_SCHEDULE while running (a field left out stays
    as it is); running downloads follow within a second. A bad schedule changes nothing."""
    given = body.model_fields_set
    if not given & {"bandwidth_limit", "schedule"}:
        raise ApiError(422, "INVALID_REQUEST", "give bandwidth_limit, schedule or both")
    if "bandwidth_limit" in given and body.bandwidth_limit is None:
        raise ApiError(422, "INVALID_REQUEST", "bandwidth_limit: bytes/s, 0 for none (not null)")
    if "schedule" in given:
        try:
            governor.set_schedule(body.schedule)
        except ScheduleError as e:
            raise ApiError(422, "INVALID_REQUEST", f"schedule: {e}") from e
    if body.bandwidth_limit is not None:
        governor.set_limit(body.bandwidth_limit)
    governor.apply()
    return BandwidthState.model_validate(governor.state())
