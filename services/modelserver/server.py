"""A local, Range-capable, Hugging Face-like model file server for tests, the demo and benchmarks.

Stdlib only. `ModelServer` serves files under a root directory over HTTP/1.1 with keep-alive:

- ``GET|HEAD /{org}/{repo}/resolve/{rev}/{path...}`` serves ``root/{org}/{repo}/{path}`` (rev is ignored);
- any other ``GET|HEAD /{path}`` serves ``root/{path}``.

It answers single byte ranges (206/416), honours If-Range, and can misbehave on purpose per path
(see `Fault`): dropped or stalled connections, short bodies, error statuses, redirects, auth, rate caps
and validators that change. Every request is recorded (`RequestRecord`).
"""

from __future__ import annotations

import argparse
import dataclasses
import email.utils
import hashlib
import json
import os
import random
import re
import select
import signal
import socket
import socketserver
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal, cast
from urllib.parse import unquote, urlsplit

MIB = 1024 * 1024
WRITE_CHUNK = 64 * 1024  # piece size for paced / faulty bodies
SENDFILE_CHUNK = 8 * MIB  # per os.sendfile call on the fast path
CHANGED_MTIME_SHIFT = 3600.0  # seconds added to Last-Modified once a path's validators "change"
ETAG_MODES = ("sha256", "mtime", "none")
_HAS_SENDFILE = hasattr(os, "sendfile")


# --------------------------------------------------------------------------- files


def generate_file(path: Path, size: int, seed: int = 0) -> str:
    """Write `size` deterministic pseudo-random bytes to `path` (parents created); return the sha256 hex."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    digest = hashlib.sha256()
    tmp = path.with_name(f".{path.name}.generating")
    with tmp.open("wb") as out:
        remaining = size
        while remaining > 0:
            block = rng.randbytes(min(MIB, remaining))
            out.write(block)
            digest.update(block)
            remaining -= len(block)
    os.replace(tmp, path)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """The sha256 hex of a file's content."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MIB):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- knobs and records


@dataclass
class Fault:
    """Per-path misbehaviour. Counters (drop_times, stall_times, statuses) restart on every `set_fault`."""

    drop_after: int | None = None  # cut the connection after this many body bytes ...
    drop_times: int = 1  # ... for this many GETs (then serve normally); -1 = always
    stall_after: int | None = None  # stop sending after this many body bytes and hang ...
    stall_secs: float = 3600.0  # ... until the client disconnects, this elapses or the server stops
    stall_times: int = 1  # -1 = always
    statuses: list[int] = field(default_factory=list)  # one per request before serving normally
    retry_after: str | None = None  # Retry-After sent with `statuses` / `always_status`
    always_status: int | None = None  # e.g. 404 or 401 on every request
    rate_bps: int | None = None  # per-response cap in bytes/second (overrides the server's)
    ignore_range: bool = False  # answer 200 with the full body even when Range was asked
    change_etag_after: int | None = None  # after this many requests, ETag/Last-Modified change
    short_body: int | None = None  # announce the full Content-Length, send only this many bytes, cut
    redirect_to: str | None = None  # 302 to this absolute URL, with X-Linked-Etag / X-Linked-Size
    require_auth: str | None = None  # 401 unless "Authorization: Bearer <this>"


@dataclass
class RequestRecord:
    """One request as the server saw it. `headers` names are lower-cased; `bytes_sent` counts body bytes."""

    method: str
    path: str  # URL-decoded path, without the query string (the same key `set_fault` uses)
    headers: dict[str, str]
    status: int
    range: str | None
    bytes_sent: int


@dataclass
class _FaultState:
    fault: Fault
    requests: int = 0
    statuses_left: list[int] = field(default_factory=list)
    drops_left: int = 0
    stalls_left: int = 0

    @classmethod
    def of(cls, fault: Fault) -> _FaultState:
        fault = dataclasses.replace(fault, statuses=list(fault.statuses))
        return cls(fault, 0, list(fault.statuses), fault.drop_times, fault.stall_times)


_NO_FAULT = Fault()


