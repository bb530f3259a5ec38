"""The three places the hive reaches under httpx into httpcore, for speed. Explained once, here.

Verified on httpcore 1.0.9 with h11 0.16 (pinned to those minor series in pyproject.toml); each is
guarded, so a future httpcore without them costs speed, never correctness.

1. Read size (`raise_read_size`): httpcore reads a body 64 KiB per socket read; for multi-GB
   files that per-read overhead dominated the hive's CPU (measured from local nginx: 216-233 MB/s
   at 64 KiB, 325-575 MB/s at 1 MiB). A guarded override of its class constants.
2. Raw body reads (`body_chunks`): after the first chunk, a plain Content-Length body is read
   straight off the connection (httpcore's documented `network_stream` extension): h11 copies
   every byte three more times under the GIL, and skipping that took a GiB from local nginx from
   1.81 to 1.46 s. Safe because h11 hands over everything it has buffered with each chunk of such
   a body; the connection is not reused afterwards (h11 never saw the end).
3. Waking a blocked reader (`shut_down`): shutting the `network_stream`'s socket down wakes a
   thread blocked in recv(); closing the response would not.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import httpx

from shared.digits import is_ascii_digits

__all__ = ["RAW_READ", "body_chunks", "raise_read_size", "shut_down"]

RAW_READ = 1024 * 1024  # bytes per socket read, both for httpcore's reads and for raw body reads


def raise_read_size(size: int = RAW_READ) -> None:
    try:
        from httpcore._async.http11 import AsyncHTTP11Connection
        from httpcore._sync.http11 import HTTP11Connection
    except ImportError:  # pragma: no cover - a future httpcore
        return
    for cls in (AsyncHTTP11Connection, HTTP11Connection):
        current = getattr(cls, "READ_NUM_BYTES", None)
        if isinstance(current, int) and current < size:
            cls.READ_NUM_BYTES = size


def body_chunks(resp: httpx.Response, read_timeout: float) -> Iterator[bytes]:
    """A sync response's body, chunk by chunk, raw off the connection after the first (see 2.)."""
    chunks = resp.iter_raw()
    first = next(chunks, None)
    if first is None:
        return
    yield first
    length = resp.headers.get("content-length", "")
    network = resp.extensions.get("network_stream")
    if (
        network is None
        or not is_ascii_digits(length)
        or resp.http_version != "HTTP/1.1"
        or "transfer-encoding" in resp.headers
        or resp.headers.get("content-encoding", "identity").lower() != "identity"
    ):
        yield from chunks
        return
    remaining = int(length) - len(first)
    while remaining > 0:
        data: bytes = network.read(min(remaining, RAW_READ), read_timeout)
        if not data:
            return  # ended early: the caller sees a short body and resumes
        remaining -= len(data)
        yield data


def shut_down(resp: httpx.Response) -> None:
    """Shut a response's socket down, so a thread blocked reading it wakes up (see 3.)."""
    stream = resp.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
