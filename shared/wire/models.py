"""The model store's JSON bodies: the hive's `/v2/models` and the queen's `/v1/models` (README,
"The model store"), and the `model` event both carry on their aggregated streams.

Sizes are counted as huggingface_hub's `scan_cache_dir` counts them: a blob once per repo however
many revisions link it, a revision's size the sum of its distinct blobs.
"""

from __future__ import annotations

import enum

from pydantic import BaseModel, Field

__all__ = [
    "DiskBody",
    "FleetHolder",
    "FleetModel",
    "FleetModels",
    "HiveDisk",
    "HiveModelResult",
    "HiveModels",
    "ModelAction",
    "ModelBody",
    "ModelEventBody",
    "ModelResults",
    "RevisionBody",
]


class ModelAction(enum.StrEnum):
    """What a `model` event says happened to a model in a hive's cache."""

    ADDED = "added"
    DELETED = "deleted"
    EVICTED = "evicted"
    PINNED = "pinned"
    UNPINNED = "unpinned"


# -- the hive (/v2/models) -------------------------------------------------------------------


class RevisionBody(BaseModel):
    commit: str
    refs: list[str] = Field(description="the refs (branch or tag names) that name this commit, sorted")
    files: int = Field(description="files in the snapshot")
    size_on_disk: int = Field(description="bytes of its distinct blobs")
    complete: bool = Field(description="every file of the commit is in place (as far as the hive knows)")


class ModelBody(BaseModel):
    repo_id: str = Field(description="`org/repo`, or `repo` for one without a namespace")
    repo_type: str = Field(default="model")
    size_on_disk: int = Field(description="bytes of the repo's blobs, each counted once")
    revisions: list[RevisionBody]
    last_used: str | None = Field(description="RFC 3339: a download, a join or POST …/used")
    pinned: bool
    in_use: bool = Field(description="a download of it is running on this hive")


class DiskBody(BaseModel):
    used: int = Field(description="bytes of the hive's Hugging Face cache")
    budget: int | None = Field(description="HIVE_CACHE_MAX_BYTES in bytes; null = none")
    free: int = Field(description="bytes free on the cache's filesystem")


class HiveModels(BaseModel):
    """GET /v2/models."""

    models: list[ModelBody]
    disk: DiskBody
    hive_id: str


class ModelEventBody(BaseModel):
    """The `model` event's payload on the hive's and the queen's aggregated streams."""

    action: ModelAction
    repo_id: str
    commit: str | None = None
    size_on_disk: int = 0
    hive_id: str


# -- the queen (/v1/models) ------------------------------------------------------------------


class FleetHolder(BaseModel):
    """One hive's copy of one model."""

    hive_id: str
    commits: list[str]
    complete: bool = Field(description="at least one of its revisions is complete")
    size_on_disk: int
    pinned: bool
    in_use: bool
    last_used: str | None


class FleetModel(BaseModel):
    repo_id: str
    hives: list[FleetHolder]


class HiveDisk(DiskBody):
    hive_id: str


class FleetModels(BaseModel):
    """GET /v1/models: models by hives."""

    models: list[FleetModel]
    hives: list[HiveDisk]
    unreachable_hives: list[str]


class HiveModelResult(BaseModel):
    """One hive's answer to a fleet-wide delete, pin or unpin."""

    hive_id: str
    ok: bool
    status: int | None = Field(description="the hive's HTTP status; null if it could not be reached")
    error: dict[str, str] | None = None


class ModelResults(BaseModel):
    """DELETE /v1/models/{org}/{repo} and PUT / DELETE …/pin."""

    repo_id: str
    results: list[HiveModelResult]
