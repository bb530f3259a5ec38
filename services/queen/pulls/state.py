"""A pull, and its state (`PullBody`) from its hives' download states: each hive's part and the totals. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.queen.pulls.plan import UNKNOWN, HiveProgress, totals_of
from shared.errors import ApiError
from shared.models import ErrorCode
from shared.wire.queen import PullBody, PullHiveBody

__all__ = ["Pull", "body_of", "started_at"]

_UNASKED = ErrorCode.HIVE_UNREACHABLE.value  # a hive's part the queen could not ask about


@dataclass(frozen=True, slots=True)
class Pull:
    pull_id: str
    model_ref: str | None
    commit: str | None
    downloads: dict[str, str]  # hive_id -> download_id


def started_at(states: Mapping[str, dict[str, Any]]) -> str:
    return min((str(s.get("started_at") or "") for s in states.values()), default="")


def _sources(files: object) -> dict[str, int]:
    """A model's bytes by where they came from (its files' `source`)."""
    sources: dict[str, int] = {}
    for f in files if isinstance(files, list) else ():
        if isinstance(f, dict) and isinstance(f.get("bytes"), int):
            source = f.get("source")
            where = source if isinstance(source, str) else "cache"
            sources[where] = sources.get(where, 0) + f["bytes"]
    return sources


def body_of(
    pull: Pull, states: Mapping[str, dict[str, Any] | ApiError | None], cancel_pending: list[str] | None = None
) -> PullBody:
    """The pull's body; `cancel_pending`: the hives a cancel of it has not reached yet."""
    parts: list[PullHiveBody] = []
    progress: list[HiveProgress] = []
    unreachable: list[str] = []
    for hive_id, download_id in pull.downloads.items():
        state = states.get(hive_id)
        if not isinstance(state, dict):
            unreachable.append(hive_id)
            error = state.message if isinstance(state, ApiError) else f"hive {hive_id!r} is not registered"
            state = {"download_id": download_id, "status": UNKNOWN, "error": error, "error_code": _UNASKED}
        p = HiveProgress.from_state(hive_id, state)
        progress.append(p)
        parts.append(
            PullHiveBody(
                hive_id=hive_id,
                download_id=download_id,
                status=p.status,
                bytes=p.bytes,
                total=p.total,
                percent=state.get("percent"),
                speed_bps=p.speed_bps,
                eta_secs=state.get("eta_secs"),
                files_total=state.get("files_total"),
                files_done=state.get("files_done"),
                error=p.error,
                error_code=p.code,
                sources=_sources(state.get("files")),
            )
        )
    totals = totals_of(progress)
    commits = [str(s["commit"]) for s in states.values() if isinstance(s, dict) and isinstance(s.get("commit"), str)]
    return PullBody(
        pull_id=pull.pull_id,
        model_ref=pull.model_ref,
        commit=pull.commit or (commits[0] if commits else None),
        status=totals.status,
        bytes=totals.bytes,
        total=totals.total,
        percent=totals.percent,
        speed_bps=totals.speed_bps,
        hives=parts,
        failed_hives=[h.hive_id for h in totals.failed],
        unreachable_hives=unreachable,
        cancel_pending=cancel_pending or [],
    )
