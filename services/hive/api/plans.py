"""/v2/plans: what pulling a whole model would take on this hive, nothing fetched (a fleet pull's preflight)."""

from __future__ import annotations

from fastapi import APIRouter

from services.hive.api.deps import ManagerDep, SettingsDep
from services.hive.downloads.manager import InvalidModelRef
from services.hive.net.errors import DownloadError
from shared.errors import ApiError
from shared.models import ErrorCode
from shared.wire.common import ErrorDetail, error_responses
from shared.wire.hive import PlanBody, PlannedFile, PlanRequest

router = APIRouter(prefix="/v2/plans", tags=["peers"], responses=error_responses(401, 422))


_PLAN_STATUS: dict[str, int] = {
    ErrorCode.DOWNLOAD_FAILED: 502,  # the hub could not be asked
    ErrorCode.DOWNLOAD_TIMEOUT: 502,
    ErrorCode.REPO_NOT_FOUND: 404,
    ErrorCode.REVISION_NOT_FOUND: 404,
    ErrorCode.NOT_FOUND: 404,
}


@router.post("", responses=error_responses(404, 502))
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
