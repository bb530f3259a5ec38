"""How the model server sends an answer: a `Plan` (status, headers, a body or a file slice) on the wire.

The handler asks `ModelServer._plan` what to answer, records the request, then sends the body: with
sendfile on the fast path, in paced pieces under a rate cap, and, when the plan carries a `Cut`,
truncated (FIN), stalled until the client or the server gives up, or short. Body bytes are counted
in the request's record as they are handed to the kernel.
"""

from __future__ import annotations

import os
import select
import socket
import time
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast
from urllib.parse import unquote, urlsplit

from services.modelserver.faults import Cut
from services.modelserver.threaded import (
    RequestRecord,
    TrackedHandler,
    send_counted,
    sendfile_counted,
    shutdown_quietly,
)

if TYPE_CHECKING:
    from services.modelserver.server import ModelServer

WRITE_CHUNK = 64 * 1024  # piece size for paced / faulty bodies
_HAS_SENDFILE = hasattr(os, "sendfile")


@dataclass
class Plan:
    """What to answer: status and headers, then either `body` or the file slice [start, stop)."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    file: Path | None = None
    start: int = 0
    stop: int = 0
    rate_bps: int | None = None
    cut: Cut | None = None


def text_plan(status: int, extra: dict[str, str] | None = None) -> Plan:
    """A short text/plain answer naming the status, e.g. "503 Service Unavailable"."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body = f"{status} {phrase}\n".encode()
    headers = {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body)), **(extra or {})}
    return Plan(status, headers, body=body)


class ModelHandler(TrackedHandler):
    server_version = "rbee-modelserver/0.1"

    @property
    def model(self) -> ModelServer:
        return cast("ModelServer", self.owner)

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, head: bool) -> None:
        self.model._enter()
        try:
            url_path = unquote(urlsplit(self.path).path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            url_path = self.model._canonical(url_path)[0]  # a resolve at a made-up commit counts as its revision's
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

    def _send_body(self, plan: Plan, record: RequestRecord) -> None:
        if plan.file is None:
            if plan.body:
                send_counted(self.sock, plan.body, record)
            return
        limit = plan.stop - plan.start if plan.cut is None else plan.cut.at
        with plan.file.open("rb") as f:
            if plan.rate_bps is None and plan.cut is None and _HAS_SENDFILE:
                sent = sendfile_counted(self.sock, f, plan.start, limit, record)
            else:
                sent = self._write_paced(f, plan.start, limit, plan.rate_bps, record)
        if plan.cut is not None and plan.cut.kind == "stall" and sent == limit:
            self._stall(plan.cut.stall_secs)
        if plan.cut is not None or sent < limit:
            self._cut()

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
            send_counted(self.sock, data, record)
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
        shutdown_quietly(self.sock)
        self.sock.close()
