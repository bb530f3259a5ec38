"""What a hub download is asked to do and what it answers: the job, its result, its plan, what is present."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.hive.hub.api import RepoFile
from services.hive.net.errors import DownloadError
from services.hive.peers.pull_part import PullPart
from services.hive.refs import HubRef

__all__ = ["HubJob", "HubResult", "PlanReport", "Present"]


@dataclass(frozen=True, slots=True)
class HubJob:
    download_id: str
    hub_ref: HubRef
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    commit: str | None = None  # pinned: a restarted download keeps the commit it started on
    token_origin: str | None = None
    expected_sha256: str | None = None  # one file only
    # a fleet pull: peer hives (base URLs) that have or are getting a blob, by digest, and the blobs
    # this hive fetches from the hub at once; any other blob comes from its peers first
    sources: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    hub_first: frozenset[str] = frozenset()
    pull_id: str | None = None

    @property
    def whole(self) -> bool:
        return self.hub_ref.file is None

    @classmethod
    def of(
        cls,
        download_id: str,
        hub_ref: HubRef,
        include: Sequence[str] | None,
        exclude: Sequence[str] | None,
        pull: PullPart,
        *,
        token_origin: str | None,
        expected_sha256: str | None = None,
        commit: str | None = None,
    ) -> HubJob:
        """A job for `hub_ref` with a file selection, as one hive's part of a fleet pull when `pull`
        says so; `commit` (a restarted download's) wins over the pull's."""
        return cls(
            download_id,
            hub_ref,
            None if include is None else tuple(include),
            None if exclude is None else tuple(exclude),
            commit=commit or pull.commit,
            token_origin=token_origin,
            expected_sha256=expected_sha256,
            sources=pull.sources,
            hub_first=pull.hub_first,
            pull_id=pull.pull_id,
        )


@dataclass(frozen=True, slots=True)
class HubResult:
    path: Path  # the snapshot directory of a model, the snapshot file of one file
    commit: str
    sha256: str | None  # one file only
    files: int


@dataclass(frozen=True, slots=True)
class PlanReport:
    """What a download of a model would take on this hive (`POST /v2/plans`): the commit and files,
    what is still missing and whether it fits, and whether the hub lets this hive read the repo."""

    commit: str
    files: list[RepoFile]
    needed_bytes: int  # the bytes not yet in the cache or a partial
    present: frozenset[str]  # digests whose blobs are in the cache
    free_bytes: int
    refused: DownloadError | None  # the hub's refusal of this hive's token (a gated repo), if any


@dataclass(frozen=True, slots=True)
class Present:
    """What a request finds already in the cache, at the commit the ref names now."""

    path: Path
    commit: str
    files: list[RepoFile]
    warning: str | None  # set when the hub could not be asked and the disk was trusted
