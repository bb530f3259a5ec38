"""What a hive serves its peers: the blobs it holds, by digest, and the part of one it is still
downloading that is already on disk (README, "Fleet pulls").

`GET /v2/blobs/{digest}` (Range `bytes=N-` or `bytes=N-M`; behind RBEE_API_TOKEN like every route):
- a blob in the cache (`hub/models--*/blobs/{digest}`) is sent as a file;
- a blob still downloading (`.rbee/partial/*/{digest}.part`) is sent as it grows: the body follows
  the partial, sending each byte once it is on disk, until the file is whole (then the rest comes
  from the blob it was renamed to). How far a reader may read is the partial's *safe prefix*: its
  size for a single connection (the writer only ever appends received bytes), the contiguous
  written prefix of its segment plan (`{digest}.json`) for a segmented one, never a hole.
  `X-Rbee-Blob-State: partial` says so, `X-Rbee-Available` how many bytes were safe when it began,
  and `Content-Length` is the whole rest: a body that ends short (the download was cancelled or
  failed, the hive stopped) is an error the reader resumes elsewhere with Range;
- a blob a download here is to fetch but has not begun (routes: `503`, `X-Rbee-Blob-State: planned`)
  is asked for again by the reader a second later.
`ETag` is the digest (strong: a blob's bytes never change); the reader verifies every byte against
it anyway. Nothing else of the hive is reachable here: the digest must be 40 or 64 hex.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import h11
import structlog

from services.hive.cache.layout import hub_dir, partials_dir
from services.hive.cache.partials import PartialNotes
from services.hive.cache.repo import DIGEST_RE
from services.hive.transfer.segments import SegmentPlan
from shared.digits import is_ascii_digits

__all__ = [
    "BadRange",
    "BlobView",
    "ChunkThrottle",
    "ShortBodyLog",
    "find_blob",
    "follow",
    "parse_range",
    "quiet_short_bodies",
    "safe_prefix",
]

log = structlog.get_logger()

_CHUNK = 1024 * 1024
_POLL = 0.05  # seconds between looks at a growing partial
_IDLE_LIMIT = 120.0  # a partial that does not grow for this long ends the body (its download stalled)


class ChunkThrottle(Protocol):
    """What a body's chunks are taken through before they are sent (a TokenBucket)."""

    async def consume(self, n: int) -> None: ...


@dataclass(frozen=True, slots=True)
class BlobView:
    digest: str
    blob: Path | None  # the finished blob, if there is one
    partial: Path | None  # else the partial that is becoming it
    total: int | None  # the blob's size, when known


def find_blob(models_dir: Path, digest: str) -> BlobView | None:
    """Where this hive holds `digest`: a finished blob of any repo, else a partial on its way."""
    if not DIGEST_RE.fullmatch(digest):
        return None
    for blob in hub_dir(models_dir).glob(f"models--*/blobs/{digest}"):
        if blob.is_file():
            return BlobView(digest, blob, None, blob.stat().st_size)
    for partial in partials_dir(models_dir).glob(f"models--*/{digest}.part"):
        if partial.is_file():
            return BlobView(digest, None, partial, PartialNotes.read(partial).total)
    return None


class BadRange(ValueError):
    pass


def parse_range(value: str | None, total: int) -> tuple[int, int] | None:
    """`Range: bytes=N-` / `bytes=N-M` -> [start, stop) within `total`; None for no Range (all of it);
    BadRange for anything else we do not serve (several ranges, suffixes, past the end)."""
    if value is None:
        return None
    unit, _, spec = value.strip().partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or not dash or "," in spec or not is_ascii_digits(first.strip()):
        raise BadRange(value)
    start = int(first)
    stop = total if not last.strip() else int(last) + 1 if is_ascii_digits(last.strip()) else -1
    if stop < 0 or start >= total or stop <= start:
        raise BadRange(value)
    return start, min(stop, total)


