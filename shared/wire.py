"""The JSON bodies of the hive's `/v2` and the queen's `/v1` routes, and where a hive's streams are.

Request bodies are validated with the shared patterns and limits (`shared/limits.py`); response
bodies are the fields the routes have always sent, in that order, so `/openapi.json` documents them
(README, "The hive's API" and "The queen's API"). A download state allows extra fields: the queen
passes on what its hive sent, and may only add to it. Error bodies are `ErrorBody` (README, "Errors").
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.limits import (
    COMMIT_PATTERN,
    DIGEST_PATTERN,
    HIVE_ID_PATTERN,
    HIVE_URL_PATTERN,
    MAX_BPS,
    MAX_PATTERN_LENGTH,
    MAX_PATTERNS,
    MAX_PULL_FILES,
    MAX_PULL_HIVES,
    MAX_REF_LENGTH,
    MAX_URL_LENGTH,
    PULL_ID_PATTERN,
    SHA256_PATTERN,
)
from shared.models import DownloadStatus

__all__ = [
    "BandwidthLimit",
    "DownloadList",
    "DownloadStateBody",
    "ErrorBody",
    "ErrorDetail",
    "Forgotten",
    "HiveBody",
    "HiveDownloadList",
    "HiveHealth",
    "HiveList",
    "ModelFileBody",
    "PlanBody",
    "PlanRequest",
    "PlannedFile",
    "PullBody",
    "PullHiveBody",
    "PullList",
    "PullStarted",
    "QueenHealth",
    "QueenStartDownload",
    "QueenStartPull",
    "RegisterHive",
    "StartDownload",
    "error_responses",
    "hive_stream_url",
]


def hive_stream_url(hive_url: str, download_id: str | None = None) -> str:
    """A hive's SSE route: one download's stream, or (no id) the stream of every download."""
    return f"{hive_url}/v2/downloads/{download_id}/stream" if download_id else f"{hive_url}/v2/downloads/stream"


# -- requests --------------------------------------------------------------------------------

Digest = Annotated[str, Field(pattern=DIGEST_PATTERN)]
PeerUrl = Annotated[str, Field(pattern=HIVE_URL_PATTERN, max_length=MAX_URL_LENGTH)]
Pattern = Annotated[str, Field(min_length=1, max_length=MAX_PATTERN_LENGTH, pattern=r"^[^\x00-\x1f\x7f]+$")]
Patterns = Annotated[
    list[Pattern] | None,
    Field(
        default=None,
        max_length=MAX_PATTERNS,
        description="globs with the meaning of huggingface_hub's allow_patterns / ignore_patterns;"
        " whole-model refs only",
    ),
]


class StartDownload(BaseModel):
    """POST /v2/downloads."""

    model_config = ConfigDict(protected_namespaces=(), extra="ignore")

    model_ref: str = Field(min_length=1, max_length=MAX_REF_LENGTH)
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    max_bps: int | None = Field(default=None, ge=1, le=MAX_BPS, description="cap for this download, bytes/s")
    include: Patterns = None
    exclude: Patterns = None
    # a fleet pull (the queen's): the commit every hive takes, where each blob can come from, and
    # which blobs this hive fetches from the hub at once (README, "Fleet pulls")
    commit: str | None = Field(default=None, pattern=COMMIT_PATTERN)
    sources: dict[Digest, list[PeerUrl]] | None = Field(default=None, max_length=MAX_PULL_FILES)
    hub_first: list[Digest] | None = Field(default=None, max_length=MAX_PULL_FILES)
    pull_id: str | None = Field(default=None, pattern=PULL_ID_PATTERN)


class ErrorDetail(BaseModel):
    """A stable code and a human message; some errors add fields (`hive_id`, `state`, ...)."""

    model_config = ConfigDict(extra="allow")

    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class PlanRequest(BaseModel):
    """POST /v2/plans: what pulling a whole model would take on this hive."""

    model_config = ConfigDict(protected_namespaces=(), extra="ignore")

    model_ref: str = Field(min_length=1, max_length=MAX_REF_LENGTH)
    include: Patterns = None
    exclude: Patterns = None
    commit: str | None = Field(default=None, pattern=COMMIT_PATTERN)


class PlannedFile(BaseModel):
    path: str
    size: int
    digest: str
    present: bool = Field(description="its blob is already in this hive's cache")


class PlanBody(BaseModel):
    """POST /v2/plans: the commit and files, what is missing here and whether it fits, and whether
    the hub lets this hive's token read the repository (`access_error`, for a gated one)."""

    model_ref: str
    commit: str
    files: list[PlannedFile]
    total_bytes: int
    needed_bytes: int
    free_bytes: int
    fits: bool
    access_error: ErrorDetail | None
    hive_id: str


class QueenStartDownload(BaseModel):
    """POST /v1/downloads."""

    model_config = ConfigDict(protected_namespaces=(), extra="ignore")

    model_ref: str = Field(min_length=1, max_length=MAX_REF_LENGTH)
    hive_id: str | None = Field(default=None, pattern=HIVE_ID_PATTERN)
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    include: Patterns = None
    exclude: Patterns = None


HiveId = Annotated[str, Field(pattern=HIVE_ID_PATTERN)]


