"""What the hive's and the queen's JSON bodies share: the error body, and the include / exclude globs."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from shared.limits import MAX_BPS, MAX_PATTERN_LENGTH, MAX_PATTERNS

__all__ = ["REQUEST", "ErrorBody", "ErrorDetail", "MaxBps", "Pattern", "Patterns", "error_responses"]

# Every request body: a field we do not know is refused (422 naming it), never silently dropped: a
# typo such as "excludes" would otherwise pull the whole model.
REQUEST = ConfigDict(protected_namespaces=(), extra="forbid")

# A byte rate as JSON gives it: an integer, not a boolean or a float (strict), within bounds.
MaxBps = Annotated[
    StrictInt | None, Field(default=None, ge=1, le=MAX_BPS, description="cap for this download, bytes/s")
]

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


class ErrorDetail(BaseModel):
    """A stable code and a human message; some errors add fields (`hive_id`, `state`, ...)."""

    model_config = ConfigDict(extra="allow")

    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all with the contract's error body."""
    return {status: {"model": ErrorBody} for status in statuses}
