"""A lean SSE client on raw non-blocking sockets (HTTP/1.1, chunked), cheap enough to hold 1,000 streams.

Each event is stamped with the kernel's receive time of the bytes that completed it (SO_TIMESTAMPNS, wall
clock) and with the time the event loop read them, so client-side scheduling can be told apart.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Dechunker", "SseClient", "SseEvent", "SseParser"]

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python does not export it
_CMSG_SPACE = socket.CMSG_SPACE(16)  # one struct timespec


@dataclass(slots=True)
class SseEvent:
    event: str
    id: str | None
    data: str
    recv: float  # wall clock (epoch s) at which the kernel received the last bytes of the read that completed it
    read_at: float  # wall clock when this process's event loop read them

    def json(self) -> dict[str, Any]:
        value = json.loads(self.data)
        return value if isinstance(value, dict) else {}


class Dechunker:
    """Incremental HTTP/1.1 chunked transfer decoding."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._remaining = 0
        self._need_crlf = False
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        while not self.done:
            if self._remaining:
                take = min(self._remaining, len(self._buf))
                out += self._buf[:take]
                del self._buf[:take]
                self._remaining -= take
                if self._remaining:
                    break
                self._need_crlf = True
            if self._need_crlf:
                if len(self._buf) < 2:
                    break
                del self._buf[:2]
                self._need_crlf = False
            end = self._buf.find(b"\r\n")
            if end < 0:
                break
            size = int(bytes(self._buf[:end]).split(b";")[0].strip() or b"0", 16)
            del self._buf[: end + 2]
            if size == 0:
                self.done = True
            self._remaining = size
        return bytes(out)


class SseParser:
    """Incremental text/event-stream parsing (the WHATWG rules this benchmark needs)."""

    def __init__(self) -> None:
        self._buf = b""
        self._event = ""
        self._id: str | None = None
        self._data: list[str] = []

    def feed(self, data: bytes, recv: float, read_at: float) -> list[SseEvent]:
        self._buf += data
        lines = self._buf.split(b"\n")
        self._buf = lines.pop()
        events = []
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
            if not line:
                if self._data:
                    events.append(SseEvent(self._event or "message", self._id, "\n".join(self._data), recv, read_at))
                self._event, self._data = "", []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id":
                self._id = value
        return events


class SseClient:
    """One GET of an event stream on a raw non-blocking socket; `events` fills as they arrive.

    Reads with recvmsg() and SO_TIMESTAMPNS, so each event carries the kernel's receive time: how late
    this process's event loop gets round to a socket (1,000 of them on one loop) does not count.
    """

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.headers = headers or {}
        self.status: int | None = None
        self.events: list[SseEvent] = []
        self.error: str | None = None
        self.kernel_timestamps = False
        self.connected = asyncio.Event()  # response headers read, or the attempt ended
        self.first_event = asyncio.Event()
        self.settled = asyncio.Event()  # the first event arrived, or the stream ended without one
        self._sock: socket.socket | None = None
        self._head = b""
        self._dechunk: Dechunker | None = None
        self._parser = SseParser()
        self._stop_after: set[str] = set()
        self._done: asyncio.Future[None] | None = None

    async def run(self, stop_after: set[str] | None = None) -> None:
        """Read until the server ends the stream, or after an event whose type is in `stop_after`."""
        loop = asyncio.get_running_loop()
        self._stop_after = stop_after or set()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        self._sock = sock
        self._done = loop.create_future()
        reading = False
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                self.kernel_timestamps = True
            except OSError:
                pass
            await loop.sock_connect(sock, (self.host, self.port))
            extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
            request = (
                f"GET {self.target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Accept: text/event-stream\r\nCache-Control: no-cache\r\n{extra}\r\n"
            )
            await loop.sock_sendall(sock, request.encode())
            loop.add_reader(sock.fileno(), self._readable)
            reading = True
            await self._done
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            if reading:
                loop.remove_reader(sock.fileno())
            sock.close()
            self._sock = None
            self.connected.set()
            self.settled.set()

    def close(self) -> None:
        """Stop reading (the socket is closed when run() returns)."""
        self._finish()

    def _finish(self, error: str | None = None) -> None:
        if error and not self.error:
            self.error = error
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _readable(self) -> None:
        sock = self._sock
        if sock is None or self._done is None or self._done.done():
            return
        try:
            data, ancillary, _, _ = sock.recvmsg(65536, _CMSG_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._finish(f"{type(exc).__name__}: {exc}")
            return
        read_at = time.time()
        recv = read_at
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
                sec, nsec = struct.unpack("qq", payload[:16])
                recv = sec + nsec / 1e9
        if not data:
            self._finish()
            return
        try:
            self._feed(data, recv, read_at)
        except ValueError as exc:
            self._finish(f"bad response: {exc}")

    def _feed(self, data: bytes, recv: float, read_at: float) -> None:
        if self.status is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > 65536:
                    raise ValueError("response head too long")
                return
            head, data = self._head[:end].decode("latin-1"), self._head[end + 4 :]
            status_line, *lines = head.split("\r\n")
            self.status = int(status_line.split()[1])
            headers = {}
            for line in lines:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            self.connected.set()
            if self.status != 200:
                self._finish(f"HTTP {self.status}")
                return
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._dechunk = Dechunker()
        body = self._dechunk.feed(data) if self._dechunk is not None else data
        for event in self._parser.feed(body, recv, read_at):
            self.events.append(event)
            self.first_event.set()
            self.settled.set()
            if event.event in self._stop_after:
                self._finish()
                return
        if self._dechunk is not None and self._dechunk.done:
            self._finish()