class QueenStartPull(BaseModel):
    """POST /v1/pulls: one model onto many hives, one commit for all."""

    model_config = ConfigDict(protected_namespaces=(), extra="ignore")

    model_ref: str = Field(
        min_length=1, max_length=MAX_REF_LENGTH, description="a whole model, hf:{org}/{repo}[@{rev}]"
    )
    hive_ids: Annotated[list[HiveId], Field(min_length=1, max_length=MAX_PULL_HIVES)] | Literal["all"] = Field(
        description='the hives to pull onto, or "all" the queen knows'
    )
    include: Patterns = None
    exclude: Patterns = None


class RegisterHive(BaseModel):
    """POST /v1/hives."""

    hive_id: str = Field(pattern=HIVE_ID_PATTERN)
    url: str = Field(pattern=HIVE_URL_PATTERN, max_length=MAX_URL_LENGTH)


class BandwidthLimit(BaseModel):
    """GET and PUT /v2/settings/bandwidth."""

    bandwidth_limit: int = Field(ge=0, le=MAX_BPS, description="bytes/s across all downloads; 0 = unlimited")


# -- responses -------------------------------------------------------------------------------


class ModelFileBody(BaseModel):
    """One file of a whole-model download (GET of one download)."""

    path: str
    size: int
    bytes: int
    status: str = Field(description="queued, downloading, complete, failed or cancelled")
    source: str | None = Field(default=None, description='where its bytes come from: "hub" or a peer hive')


class DownloadStateBody(BaseModel):
    """One download: `DownloadState.to_dict()` plus the hive's id (README, "Download state")."""

    model_config = ConfigDict(protected_namespaces=(), extra="allow")

    download_id: str
    model_ref: str
    status: DownloadStatus
    bytes_downloaded: int
    total_bytes: int | None
    speed_bps: int
    eta_secs: int | None
    percent: float | None
    started_at: str | None = Field(description="RFC 3339")
    completed_at: str | None = Field(description="RFC 3339")
    error: str | None
    error_code: str | None
    path: str | None
    sha256: str | None
    queue_position: int | None
    commit: str | None = Field(default=None, description="for hf: refs, the commit the hub named")
    files_total: int | None = Field(default=None, description="a whole model: how many files it takes")
    files_done: int | None = Field(default=None, description="a whole model: how many of them are in place")
    warning: str | None = Field(default=None, description="e.g. the hub could not be asked and the disk was trusted")
    files: list[ModelFileBody] | None = Field(default=None, description="a whole model, in GET of one download")
    hive_id: str


class HiveDownloadList(BaseModel):
    """GET /v2/downloads."""

    hive_id: str
    downloads: list[DownloadStateBody]


class DownloadList(BaseModel):
    """GET /v1/downloads: every hive's downloads, newest first, and the hives that could not be asked."""

    downloads: list[DownloadStateBody]
    unreachable_hives: list[str]


class Forgotten(BaseModel):
    """DELETE /v2/downloads/{id}/history."""

    download_id: str
    forgotten: bool
    file_deleted: bool


class HiveBody(BaseModel):
    """One hive as the queen knows it (`HiveInfo.to_dict()`)."""

    hive_id: str
    url: str
    health: str = Field(description="unknown, healthy or unhealthy")
    healthy: bool
    active_downloads: int
    source: str = Field(description="static (QUEEN_HIVES) or registered (POST /v1/hives)")
    last_checked: str | None = Field(description="RFC 3339")
    last_registered: str | None = Field(description="RFC 3339")
    last_error: str | None


class HiveList(BaseModel):
    """GET /v1/hives."""

    hives: list[HiveBody]


class HiveHealth(BaseModel):
    """GET /healthz on a hive."""

    status: str
    hive_id: str
    active_downloads: int


class QueenHealth(BaseModel):
    """GET /healthz on the queen."""

    status: str
    orchestrator_id: str
    hives: int
    healthy_hives: int


class PullStarted(BaseModel):
    """POST /v1/pulls: the pull, the commit every hive takes, and each hive's download."""

    pull_id: str
    commit: str
    downloads: dict[str, str] = Field(description="hive_id -> download_id")


class PullHiveBody(BaseModel):
    """One hive's part of a pull."""

    hive_id: str
    download_id: str
    status: str = Field(description="the download's status, or unknown when the hive could not be asked")
    bytes: int
    total: int | None
    percent: float | None
    speed_bps: int
    eta_secs: int | None = None
    files_total: int | None = None
    files_done: int | None = None
    error: str | None = None
    error_code: str | None = None
    sources: dict[str, int] = Field(
        default_factory=dict,
        description='bytes by where they came from: "hub", a peer hive\'s URL, or "cache" (already here,'
        " or a source the hive no longer remembers)",
    )


class PullBody(BaseModel):
    """GET /v1/pulls/{id}: every hive's part and the pull's totals."""

    pull_id: str
    model_ref: str | None
    commit: str | None
    status: str = Field(description="running, complete, failed or cancelled")
    bytes: int
    total: int | None
    percent: float | None
    speed_bps: int
    hives: list[PullHiveBody]
    failed_hives: list[str]
    unreachable_hives: list[str]


class PullList(BaseModel):
    """GET /v1/pulls: every pull the hives know of, newest first."""

    pulls: list[PullBody]
    unreachable_hives: list[str]


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all with the contract's error body."""
    return {status: {"model": ErrorBody} for status in statuses}
