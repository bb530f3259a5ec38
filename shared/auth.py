"""RBEE_API_TOKEN: bearer-token check for every route but /healthz, constant-time.

Plain ASGI middleware (not BaseHTTPMiddleware) so endless SSE responses pass through untouched.
A browser's EventSource cannot send headers, so GET requests may carry the token as the
`access_token` query parameter instead (never logged: access logs are off).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["OPEN_PATHS", "TokenAuthMiddleware", "token_ok"]

OPEN_PATHS = frozenset({"/healthz"})


def token_ok(header: str | None, token: str) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())


def _query_token(scope: Scope) -> str | None:
    if scope.get("method") != "GET" or not scope.get("query_string"):
        return None
    values = parse_qs(scope["query_string"].decode("latin-1")).get("access_token")
    return values[0] if values else None


class TokenAuthMiddleware:
    """`open_paths` are served without a token: /healthz, and static pages that carry no data."""

    def __init__(self, app: ASGIApp, token: str | None, open_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.token = token
        self.open_paths = OPEN_PATHS | frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.token or scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        query_token = _query_token(scope)
        if token_ok(header, self.token) or (
            query_token is not None and hmac.compare_digest(query_token.encode(), self.token.encode())
        ):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": {"code": "UNAUTHORIZED", "message": "missing or wrong bearer token"}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
