"""File I/O of the hive: positional writes of the partial (full pwrites, early writeback, hashing a
range back, run on a thread so that a cancel never leaves one working on a closed descriptor), and the
one way a file is put in place atomically (written under a temporary name beside it, then renamed)."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, TypeVar

import structlog

__all__ = [
    "fsync_dir",
    "hash_range",
    "in_thread",
    "move_into_place",
    "pwrite_all",
    "pwrite_full",
    "replace_atomically",
    "sha256_file",
    "start_writeback",
    "write_text_atomically",
]

log = structlog.get_logger()

T = TypeVar("T")

_HASH_BLOCK = 1024 * 1024  # hashing re-reads in blocks this big, into one reused buffer
_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range() -> Callable[[int, int, int], None]:
    """Linux sync_file_range(SYNC_FILE_RANGE_WRITE): start writing a range back now, without
    waiting, so the fsync before the final rename has little left to do. A no-op elsewhere."""
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.sync_file_range
        func.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return lambda fd, offset, length: None

    def start_writeback(fd: int, offset: int, length: int) -> None:
        func(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # advisory: errors are ignored

    return start_writeback


start_writeback = _load_sync_file_range()


def pwrite_full(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:  # pragma: no cover - pwrite reports errors by raising
            raise OSError(errno.EIO, "short write")
        view = view[n:]
        offset += n


def pwrite_all(fd: int, pieces: list[bytes], offset: int) -> None:
    """Write `pieces` back to back at `offset` (through the page cache), then start their writeback."""
    start, length = offset, sum(len(piece) for piece in pieces)
    while pieces:
        n = os.pwritev(fd, pieces, offset)
        offset += n
        while pieces and n >= len(pieces[0]):
            n -= len(pieces[0])
            pieces = pieces[1:]
        if n and pieces:
            pieces = [pieces[0][n:], *pieces[1:]]
    start_writeback(fd, start, length)


def hash_range(fd: int, digest: Any, start: int, end: int) -> None:
    view = memoryview(bytearray(min(_HASH_BLOCK, max(1, end - start))))
    pos = start
    while pos < end:
        n = os.preadv(fd, [view[: min(len(view), end - pos)]], pos)
        if n <= 0:
            raise OSError(errno.EIO, "short read while hashing")
        digest.update(view[:n])
        pos += n


async def in_thread(executor: Executor, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on `executor`. A cancel of the caller waits for the call to end before it goes
    on: a cancelled run_in_executor leaves the thread running, and a pwrite or read that outlives
    the file's close lands on whatever descriptor took its number next."""
    future = asyncio.get_running_loop().run_in_executor(executor, fn, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise


def sha256_file(path: Path) -> str:
    """The sha256 of a file already on disk (a blob or a file a request finds in place), read off the
    event loop by the caller; logged with the time it took."""
    h = hashlib.sha256()
    started = time.monotonic()
    with open(path, "rb") as f:
        while block := f.read(8 * 1024 * 1024):
            h.update(block)
    log.info("hashed_existing_file", path=str(path), secs=round(time.monotonic() - started, 3))
    return h.hexdigest()


def replace_atomically(path: Path, write: Callable[[Path], object], *, durable: bool = False) -> None:
    """`write` makes the new file (or symlink) under a temporary name beside `path`, which is then
    renamed over `path`: a reader sees the old one or the new one, never half of one. `durable`:
    the rename is synced too (`write` syncs its own bytes)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        if durable:
            move_into_place(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()


def write_text_atomically(path: Path, text: str, *, durable: bool = False) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())

    replace_atomically(path, write, durable=durable)


def move_into_place(src: Path, dest: Path) -> None:
    """Rename a finished file to its final name, and sync the rename."""
    os.replace(src, dest)
    fsync_dir(dest.parent)


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