def safe_prefix(partial: Path) -> int:
    """How many bytes from 0 a reader may take from `partial` now (0 if it is gone)."""
    plan_text = PartialNotes.read(partial).segments
    try:
        size = partial.stat().st_size
    except OSError:
        return 0
    if isinstance(plan_text, str):
        plan = SegmentPlan.from_json(plan_text)
        return 0 if plan is None else min(plan.frontier(), size)
    return size


async def follow(
    view: BlobView,
    start: int,
    stop: int | None,
    find: Callable[[], BlobView | None],
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    sent: Callable[[int], object] = lambda size: None,
    take: Callable[[int], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """The bytes [start, stop) of the blob (to its end with None), following a partial as it grows;
    `take` (a ServeThrottle's, peers/serve.py) is awaited before each chunk goes, `sent` told its size.
    One descriptor per file read (the partial's stays good when it is renamed to the blob), closed
    when the body ends, and never while a read on it is still running in its thread."""
    pos = start
    idle = 0.0
    files = _Files()
    try:
        while stop is None or pos < stop:
            current = find()
            if current is None:
                return  # cancelled or failed: the reader sees a short body
            path = current.blob or current.partial
            assert path is not None
            limit = current.total if current.blob is not None else safe_prefix(path)
            if limit is None:
                return
            if stop is not None:
                limit = min(limit, stop)
            if limit > pos:
                idle = 0.0
                fd = files.open(path)
                if fd is None:
                    continue  # (renamed meanwhile: look again)
                while pos < limit:
                    if take is not None:
                        await take(min(_CHUNK, limit - pos))
                    chunk = await files.pread(fd, min(_CHUNK, limit - pos), pos)
                    if not chunk:
                        return
                    pos += len(chunk)
                    sent(len(chunk))
                    yield chunk
                continue
            if current.blob is not None or (current.total is not None and pos >= current.total):
                return
            idle += _POLL
            if idle > _IDLE_LIMIT:
                return
            await sleep(_POLL)
    finally:
        files.close()


class _Files:
    """The open descriptors of one body, by path, and the read running on one of them (a thread's):
    a descriptor closes only once no read on it runs, however the body is cancelled (Starlette's
    cancel scopes cancel again whatever waits inside them)."""

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}
        self._reading: dict[int, asyncio.Future[bytes]] = {}

    def open(self, path: Path) -> int | None:
        if path not in self._fds:
            try:
                self._fds[path] = os.open(path, os.O_RDONLY)  # (a regular file opens at once)
            except OSError:
                return None
        return self._fds[path]

    async def pread(self, fd: int, size: int, offset: int) -> bytes:
        future = asyncio.get_running_loop().run_in_executor(None, os.pread, fd, size, offset)
        self._reading[fd] = future
        try:
            return await asyncio.shield(future)
        finally:
            if future.done():
                self._reading.pop(fd, None)

    def close(self) -> None:
        for fd in self._fds.values():
            running = self._reading.pop(fd, None)
            if running is not None and not running.done():
                running.add_done_callback(functools.partial(_close_after, fd))
            else:
                os.close(fd)
        self._fds.clear()


def _close_after(fd: int, read: asyncio.Future[bytes]) -> None:
    if not read.cancelled():
        read.exception()  # (retrieved: a failed read of a body nobody reads any more is no news)
    os.close(fd)


class ShortBodyLog(logging.Filter):
    """A blob's body that ends before its Content-Length is normal operation here (the partial's
    download was cancelled, failed or stopped: the reader resumes elsewhere with Range), but uvicorn's
    h11 server logs it as "Exception in ASGI application" with a traceback (h11 refuses to end the
    message short; the connection is closed, which is what tells the reader). On `uvicorn.error`,
    this filter turns that record into one info line and lets every other one through."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, h11.LocalProtocolError) and "Too little data for declared Content-Length" in str(exc):
            log.info("blob_body_ended_short", reason="the partial it followed stopped growing; the reader resumes")
            return False
        return True


def quiet_short_bodies(logger: logging.Logger) -> None:
    """Install ShortBodyLog on `logger` once (an app built twice in one process adds it once)."""
    if not any(isinstance(f, ShortBodyLog) for f in logger.filters):
        logger.addFilter(ShortBodyLog())
