"""A threaded HTTP/1.1 server on loopback for the test hub and its CDN: lifecycle, records, bodies.

Stdlib only. A subclass of `LoopbackServer` answers each request with an `Answer` (status, headers and
a body: bytes, or a slice of a file on disk sent with sendfile); this module sends it, records it
(`HubRecord`) and keeps count of the body bytes really written. `file_answer` is the one Range/If-Range
rule both hosts use.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import socketserver
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import unquote, urlsplit

from services.modelserver.server import RangeNotSatisfiable, RequestRecord, parse_range

SENDFILE_CHUNK = 8 * 1024 * 1024


@dataclass
class HubRecord(RequestRecord):
    """A `RequestRecord` plus what the hub needs: the raw (still quoted) path, the query, the client."""

    raw_path: str = ""
    query: str = ""
    client: str = ""


@dataclass
class Answer:
    """What to send: status and headers, then `data[start:stop]` or the slice [start, stop) of `file`."""

    status: int
    headers: dict[str, str]
    data: bytes = b""
    file: Path | None = None
    start: int = 0
    stop: int = 0

    @classmethod
    def of(cls, status: int, headers: dict[str, str], body: bytes = b"") -> Answer:
        return cls(status, {**headers, "Content-Length": str(len(body))}, body, None, 0, len(body))


def file_answer(
    size: int, etag: str, request: dict[str, str], headers: dict[str, str], data: bytes = b"", file: Path | None = None
) -> Answer:
    """200, 206 or 416 for a body of `size` bytes: one `bytes=` range, honoured only if If-Range matches."""
    out = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream", "ETag": etag, **headers}
    span: tuple[int, int] | None = None
    range_header = request.get("range")
    if range_header and request.get("if-range", etag) == etag:
        try:
            span = parse_range(range_header, size)
        except RangeNotSatisfiable:
            return Answer.of(416, {**out, "Content-Range": f"bytes */{size}"})
    start, stop = span if span is not None else (0, size)
    if span is not None:
        out["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    out["Content-Length"] = str(stop - start)
    return Answer(206 if span else 200, out, data, file, start, stop)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: LoopbackServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), which can stall on hosts without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client that went away, or a socket cut by stop()
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    @property
    def owner(self) -> LoopbackServer:
        return cast(_HTTPServer, self.server).owner

    def setup(self) -> None:
        super().setup()
        self.owner._track(cast(socket.socket, self.connection), True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.owner._track(cast(socket.socket, self.connection), False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def version_string(self) -> str:
        return self.owner.server_header

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def _serve(self) -> None:
        owner = self.owner
        owner._busy(+1)
        try:
            url = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            client = str(self.client_address[0])
            answer = owner.answer(self.command, url.path, url.query, headers, client)
            record = HubRecord(
                self.command, unquote(url.path), headers, answer.status, headers.get("range"), 0,
                raw_path=url.path, query=url.query, client=client,
            )  # fmt: skip
            owner._record(record)
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self._send_body(answer, record)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        finally:
            owner._busy(-1)

    def _send_body(self, answer: Answer, record: HubRecord) -> None:
        sock = cast(socket.socket, self.connection)
        if answer.file is None:
            chunk = answer.data[answer.start : answer.stop]
            sock.sendall(chunk)
            record.bytes_sent += len(chunk)
            return
        with answer.file.open("rb") as f:
            offset = answer.start
            while offset < answer.stop:
                n = os.sendfile(sock.fileno(), f.fileno(), offset, min(SENDFILE_CHUNK, answer.stop - offset))
                if n == 0:
                    break
                offset += n
                record.bytes_sent += n


class LoopbackServer:
    """Serve on a background daemon thread; `start()/stop()` or a context manager. Subclasses `answer`."""

    server_header = "rbee-loopback/0.1"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._records: list[HubRecord] = []
        self._conns: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def answer(self, method: str, raw_path: str, query: str, headers: dict[str, str], client: str) -> Answer:
        raise NotImplementedError

    # -- lifecycle

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`; available once started."""
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> Self:
        if self._httpd is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._httpd = _HTTPServer((self.host, self.port), self)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=type(self).__name__, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open keep-alive connections. Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
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

    def records(self, path: str | None = None) -> list[HubRecord]:
        """Copies of the recorded requests, optionally only those whose decoded path is `path`."""
        with self._lock:
            return [dataclasses.replace(r, headers=dict(r.headers)) for r in self._records if path in (None, r.path)]

    def total_bytes_sent(self, path: str | None = None) -> int:
        with self._lock:
            return sum(r.bytes_sent for r in self._records if path in (None, r.path))

    def clear_records(self) -> None:
        with self._lock:
            self._records.clear()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being answered (records are final); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    # -- used by the handler

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _busy(self, delta: int) -> None:
        with self._idle:
            self._in_flight += delta
            self._idle.notify_all()

    def _record(self, record: HubRecord) -> None:
        with self._lock:
            self._records.append(record)
