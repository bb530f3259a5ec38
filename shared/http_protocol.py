"""uvicorn's h11 protocol, answering a request it cannot parse with the contract's JSON error body.

h11 refuses a malformed request before any ASGI app sees it (`Content-Length: abc`, a bad request
line, an illegal header), and uvicorn answers that with a text/plain 400. Every error a client of
ours gets is JSON (README, "Errors"), so the services run uvicorn with this protocol class instead.
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from shared.errors import error_body

__all__ = ["JsonErrorH11Protocol"]


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