@dataclass(frozen=True)
class _FileInfo:
    path: Path
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class _Cut:
    kind: Literal["drop", "stall", "short"]
    at: int  # body bytes sent before the cut
    stall_secs: float = 0.0


@dataclass
class _Plan:
    """What to answer: status and headers, then either `body` or the file slice [start, stop)."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    file: Path | None = None
    start: int = 0
    stop: int = 0
    rate_bps: int | None = None
    cut: _Cut | None = None


# --------------------------------------------------------------------------- pure helpers


class RangeNotSatisfiable(Exception):
    """The Range starts at or past the end of the file."""


_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """A single `bytes=` range as a half-open (start, stop), or None to ignore it (multi-range, malformed).

    Raises RangeNotSatisfiable when the range starts at or beyond `size`.
    """
    m = _RANGE_RE.fullmatch(value.strip())
    if m is None or (not m[1] and not m[2]):
        return None
    if not m[1]:  # suffix range: the last N bytes
        suffix = int(m[2])
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(value)
        return max(0, size - suffix), size
    start = int(m[1])
    end = int(m[2]) if m[2] else size - 1
    if m[2] and end < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(value)
    return start, min(end + 1, size)


def parse_size(text: str) -> int:
    """Bytes from "123", "64K", "10M", "2G" (powers of 1024; "KiB"/"KB" spellings accepted)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:I?B)?\s*", text.upper())
    if m is None:
        raise ValueError(f"bad size: {text!r}")
    multiplier: int = 1024 ** " KMG".index(m[2] or " ")
    return int(m[1]) * multiplier


def _auth_ok(fault: Fault, authorization: str | None) -> bool:
    return fault.require_auth is None or authorization == f"Bearer {fault.require_auth}"


def _text_plan(status: int, extra: dict[str, str] | None = None) -> _Plan:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body = f"{status} {phrase}\n".encode()
    headers = {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body)), **(extra or {})}
    return _Plan(status, headers, body=body)


def _changed(etag: str) -> str:
    """A different validator of the same shape: '"abc"' -> '"abc-changed"'."""
    return etag[:-1] + '-changed"' if etag.endswith('"') else etag + "-changed"


