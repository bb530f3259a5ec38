"""A seeded, fault-injecting HTTP/1.1 proxy to put in front of the model server in chaos tests.

`ChaosProxy(upstream_url, ChaosConfig(seed=...))` listens on loopback and forwards each request to
the upstream on a fresh connection. With probability `probability` per request, and at most
`max_faults` times per path, it misbehaves instead, in one of these ways (`KINDS`):

- ``cut``    forwards the headers and a random prefix of the body, then resets the connection (RST);
- ``short``  forwards the headers (full Content-Length) and a random prefix, then closes cleanly (FIN);
- ``stall``  forwards the headers and a random prefix, then sends nothing until the client gives up;
- ``close``  reads the request and closes the connection before any response header;
- ``status`` answers 503 with a ``Retry-After`` header, without asking the upstream.

Decisions (`chaos_book.ChaosBook`) come from one `random.Random` per path, seeded from (seed, path):
the n-th request on a path always gets the same decision, so a failing run is replayed by its seed.
Every fault is recorded (`faults`), and the body bytes sent to clients are counted (`body_bytes`).
With `body_bps` each response body goes at most that fast (a path that caps each connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections import Counter
from types import TracebackType
from urllib.parse import unquote, urlsplit

from services.modelserver.chaos_book import KINDS, ChaosBook, ChaosConfig, Decision, FaultRecord

__all__ = ["KINDS", "ChaosConfig", "ChaosProxy", "FaultRecord"]

_BODY_KINDS = frozenset({"cut", "short", "stall"})
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade"})
_PIECE = 64 * 1024
_MAX_HEAD = 64 * 1024


class ChaosProxy:
    """Runs on its own thread and event loop; use as a context manager or start()/stop()."""

    def __init__(self, upstream_url: str, config: ChaosConfig, host: str = "127.0.0.1") -> None:
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError("upstream must be http://host:port")
        self.upstream = (parts.hostname, parts.port)
        self.config = config
        self.host = host
        self.port = 0
        self._book = ChaosBook(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    # -- lifecycle

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("ChaosProxy is not started")
        return f"http://{self.host}:{self.port}"

    def start(self) -> ChaosProxy:
        self._thread = threading.Thread(target=self._run, name="chaos-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or not self.port:
            raise RuntimeError("chaos proxy did not start")
        return self

    def stop(self) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> ChaosProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- what happened

    @property
    def faults(self) -> list[FaultRecord]:
        return self._book.faults

    def fault_counts(self) -> Counter[str]:
        return Counter(f.kind for f in self.faults)

    @property
    def body_bytes(self) -> int:
        """Response body bytes written to clients (bytes lost to a cut count too: they were served)."""
        return self._book.body_bytes

    def body_bytes_of(self, path: str) -> int:
        return self._book.body_bytes_of(path)

    @property
    def requests(self) -> int:
        return self._book.requests

    def decide(self, path: str) -> Decision:
        """The next decision for `path` (deterministic per path and seed)."""
        return self._book.decide(path)

    # -- the server

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._accept, self.host, 0, limit=_MAX_HEAD)
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        async with server:
            await self._stopping.wait()
            server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError):
            # a peer gone, or a request or response this simple proxy cannot read: drop the connection
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Requests on one client connection (keep-alive) until a fault or either side closes it."""
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            request_line, headers = _parse_head(head)
            method, target = request_line.split(b" ")[:2]
            body_len = int(_header(headers, b"content-length") or b"0")
            request_body = await reader.readexactly(body_len) if body_len else b""
            path = unquote(urlsplit(target.decode("latin-1")).path)
            decision = self.decide(path)
            if decision.kind == "close":
                self._book.record(path, "close", None)
                return
            if decision.kind == "status":
                self._book.record(path, "status", None)
                body = b"503 Service Unavailable (chaos)\n"
                writer.write(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                    + b"Retry-After: " + decision.retry_after.encode() + b"\r\n"
                    + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )  # fmt: skip
                await writer.drain()
                continue
            if not await self._forward(method, request_line, headers, request_body, path, decision, reader, writer):
                return

    async def _forward(
        self,
        method: bytes,
        request_line: bytes,
        headers: list[tuple[bytes, bytes]],
        request_body: bytes,
        path: str,
        decision: Decision,
        client_reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Relay one request to the upstream (applying a body fault); True if the client connection lives on."""
        up_reader, up_writer = await asyncio.open_connection(*self.upstream, limit=_MAX_HEAD)
        try:
            kept = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP]
            up_writer.write(_build_head(request_line, [*kept, (b"Connection", b"close")]) + request_body)
            await up_writer.drain()
            status_line, resp_headers = _parse_head(await up_reader.readuntil(b"\r\n\r\n"))
            status = int(status_line.split(b" ")[1])
            length_value = _header(resp_headers, b"content-length")
            no_body = method == b"HEAD" or status in (204, 304) or 100 <= status < 200
            length = 0 if no_body else int(length_value) if length_value is not None else None
            out = [(k, v) for k, v in resp_headers if k.lower() not in _HOP_BY_HOP]
            if length is None:
                out.append((b"Connection", b"close"))
            kind = decision.kind if decision.kind in _BODY_KINDS else None
            if kind is not None and not length:
                kind = None  # nothing to cut in an empty (or unknown-length) body: serve it as is
            writer.write(_build_head(status_line, out))
            limit = length if kind is None or length is None else int(decision.fraction * length)
            sent = await self._pipe(up_reader, writer, limit, path)
            if kind is None:
                return length is not None and sent == length
            self._book.record(path, kind, sent)
            if kind == "stall":
                await self._stall(client_reader)
            elif kind == "cut":
                _reset(writer)
            return False
        finally:
            up_writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await up_writer.wait_closed()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, limit: int | None, path: str) -> int:
        """Copy up to `limit` bytes (all, to EOF, when None), at most `body_bps` a second; the number copied."""
        sent = 0
        clock = asyncio.get_running_loop().time
        began = clock()
        while limit is None or sent < limit:
            want = _PIECE if limit is None else min(_PIECE, limit - sent)
            data = await src.read(want)
            if not data:
                break
            dst.write(data)
            self._book.count(path, len(data))
            sent += len(data)
            await dst.drain()
            if self.config.body_bps and (ahead := sent / self.config.body_bps - (clock() - began)) > 0:
                await asyncio.sleep(ahead)
        return sent

    async def _stall(self, client_reader: asyncio.StreamReader) -> None:
        """Send nothing until the client closes, `stall_secs` pass or the proxy stops."""
        assert self._stopping is not None
        gone = asyncio.ensure_future(client_reader.read(1))
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({gone, stop}, timeout=self.config.stall_secs, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (gone, stop):
                fut.cancel()
            await asyncio.gather(gone, stop, return_exceptions=True)


def _parse_head(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip(), value.strip()))
    return lines[0], headers


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    return next((v for k, v in headers if k.lower() == name), None)


def _build_head(first_line: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    return first_line + b"\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n"


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN: what a crashed peer or a middlebox dropping state looks like."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
