"""Why a pull does not start: each hive's plan checked against the resolving one. Pure.

A hive stops the pull when it could not plan (its error as it gave it), planned another commit (502),
is refused by the hub (a gated repo: 422 with the hub's code) or lacks the disk (507
INSUFFICIENT_DISK). The pull's error names every hive that stopped it, the first one's status and code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.errors import ApiError
from shared.models import ErrorCode

__all__ = ["Failure", "check_plan", "failure_of", "preflight_failed"]

_NO_ROOM = 507  # Insufficient Storage: a hive lacks the disk for the model


@dataclass(frozen=True, slots=True)
class Failure:
    """One hive's reason to stop the pull."""

    hive_id: str
    status: int
    code: str
    message: str


def preflight_failed(failures: Sequence[Failure]) -> ApiError:
    first = failures[0]
    message = "preflight failed, nothing started: " + "; ".join(f"{f.hive_id}: {f.message}" for f in failures)
    listed = [{"hive_id": f.hive_id, "code": f.code, "message": f.message} for f in failures]
    return ApiError(first.status, first.code, message, hive_id=first.hive_id, failures=listed)


def failure_of(hive_id: str, exc: ApiError) -> Failure:
    return Failure(hive_id, exc.status, exc.code, exc.message)


def check_plan(hive_id: str, answer: dict[str, Any] | ApiError, commit: str) -> Failure | None:
    """Why this hive's plan stops the pull, if it does."""
    if isinstance(answer, ApiError):
        return failure_of(hive_id, answer)
    if answer.get("commit") != commit:
        return Failure(hive_id, 502, ErrorCode.DOWNLOAD_FAILED, f"planned commit {answer.get('commit')} for {commit}")
    refused = answer.get("access_error")
    if isinstance(refused, dict):
        return Failure(hive_id, 422, str(refused.get("code")), str(refused.get("message")))
    if not answer.get("fits"):
        needed, free = answer.get("needed_bytes"), answer.get("free_bytes")
        message = f"hive {hive_id!r} needs {needed} more bytes for the model but has {free} free"
        return Failure(hive_id, _NO_ROOM, ErrorCode.INSUFFICIENT_DISK, message)
    return None