# --------------------------------------------------------------------------- HTTP plumbing


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], model: ModelServer) -> None:
        self.model = model
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), which can stall on hosts without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        if isinstance(exc, OSError) and self.model._stopping.is_set():
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "rbee-modelserver/0.1"
    disable_nagle_algorithm = True

    @property
    def model(self) -> ModelServer:
        return cast(_HTTPServer, self.server).model

    @property
    def sock(self) -> socket.socket:
        return cast(socket.socket, self.connection)

    def setup(self) -> None:
        super().setup()
        self.model._register(self.sock)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.model._unregister(self.sock)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, head: bool) -> None:
        self.model._enter()
        try:
            url_path = unquote(urlsplit(self.path).path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            plan = self.model._plan(self.command, url_path, headers)
            record = RequestRecord(self.command, url_path, headers, plan.status, headers.get("range"), 0)
            self.model._record(record)
            self.send_response(plan.status)
            for name, value in plan.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if not head:
                self._send_body(plan, record)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        finally:
            self.model._leave()

    # -- bodies

    def _send_body(self, plan: _Plan, record: RequestRecord) -> None:
        if plan.file is None:
            if plan.body:
                self._send_counted(plan.body, record)
            return
        limit = plan.stop - plan.start if plan.cut is None else plan.cut.at
        with plan.file.open("rb") as f:
            if plan.rate_bps is None and plan.cut is None and _HAS_SENDFILE:
                sent = self._sendfile(f, plan.start, limit, record)
            else:
                sent = self._write_paced(f, plan.start, limit, plan.rate_bps, record)
        if plan.cut is not None and plan.cut.kind == "stall" and sent == limit:
            self._stall(plan.cut.stall_secs)
        if plan.cut is not None or sent < limit:
            self._cut()

    def _send_counted(self, data: bytes, record: RequestRecord) -> None:
        # Count before sending so a client that has read everything never sees a stale count.
        record.bytes_sent += len(data)
        try:
            self.sock.sendall(data)
        except BaseException:
            record.bytes_sent -= len(data)
            raise

    def _sendfile(self, f: BinaryIO, start: int, count: int, record: RequestRecord) -> int:
        """Zero-copy fast path; returns the bytes sent (less than `count` only if the file shrank)."""
        offset, end = start, start + count
        while offset < end:
            want = min(SENDFILE_CHUNK, end - offset)
            record.bytes_sent += want
            try:
                n = os.sendfile(self.sock.fileno(), f.fileno(), offset, want)
            except BaseException:
                record.bytes_sent -= want
                raise
            record.bytes_sent -= want - n
            if n == 0:
                break
            offset += n
        return offset - start

    def _write_paced(self, f: BinaryIO, start: int, count: int, rate_bps: int | None, record: RequestRecord) -> int:
        """Write in pieces, sleeping (on the stop event) to hold `rate_bps`; returns the bytes sent."""
        piece = WRITE_CHUNK if rate_bps is None else max(1024, min(WRITE_CHUNK, rate_bps // 20))
        stopping = self.model._stopping
        f.seek(start)
        began = time.monotonic()
        sent = 0
        while sent < count and not stopping.is_set():
            data = f.read(min(piece, count - sent))
            if not data:
                break
            if rate_bps is not None:
                delay = began + (sent + len(data)) / rate_bps - time.monotonic()
                if delay > 0 and stopping.wait(delay):
                    break
            self._send_counted(data, record)
            sent += len(data)
        return sent

    def _stall(self, secs: float) -> None:
        """Hang until the client disconnects, `secs` elapse or the server stops."""
        deadline = time.monotonic() + secs
        while (remaining := deadline - time.monotonic()) > 0:
            if self.model._stopping.wait(min(remaining, 0.05)) or self._peer_gone():
                return

    def _peer_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            return bool(readable) and self.sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _cut(self) -> None:
        """Really end the connection (FIN now), so the client sees a truncated body, not a clean end."""
        self.close_connection = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


# --------------------------------------------------------------------------- the server


class ModelServer:
    """Serve `root` over HTTP on a background daemon thread. Use as a context manager or start()/stop()."""

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_bps: int | None = None,
        etag: str = "sha256",
    ) -> None:
        if etag not in ETAG_MODES:
            raise ValueError(f"etag must be one of {ETAG_MODES}, not {etag!r}")
        self.root = Path(root)
        self.host = host
        self.port = port
        self.rate_bps = rate_bps
        self.etag = etag
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._faults: dict[str, _FaultState] = {}
        self._sha_cache: dict[Path, tuple[int, int, str]] = {}
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
            raise RuntimeError("ModelServer is not started")
        return self._url

    def start(self) -> ModelServer:
        if self._httpd is not None:
            raise RuntimeError("ModelServer already started")
        self._httpd = _HTTPServer((self.host, self.port), self)
        self.port = int(self._httpd.server_address[1])
        url_host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        self._url = f"http://{url_host}:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="modelserver", daemon=True
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
            _shutdown_quietly(conn)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.wait_idle(timeout=1.0)

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- faults

    def set_fault(self, path: str, fault: Fault) -> None:
        """Misbehave on `path` (as in the URL, e.g. "/org/repo/resolve/main/model.bin"); resets its counters."""
        with self._lock:
            self._faults[path] = _FaultState.of(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # -- records

    def records(self, path: str | None = None) -> list[RequestRecord]:
        """Snapshot copies of the recorded requests, optionally only those for `path`."""
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

    # -- files

    def add_file(self, rel: str, size: int, seed: int = 0) -> str:
        """Generate `root/rel` with deterministic content; return its sha256 hex."""
        path = self.root / rel
        sha = generate_file(path, size, seed)
        st = path.stat()
        with self._lock:
            self._sha_cache[path.resolve()] = (st.st_size, st.st_mtime_ns, sha)
        return sha

    def sha256_of(self, rel: str) -> str:
        """The sha256 hex of `root/rel` (cached by size and mtime)."""
        path = (self.root / rel).resolve()
        st = path.stat()
        return self._sha256(_FileInfo(path, st.st_size, st.st_mtime_ns))

    def hub_url(self, org_repo: str, filename: str, rev: str = "main") -> str:
        return f"{self.url}/{org_repo}/resolve/{rev}/{filename}"

    # -- internals used by the handler

    def _register(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)
            stopping = self._stopping.is_set()
        if stopping:
            _shutdown_quietly(conn)

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

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def _lookup(self, url_path: str) -> _FileInfo | None:
        """Map a URL path to a regular file inside root, or None."""
        parts = [p for p in url_path.split("/") if p]
        if not parts or ".." in parts or any("\x00" in p for p in parts):
            return None
        if len(parts) >= 5 and parts[2] == "resolve":
            parts = parts[:2] + parts[4:]
        try:
            root = self.root.resolve()
            path = root.joinpath(*parts).resolve()
            if not path.is_relative_to(root) or not path.is_file():
                return None
            st = path.stat()
        except (OSError, ValueError):
            return None
        return _FileInfo(path, st.st_size, st.st_mtime_ns)

    def _sha256(self, info: _FileInfo) -> str:
        with self._lock:
            cached = self._sha_cache.get(info.path)
        if cached is not None and cached[:2] == (info.size, info.mtime_ns):
            return cached[2]
        sha = sha256_file(info.path)
        with self._lock:
            self._sha_cache[info.path] = (info.size, info.mtime_ns, sha)
        return sha

    def _validators(self, info: _FileInfo, changed: bool) -> tuple[str | None, str]:
        """(ETag or None, Last-Modified) for a file, altered when the path's validators have `changed`."""
        mtime = info.mtime_ns / 1e9 + (CHANGED_MTIME_SHIFT if changed else 0.0)
        last_modified = email.utils.formatdate(mtime, usegmt=True)
        etag: str | None = None
        if self.etag == "sha256":
            etag = f'"{self._sha256(info)}"'
        elif self.etag == "mtime":
            etag = f'W/"{info.size}-{info.mtime_ns}"'
        if etag is not None and changed:
            etag = _changed(etag)
        return etag, last_modified

    def _take_request(self, url_path: str, authorization: str | None) -> tuple[Fault, int, int | None]:
        """Count a request on `url_path`: (its fault, the request's 1-based number, a status to answer)."""
        with self._lock:
            state = self._faults.get(url_path)
            if state is None:
                return _NO_FAULT, 0, None
            state.requests += 1
            fault = state.fault
            status = None
            if state.statuses_left and _auth_ok(fault, authorization) and fault.always_status is None:
                status = state.statuses_left.pop(0)
            return fault, state.requests, status

    def _take_cut(self, url_path: str, length: int) -> _Cut | None:
        """The body fault that fires for a GET body of `length` bytes, consuming its count."""
        with self._lock:
            state = self._faults.get(url_path)
            if state is None:
                return None
            f = state.fault
            options: list[_Cut] = []
            if f.short_body is not None and f.short_body < length:
                options.append(_Cut("short", f.short_body))
            if f.drop_after is not None and f.drop_after < length and state.drops_left != 0:
                options.append(_Cut("drop", f.drop_after))
            if f.stall_after is not None and f.stall_after < length and state.stalls_left != 0:
                options.append(_Cut("stall", f.stall_after, f.stall_secs))
            if not options:
                return None
            cut = min(options, key=lambda c: c.at)
            if cut.kind == "drop" and state.drops_left > 0:
                state.drops_left -= 1
            elif cut.kind == "stall" and state.stalls_left > 0:
                state.stalls_left -= 1
            return cut

    def _plan(self, method: str, url_path: str, headers: dict[str, str]) -> _Plan:
        authorization = headers.get("authorization")
        fault, number, status = self._take_request(url_path, authorization)
        retry = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        if not _auth_ok(fault, authorization):
            return _text_plan(401, {"WWW-Authenticate": "Bearer"})
        if fault.always_status is not None:
            return _text_plan(fault.always_status, retry)
        if status is not None:
            return _text_plan(status, retry)
        info = self._lookup(url_path)
        if fault.redirect_to is not None:
            return self._redirect_plan(fault.redirect_to, info)
        if info is None:
            return _text_plan(404)
        changed = fault.change_etag_after is not None and number > fault.change_etag_after
        plan = self._file_plan(info, headers, fault, changed)
        if method == "GET" and plan.file is not None:
            plan.cut = self._take_cut(url_path, plan.stop - plan.start)
        return plan

    def _redirect_plan(self, location: str, info: _FileInfo | None) -> _Plan:
        headers = {"Location": location, "Content-Length": "0"}
        if info is not None:
            headers["X-Linked-Etag"] = f'"{self._sha256(info)}"'
            headers["X-Linked-Size"] = str(info.size)
        return _Plan(302, headers)

    def _file_plan(self, info: _FileInfo, headers: dict[str, str], fault: Fault, changed: bool) -> _Plan:
        etag, last_modified = self._validators(info, changed)
        out = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream", "Last-Modified": last_modified}
        if etag is not None:
            out["ETag"] = etag
        span: tuple[int, int] | None = None
        range_header = headers.get("range")
        if_range = headers.get("if-range")
        if range_header and not fault.ignore_range and (if_range is None or if_range in (etag, last_modified)):
            try:
                span = parse_range(range_header, info.size)
            except RangeNotSatisfiable:
                out.update({"Content-Range": f"bytes */{info.size}", "Content-Length": "0"})
                return _Plan(416, out)
        start, stop = span if span is not None else (0, info.size)
        if span is not None:
            out["Content-Range"] = f"bytes {start}-{stop - 1}/{info.size}"
        out["Content-Length"] = str(stop - start)
        rate = fault.rate_bps if fault.rate_bps is not None else self.rate_bps
        return _Plan(206 if span else 200, out, file=info.path, start=start, stop=stop, rate_bps=rate)


def _shutdown_quietly(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


# --------------------------------------------------------------------------- CLI


def _generate_spec(text: str) -> tuple[str, int]:
    rel, sep, size = text.rpartition(":")
    parts = rel.split("/")
    if not sep or not rel or rel.startswith("/") or ".." in parts:
        raise argparse.ArgumentTypeError(f"expected org/repo/file.bin:SIZE, got {text!r}")
    try:
        return rel, parse_size(size)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rbee-modelserver", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, type=Path, help="directory to serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--rate-bps", type=int, default=None, help="per-response cap, bytes/second")
    parser.add_argument(
        "--generate",
        nargs="+",
        action="extend",
        type=_generate_spec,
        default=[],
        metavar="REL:SIZE",
        help="create root/REL with SIZE deterministic bytes unless it exists with that size (K/M/G suffixes)",
    )
    return parser.parse_args(argv)


def _wait_for_shutdown_signal() -> None:
    if hasattr(signal, "sigwait"):
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
        return
    try:  # pragma: no cover - platforms without sigwait
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


def main(argv: list[str] | None = None) -> int:
    """Serve `--root`, print one JSON line {"url", "files": {rel: sha256}}, run until SIGTERM/SIGINT."""
    args = _parse_args(argv)
    root: Path = args.root
    root.mkdir(parents=True, exist_ok=True)
    server = ModelServer(root, host=args.host, port=args.port, rate_bps=args.rate_bps)
    files: dict[str, str] = {}
    for rel, size in args.generate:
        path = root / rel
        if path.is_file() and path.stat().st_size == size:
            files[rel] = server.sha256_of(rel)
        else:
            files[rel] = server.add_file(rel, size, seed=zlib.crc32(rel.encode()))
    if hasattr(signal, "pthread_sigmask"):
        # Blocked before the server threads exist, so only sigwait() below receives them.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    with server:
        print(json.dumps({"url": server.url, "files": files}), flush=True)
        _wait_for_shutdown_signal()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
