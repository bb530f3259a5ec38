"""What a request may hold: the patterns and limits every service (and the keeper) checks, declared
once, and the request body size limit.

The body limit is pure ASGI (so endless SSE responses pass through untouched). A body larger than
`max_bytes` gets 413 `{"error": {"code": "PAYLOAD_TOO_LARGE", ...}}` before the app sees any of it: at
once when Content-Length says so, else once the streamed body passes the limit. A body within the
limit is read here (it is small by definition) and replayed to the app.
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "COMMIT_PATTERN",
    "DEFAULT_MAX_BODY",
    "DIGEST_PATTERN",
    "DOWNLOAD_ID_RE",
    "HIVE_ID_PATTERN",
    "HIVE_ID_RE",
    "HIVE_MAX_BODY",
    "HIVE_URL_PATTERN",
    "MAX_BPS",
    "MAX_PATTERNS",
    "MAX_PATTERN_LENGTH",
    "MAX_PULL_FILES",
    "MAX_PULL_HIVES",
    "MAX_REF_LENGTH",
    "MAX_URL_LENGTH",
    "PULL_ID_PATTERN",
    "PULL_ID_RE",
    "SHA256_PATTERN",
    "SHA256_RE",
    "BodySizeLimitMiddleware",
]

DEFAULT_MAX_BODY = 64 * 1024  # request bodies (README, "Tokens and hosts")
HIVE_MAX_BODY = 4 * 1024 * 1024  # a hive's: a fleet pull names a source for every blob of a model
MAX_REF_LENGTH = 2048  # a model_ref, in characters
MAX_URL_LENGTH = 2048  # a hive's URL as registered with the queen
MAX_BPS = 10**12  # the largest bandwidth cap, bytes/s
MAX_PATTERNS = 64  # include / exclude globs of one whole-model request, each list
MAX_PATTERN_LENGTH = 256  # characters of one glob
MAX_PULL_FILES = 100_000  # files of one fleet pull whose sources a hive is told
MAX_PULL_HIVES = 1024  # hives one fleet pull names
COMMIT_PATTERN = r"^[0-9a-f]{40}$"
DIGEST_PATTERN = r"^([0-9a-f]{40}|[0-9a-f]{64})$"  # a blob: git blob sha1 or sha256
PULL_ID_PATTERN = r"^pull-[0-9a-f]{32}$"
PULL_ID_RE = re.compile(PULL_ID_PATTERN)

DOWNLOAD_ID_RE = re.compile(r"dl-[0-9a-f]{32}")  # what a hive's ids look like; anything else is not ours
SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"  # an expected sha256 as a request gives it (either case)
SHA256_RE = re.compile(SHA256_PATTERN)
HIVE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
HIVE_ID_RE = re.compile(HIVE_ID_PATTERN)
HIVE_URL_PATTERN = r"^https?://[^\x00-\x20\x7f-\x9f]+$"  # no spaces or controls


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    await self._too_large(send)
                    return
                break
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away before sending it all
                await self.app(scope, _replay([message], receive), send)
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._too_large(send)
                return
            if not message.get("more_body", False):
                break
        whole: Message = {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)

    async def _too_large(self, send: Send) -> None:
        payload = {
            "error": {"code": "PAYLOAD_TOO_LARGE", "message": f"request body is larger than {self.max_bytes} bytes"}
        }
        body = json.dumps(payload).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that hands out `messages` first, then defers to the real one (disconnect detection)."""
    pending = list(messages)

    async def _receive() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return _receive
