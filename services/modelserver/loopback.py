"""A threaded HTTP/1.1 server on loopback for the test hub and its CDN: lifecycle, records, bodies.

Stdlib only. A subclass of `LoopbackServer` answers each request with an `Answer` (answer.py: status,
headers and a body, bytes or a slice of a file on disk sent with sendfile); this module sends it,
records it (`HubRecord`) and keeps count of the body bytes really written. A server given an `uplink`
(a `Pacer`: cdn.Uplink) sends every body through it, `chunk` bytes at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, cast
from urllib.parse import unquote, urlsplit

from services.modelserver.answer import Answer
from services.modelserver.threaded import (
    RequestRecord,
    ThreadedServer,
    TrackedHandler,
    send_counted,
    sendfile_counted,
)


class Pacer(Protocol):
    """A shared byte rate (cdn.Uplink): `take(n)` returns once `n` more bytes may go out."""

    chunk: int

    @property
    def rate_bps(self) -> float | None: ...

    def take(self, n: int) -> None: ...


@dataclass
class HubRecord(RequestRecord):
    """A `RequestRecord` plus what the hub needs: the raw (still quoted) path, the query, the client."""

    raw_path: str = ""
    query: str = ""
    client: str = ""


class _Handler(TrackedHandler):
    @property
    def loopback(self) -> LoopbackServer:
        return cast("LoopbackServer", self.owner)

    def version_string(self) -> str:
        return self.loopback.server_header

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def _serve(self) -> None:
        owner = self.loopback
        owner._enter()
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
            owner._leave()

    def _send_body(self, answer: Answer, record: HubRecord) -> None:
        pacer = self.loopback.uplink
        if pacer is not None and pacer.rate_bps is None:
            pacer = None
        step = pacer.chunk if pacer is not None else answer.stop - answer.start
        if answer.file is None:
            for at in range(answer.start, answer.stop, max(1, step)):
                chunk = answer.data[at : min(at + step, answer.stop)]
                if pacer is not None:
                    pacer.take(len(chunk))
                send_counted(self.sock, chunk, record)
            return
        with answer.file.open("rb") as f:
            for at in range(answer.start, answer.stop, max(1, step)):
                count = min(step, answer.stop - at)
                if pacer is not None:
                    pacer.take(count)
                if sendfile_counted(self.sock, f, at, count, record) < count:
                    return  # the file shrank


class LoopbackServer(ThreadedServer[HubRecord]):
    """Serve on a background daemon thread; `start()/stop()` or a context manager. Subclasses `answer`."""

    handler = _Handler
    server_header = "rbee-loopback/0.1"
    uplink: Pacer | None = None  # every body sent through it when set (and capped)

    def answer(self, method: str, raw_path: str, query: str, headers: dict[str, str], client: str) -> Answer:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop serving and cut open connections. Idempotent; a stopped server has no url and may start again."""
        super().stop()
        self._httpd = self._url = None
        self._stopping.clear()
