"""The hive's `/v2` JSON bodies (README, "The hive's API"), and where its streams are.

The queen sends `StartDownload` and `PlanRequest` to hives and passes their download states on.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from shared.limits import (
    COMMIT_PATTERN,
    DIGEST_PATTERN,
    HIVE_URL_PATTERN,
    MAX_BPS,
    MAX_PULL_FILES,
    MAX_REF_LENGTH,
    MAX_URL_LENGTH,
    PULL_ID_PATTERN,
    SHA256_PATTERN,
)
from shared.models import DownloadStatus
from shared.wire.common import REQUEST, ErrorDetail, MaxBps, Patterns

__all__ = [
    "BandwidthLimit",
    "BandwidthState",
    "DownloadStateBody",
    "Forgotten",
    "HiveDownloadList",
    "HiveHealth",
    "ModelFileBody",
    "NicState",
    "PlanBody",
    "PlanRequest",
    "PlannedFile",
    "RuntimeSettings",
    "StartDownload",
    "hive_stream_url",
]


def hive_stream_url(hive_url: str, download_id: str | None = None) -> str:
    """A hive's SSE route: one download's stream, or (no id) the stream of every download."""
    return f"{hive_url}/v2/downloads/{download_id}/stream" if download_id else f"{hive_url}/v2/downloads/stream"


# -- requests --------------------------------------------------------------------------------

Digest = Annotated[str, Field(pattern=DIGEST_PATTERN)]
PeerUrl = Annotated[str, Field(pattern=HIVE_URL_PATTERN, max_length=MAX_URL_LENGTH)]


class StartDownload(BaseModel):
    """POST /v2/downloads."""

    model_config = REQUEST

    model_ref: str = Field(min_length=1, max_length=MAX_REF_LENGTH)
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    max_bps: MaxBps = None
    include: Patterns = None
    exclude: Patterns = None
    # a fleet pull (the queen's): the commit every hive takes, where each blob can come from, and
    # which blobs this hive fetches from the hub at once (README, "Fleet pulls")
    commit: str | None = Field(default=None, pattern=COMMIT_PATTERN)
    sources: dict[Digest, list[PeerUrl]] | None = Field(default=None, max_length=MAX_PULL_FILES)
    hub_first: list[Digest] | None = Field(default=None, max_length=MAX_PULL_FILES)
    pull_id: str | None = Field(default=None, pattern=PULL_ID_PATTERN)


class PlanRequest(BaseModel):
    """POST /v2/plans: what pulling a whole model would take on this hive."""

    model_config = REQUEST

    model_ref: str = Field(min_length=1, max_length=MAX_REF_LENGTH)
    include: Patterns = None
    exclude: Patterns = None
    commit: str | None = Field(default=None, pattern=COMMIT_PATTERN)


class BandwidthLimit(BaseModel):
    """PUT /v2/settings/bandwidth: the limit, the schedule, or both (README, "Bandwidth")."""

    model_config = REQUEST

    bandwidth_limit: StrictInt | None = Field(
        default=None, ge=0, le=MAX_BPS, description="bytes/s across all downloads; 0 = unlimited"
    )
    schedule: str | None = Field(
        default=None, max_length=4096, description='time windows, "22:00-06:00=0,06:00-22:00=50MB"; null or "" = none'
    )


class NicState(BaseModel):
    """The shared interface (HIVE_NIC) as the hive sees it; the numbers only while it is in use."""

    name: str
    active: bool
    error: str | None = Field(description="why the interface is not in use")
    budget: int | None = None
    floor: int | None = None
    other_rx_bps: int | None = Field(default=None, description="what the rest of the node receives, smoothed")
    other_tx_bps: int | None = Field(default=None, description="what the rest of the node sends, smoothed")
    download_bps: int | None = Field(default=None, description="the cap this leaves the hive's downloads")
    upload_bps: int | None = Field(default=None, description="the cap this leaves its peer uploads")


class BandwidthState(BaseModel):
    """GET and PUT /v2/settings/bandwidth: the settings and the caps in force now."""

    bandwidth_limit: int
    schedule: str | None
    timezone: str = Field(description="the schedule's zone")
    window: str | None = Field(description="the schedule's window in force, 06:00-22:00; null between windows")
    window_bps: int | None = Field(description="that window's cap, bytes/s (0 = none)")
    until: str | None = Field(description="RFC 3339: when the window in force ends or the next begins")
    effective_bps: int = Field(description="the cap all downloads share now, bytes/s; 0 = none")
    reason: str | None = Field(description='which cap that is: "limit", "schedule" or "nic"')
    upload_bps: int = Field(description="the cap on peer uploads now, bytes/s; 0 = none")
    nic: NicState | None


class RuntimeSettings(BaseModel):
    """GET /v2/settings: the settings that change while the hive runs."""

    bandwidth: BandwidthState


# -- responses -------------------------------------------------------------------------------


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
    capped_bps: int | None = Field(default=None, description="while running under a bandwidth cap: that cap, bytes/s")
    cap_reason: str | None = Field(default=None, description='which cap: "limit", "schedule", "nic" or "max_bps"')
    hive_id: str


class HiveDownloadList(BaseModel):
    """GET /v2/downloads."""

    hive_id: str
    downloads: list[DownloadStateBody]


class Forgotten(BaseModel):
    """DELETE /v2/downloads/{id}/history."""

    download_id: str
    forgotten: bool
    file_deleted: bool


class HiveHealth(BaseModel):
    """GET /healthz on a hive."""

    status: str
    hive_id: str
    active_downloads: int
