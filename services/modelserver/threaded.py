"""A threaded HTTP/1.1 server on a background daemon thread: the lifecycle the model server and the test hub share.

Stdlib only. `ThreadedServer` binds (without a DNS lookup), serves on its own thread, keeps every open
connection so `stop()` can cut keep-alive and stalled ones and return promptly, counts the requests
being answered (`wait_idle`) and keeps a `RequestRecord` of each. What a request is answered with is
the subclass's handler's business; `TrackedHandler` is the base that registers its connection.
`serve_until_signalled` runs one in the foreground of a command (the model server's, the hub's).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import socketserver
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, BinaryIO, ClassVar, Generic, Self, TypeVar, cast

SENDFILE_CHUNK = 8 * 1024 * 1024  # per os.sendfile call


@dataclass
class RequestRecord:
    """One request as the server saw it. `headers` names are lower-cased; `bytes_sent` counts body bytes."""

    method: str
    path: str  # URL-decoded path, without the query string (the same key `set_fault` uses)
    headers: dict[str, str]
    status: int
    range: str | None
    bytes_sent: int


R = TypeVar("R", bound=RequestRecord)


def shutdown_quietly(conn: socket.socket) -> None:
    """Shut a socket both ways (the peer sees the end now), ignoring one that is already gone."""
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def send_counted(sock: socket.socket, data: bytes, record: RequestRecord) -> None:
    """sendall `data`, counted in `record.bytes_sent`."""
    # Count before sending so a client that has read everything never sees a stale count.
    record.bytes_sent += len(data)
    try:
        sock.sendall(data)
    except BaseException:
        record.bytes_sent -= len(data)
        raise


def sendfile_counted(sock: socket.socket, f: BinaryIO, start: int, count: int, record: RequestRecord) -> int:
    """Zero-copy send of `count` bytes of `f` from `start`, counted as `send_counted` does.

    Returns the bytes sent: less than `count` only if the file shrank.
    """
    offset, end = start, start + count
    while offset < end:
        want = min(SENDFILE_CHUNK, end - offset)
        record.bytes_sent += want
        try:
            n = os.sendfile(sock.fileno(), f.fileno(), offset, want)
        except BaseException:
            record.bytes_sent -= want
            raise
        record.bytes_sent -= want - n
        if n == 0:
            break
        offset += n
    return offset - start


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], owner: ThreadedServer[Any]
    ) -> None:
        self.owner = owner
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), which can stall on hosts without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.owner._quiet_error(sys.exc_info()[1]):
            return
        super().handle_error(request, client_address)


class TrackedHandler(BaseHTTPRequestHandler):
    """A keep-alive HTTP/1.1 handler whose connection its `ThreadedServer` knows of; no access log."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    @property
    def owner(self) -> ThreadedServer[Any]:
        return cast(_HTTPServer, self.server).owner

    @property
    def sock(self) -> socket.socket:
        return cast(socket.socket, self.connection)

    def setup(self) -> None:
        super().setup()
        self.owner._register(self.sock)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.owner._unregister(self.sock)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""


class ThreadedServer(Generic[R]):
    """Serve on a background daemon thread with `handler`; `start()/stop()` or a context manager."""

    handler: ClassVar[type[TrackedHandler]]
    thread_name: ClassVar[str] = ""  # the serving thread's name; the class name when empty

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.requests: list[R] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    # -- lifecycle

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`; available once started."""
        if self._url is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._url

    def start(self) -> Self:
        if self._httpd is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._httpd = _HTTPServer((self.host, self.port), self.handler, self)
        self.port = int(self._httpd.server_address[1])
        url_host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        self._url = f"http://{url_host}:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=self.thread_name or type(self).__name__,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; cuts open connections (so stalls end) and returns promptly. Idempotent."""
        httpd = self._httpd
        if httpd is None or self._stopping.is_set():
            return
        with self._lock:
            self._stopping.set()
            conns = list(self._conns)
        httpd.shutdown()
        for conn in conns:
            shutdown_quietly(conn)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.wait_idle(timeout=1.0)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- records

    def records(self, path: str | None = None) -> list[R]:
        """Snapshot copies of the recorded requests, optionally only those for (decoded) `path`."""
        with self._lock:
            return [
                dataclasses.replace(r, headers=dict(r.headers)) for r in self.requests if path is None or r.path == path
            ]

    def total_bytes_sent(self, path: str | None = None) -> int:
        with self._lock:
            return sum(r.bytes_sent for r in self.requests if path is None or r.path == path)

    def clear_records(self) -> None:
        with self._lock:
            self.requests.clear()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being answered (records are final); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    # -- used by the handler

    def _quiet_error(self, exc: BaseException | None) -> bool:
        """Whether an error out of a handler goes unreported: by default any socket error (a client gone)."""
        return isinstance(exc, OSError)

    def _register(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)
            stopping = self._stopping.is_set()
        if stopping:
            shutdown_quietly(conn)

    def _unregister(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _enter(self) -> None:
        with self._idle:
            self._in_flight += 1

    def _leave(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def _record(self, record: R) -> None:
        with self._lock:
            self.requests.append(record)


def serve_until_signalled(server: ThreadedServer[Any], line: Callable[[], dict[str, Any]]) -> None:
    """Serve, print `line()` (once started) as one JSON line, and return on SIGTERM or SIGINT."""
    if hasattr(signal, "pthread_sigmask"):
        # Blocked before the server threads exist, so only sigwait() below receives them.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    with server:
        print(json.dumps(line()), flush=True)
        if hasattr(signal, "sigwait"):
            signal.sigwait({signal.SIGTERM, signal.SIGINT})
            return
        try:  # pragma: no cover - platforms without sigwait
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
