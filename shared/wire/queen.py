"""The queen's `/v1` JSON bodies (README, "The queen's API" and "Fleet pulls")."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from shared.limits import (
    HIVE_ID_PATTERN,
    HIVE_URL_PATTERN,
    MAX_PULL_HIVES,
    MAX_REF_LENGTH,
    MAX_URL_LENGTH,
    SHA256_PATTERN,
)
from shared.wire.common import REQUEST, MaxBps, Patterns
from shared.wire.hive import DownloadStateBody

__all__ = [
    "DownloadList",
    "HiveBody",
    "HiveList",
    "PullBody",
    "PullHiveBody",
    "PullList",
    "PullStarted",
    "QueenHealth",
    "QueenStartDownload",
    "QueenStartPull",
    "RegisterHive",
]


# -- requests --------------------------------------------------------------------------------


class QueenStartDownload(BaseModel):
    """POST /v1/downloads: what the hive's POST /v2/downloads takes from a user, and the hive."""

    model_config = REQUEST

    model_ref: str = Field(min_length=1, max_length=MAX_REF_LENGTH)
    hive_id: str | None = Field(default=None, pattern=HIVE_ID_PATTERN)
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    max_bps: MaxBps = None
    include: Patterns = None
    exclude: Patterns = None


HiveId = Annotated[str, Field(pattern=HIVE_ID_PATTERN)]


class QueenStartPull(BaseModel):
    """POST /v1/pulls: one model onto many hives, one commit for all."""

    model_config = REQUEST

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

    model_config = REQUEST

    hive_id: str = Field(pattern=HIVE_ID_PATTERN)
    url: str = Field(pattern=HIVE_URL_PATTERN, max_length=MAX_URL_LENGTH)


# -- responses -------------------------------------------------------------------------------


class DownloadList(BaseModel):
    """GET /v1/downloads: every hive's downloads, newest first, and the hives that could not be asked."""

    downloads: list[DownloadStateBody]
    unreachable_hives: list[str]


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
    cancel_pending: list[str] = Field(
        default_factory=list,
        description="hives a cancel of this pull has not reached yet (down or not answering): the queen"
        " cancels their part as soon as they answer again",
    )


class PullList(BaseModel):
    """GET /v1/pulls: every pull the hives know of, newest first."""

    pulls: list[PullBody]
    unreachable_hives: list[str]
