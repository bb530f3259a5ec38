"""uvicorn's h11 protocol as the services run it: a request it cannot parse answered with the contract's
JSON error body, and a file's bytes sent zero-copy (`os.sendfile`) for a route that asks.

h11 refuses a malformed request before any ASGI app sees it (`Content-Length: abc`, a bad request
line, an illegal header), and uvicorn answers that with a text/plain 400. Every error a client of
ours gets is JSON (README, "Errors"), so the services run uvicorn with this protocol class instead.

uvicorn implements no ASGI `pathsend`, so each request's scope gets an extension of our own,
`scope["extensions"][SENDFILE]`: `await sendfile(file, offset, count, pace, piece)` sends `count` bytes
of `file` from `offset` as (part of) the response body, after the app's `http.response.start`,
with `loop.sendfile` on the connection's non-blocking socket (the kernel copies the bytes; the event
loop only wakes when the socket can take more, so it keeps serving everything else). `pace(n)` is
awaited before each piece of at most `piece()` bytes (a bandwidth cap's throttle; asked each piece).
Offered only on asyncio's own event loop (uvloop has no `loop.sendfile`). h11 is told of the
bytes by its documented sendfile placeholder (a `Data` whose `data` only has a length). It answers
how many bytes went; fewer than `count` means the connection is gone (it is closed: the reader sees
a short body), and the app ends its response as usual (`http.response.body`, no more body).
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

from shared.errors import error_body

__all__ = ["SENDFILE", "JsonErrorH11Protocol", "SendFile"]

SENDFILE = "rbee.sendfile"
SendFile = Callable[[BinaryIO, int, int, Callable[[int], Awaitable[None]], Callable[[], int]], Awaitable[int]]


class _Sent:
    """h11's placeholder for body bytes that go around it (its `send_with_data_passthrough`)."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


class JsonErrorH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        body = json.dumps(error_body("BAD_REQUEST", f"malformed HTTP request: {msg.strip()}")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request")))
        self.transport.write(self.conn.send(h11.Data(data=body)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        cycle = self.cycle
        # (the cycle's task is created but has not run yet: the app sees the extension)
        # only on asyncio's own loop: uvloop has no loop.sendfile (it raises NotImplementedError), and
        # without the extension the app sends the file by reads instead
        if cycle is not None and not cycle.response_started and isinstance(self.loop, asyncio.BaseEventLoop):
            extensions: dict[str, Any] = cycle.scope.setdefault("extensions", {})
            extensions.setdefault(SENDFILE, functools.partial(self._sendfile, cycle))

    async def _sendfile(
        self,
        cycle: RequestResponseCycle,
        file: BinaryIO,
        offset: int,
        count: int,
        pace: Callable[[int], Awaitable[None]],
        piece: Callable[[], int],
    ) -> int:
        if cycle.disconnected or not cycle.response_started or self.transport.is_closing():
            return 0
        self.conn.send_with_data_passthrough(h11.Data(data=_Sent(count)))  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        sent = 0
        try:
            while sent < count:
                size = min(piece(), count - sent)  # (asked each time: a cap may come or go meanwhile)
                await pace(size)
                if cycle.disconnected or self.transport.is_closing():
                    break
                went = await loop.sendfile(self.transport, file, offset + sent, size)
                sent += went
                if went < size:
                    break  # (the file is shorter than it was said to be)
        except (OSError, RuntimeError):
            pass  # the reader went away (or the transport closed under us): it sees a short body
        finally:
            if sent < count:  # (also when cancelled) h11 counted bytes that never went: the connection ends
                cycle.disconnected = True  # (as uvicorn marks a lost connection: nothing more is sent on it)
                self.transport.close()
        return sent
