"""The contract's JSON error body, and ApiError: an error meant for the client. No FastAPI here.

Every error response is `{"error": {"code": "NOT_FOUND", "message": "…"}}` (README, "Errors"); the
handlers that turn exceptions into it live in `shared/error_handlers.py`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "error_body"]


class ApiError(Exception):
    """An error meant for the client: HTTP status, stable code, human message."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}
