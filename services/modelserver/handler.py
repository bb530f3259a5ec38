"""How the model server sends an `Answer` (answer.py: status, headers, a body or a file slice) on the wire.

The handler asks its server (`Answering`: `ModelServer.answer`) what to answer, records the request under
the path the server names, then sends the body: with
sendfile on the fast path, in paced pieces under a rate cap, and, when the plan carries a `Cut`,
truncated (FIN), stalled until the client or the server gives up, or short. Body bytes are counted
in the request's record as they are handed to the kernel.
"""

from __future__ import annotations

import os
import select
import socket
import time
from typing import BinaryIO, Protocol, cast
from urllib.parse import unquote, urlsplit

from services.modelserver.answer import Answer
from services.modelserver.threaded import (
    RequestRecord,
    TrackedHandler,
    send_counted,
    sendfile_counted,
    shutdown_quietly,
)

WRITE_CHUNK = 64 * 1024  # piece size for paced / faulty bodies
_HAS_SENDFILE = hasattr(os, "sendfile")


class Answering(Protocol):
    """What the handler asks its server (`ModelServer`): the path a request counts under, and the answer."""

    def answer(self, method: str, url_path: str, headers: dict[str, str]) -> tuple[str, Answer]: ...


class ModelHandler(TrackedHandler):
    server_version = "rbee-modelserver/0.1"

    @property
    def answering(self) -> Answering:
        return cast(Answering, self.owner)

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, head: bool) -> None:
        self.owner._enter()
        try:
            headers = {k.lower(): v for k, v in self.headers.items()}
            url_path, answer = self.answering.answer(self.command, unquote(urlsplit(self.path).path), headers)
            record = RequestRecord(self.command, url_path, headers, answer.status, headers.get("range"), 0)
            self.owner._record(record)
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if not head:
                self._send_body(answer, record)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        finally:
            self.owner._leave()

    # -- bodies

    def _send_body(self, answer: Answer, record: RequestRecord) -> None:
        if answer.file is None:
            if body := answer.data[answer.start : answer.stop]:
                send_counted(self.sock, body, record)
            return
        cut = answer.cut
        limit = answer.stop - answer.start if cut is None else cut.at
        with answer.file.open("rb") as f:
            if answer.rate_bps is None and cut is None and _HAS_SENDFILE:
                sent = sendfile_counted(self.sock, f, answer.start, limit, record)
            else:
                sent = self._write_paced(f, answer.start, limit, answer.rate_bps, record)
        if cut is not None and cut.kind == "stall" and sent == limit:
            self._stall(cut.stall_secs)
        if cut is not None or sent < limit:
            self._cut()

    def _write_paced(self, f: BinaryIO, start: int, count: int, rate_bps: int | None, record: RequestRecord) -> int:
        """Write in pieces, sleeping (on the stop event) to hold `rate_bps`; returns the bytes sent."""
        piece = WRITE_CHUNK if rate_bps is None else max(1024, min(WRITE_CHUNK, rate_bps // 20))
        stopping = self.owner._stopping
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
            if self.owner._stopping.wait(min(remaining, 0.05)) or self._peer_gone():
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
