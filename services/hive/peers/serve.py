"""How a complete blob's bytes go to a peer (README, "Fleet pulls", "The serving path"): zero-copy.

`BlobFileResponse` sends [start, stop) of an open blob. Served by our uvicorn protocol it uses the
connection's sendfile extension (`shared.http_protocol.SENDFILE`: `loop.sendfile` on the non-blocking
socket, the kernel moving the bytes, the event loop free meanwhile), in pieces of `SERVE_PIECE` bytes;
anywhere else (another server) it falls back to reads on a thread, piece by piece. Either way the
`throttle` is awaited before each piece: a `ServeThrottle` is how a cap on what the hive sends its
peers plugs in (`take(n)` returns once `n` more bytes may go); the base class caps nothing.
A blob still downloading is no file yet: `peers.blobs.follow` serves it, the same throttle awaited
before each of its chunks.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Mapping
from typing import BinaryIO

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from services.hive.metrics import HiveStats
from services.hive.transfer.throttle import TokenBucket
from shared.http_protocol import SENDFILE, SendFile

__all__ = ["SERVE_PIECE", "BlobFileResponse", "BucketThrottle", "ServeThrottle"]

SERVE_PIECE = 16 * 1024 * 1024  # bytes sent between two looks at the throttle (and at a reader gone); see README


class ServeThrottle:
    """What paces the bytes a hive serves: `take(n)` is awaited before each piece of `n` bytes goes
    out. This one caps nothing; a cap is a subclass that waits there (given to `create_app`'s state
    as `serve_throttle`)."""

    async def take(self, n: int) -> None:
        return None

    def piece(self, default: int) -> int:
        """The bytes to send between two `take`s: `default` unless a cap wants finer steps."""
        return default


class BucketThrottle(ServeThrottle):
    """A cap from a token bucket (the NIC controller's upload cap, README "Bandwidth"); while it is in
    force a piece is at most a fifth of a second's bytes, so what is sent follows the cap closely."""

    MIN_PIECE = 256 * 1024

    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket

    async def take(self, n: int) -> None:
        await self.bucket.consume(n)

    def piece(self, default: int) -> int:
        rate = self.bucket.rate
        return default if rate <= 0 else max(self.MIN_PIECE, min(default, rate // 5))


class BlobFileResponse(Response):
    """[start, stop) of `file` (opened by the caller, closed here once sent), with `headers`."""

    def __init__(
        self,
        file: BinaryIO,
        start: int,
        stop: int,
        *,
        status_code: int,
        headers: Mapping[str, str],
        throttle: ServeThrottle,
        stats: HiveStats,
        piece: int = SERVE_PIECE,
    ) -> None:
        super().__init__(None, status_code, dict(headers), "application/octet-stream")
        self.file, self.start, self.stop = file, start, stop
        self.throttle, self.stats, self.piece = throttle, stats, piece

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            sendfile: SendFile | None = scope.get("extensions", {}).get(SENDFILE)
            count = self.stop - self.start
            if sendfile is not None:
                piece = functools.partial(self.throttle.piece, self.piece)  # asked before each piece
                self.stats.bytes_served += await sendfile(self.file, self.start, count, self.throttle.take, piece)
            else:
                await self._read_and_send(send)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.file.close()

    async def _read_and_send(self, send: Send) -> None:
        pos, fd = self.start, self.file.fileno()
        while pos < self.stop:
            size = min(self.throttle.piece(self.piece), self.stop - pos)
            await self.throttle.take(size)
            data = await asyncio.to_thread(os.pread, fd, size, pos)
            if not data:
                return  # (shorter than said: the reader sees a short body)
            pos += len(data)
            self.stats.bytes_served += len(data)
            await send({"type": "http.response.body", "body": data, "more_body": True})
