"""The partial file on disk: sequential writes through page-aligned buffers, sha256 on the way.

Why O_DIRECT: on the machines we measure on, writing through the page cache and then fsyncing
took 0.3 to 2.4 s per GiB from one run to the next, while O_DIRECT writes of 4 MiB blocks took
0.46 to 0.55 s every time (BENCHMARKS.md). The hive must fsync before it renames a file into
place, so it pays for the page cache without getting anything back; direct writes make the
bytes durable as they arrive and keep multi-GB model files from flushing everything else out of
the cache. Where the filesystem refuses O_DIRECT (some tmpfs, FUSE, network filesystems) the
writer falls back to ordinary writes with early writeback, and says so in the log.

Threads: a batch is written on one thread and hashed on another at the same time, while the event
loop reads the next one; both release the GIL (pwrite, sha256 over 2 KiB). The two pools are
shared by every download (FilePools): a PartFile has at most one job in each at a time, since it
waits for its last batch before queueing the next, so each file's writes and hash stay in order.
Threads of its own per download cost the event loop a Thread.start each, ~0.2 s of loop time when
100 downloads started together (py-spy).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import errno
import hashlib
import mmap
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from services.hive.refs import PART_SUFFIX

__all__ = ["BlockWriter", "FilePools", "PartFile", "hash_range", "part_path", "pwrite_all", "start_writeback"]

log = structlog.get_logger()

ALIGN = 4096  # O_DIRECT wants buffer address, file offset and length aligned to the logical block size
_BLOCK_MAX = 4 * 1024 * 1024
_HASH_BLOCK = 1024 * 1024  # hashing re-reads in blocks this big, into one reused buffer
_SYNC_FILE_RANGE_WRITE = 2
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)


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


def _pwrite_full(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:  # pragma: no cover - pwrite reports errors by raising
            raise OSError(errno.EIO, "short write")
        view = view[n:]
        offset += n


class BlockWriter:
    """Appends to a file from `offset` on, through one page-aligned buffer.

    Full buffers go out with O_DIRECT at aligned offsets. What is left when the caller flushes
    (the last partial block) goes out through the page cache, and stays at the head of the
    buffer: the next direct write rewrites that block whole, with the same bytes. So the file
    only ever holds bytes that were received, and its size is always the count of them, which
    is what resuming relies on. Confined to one thread at a time.
    """

    def __init__(self, path: Path, offset: int, buffer_bytes: int, direct: bool = True) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR)
        self.dfd: int | None = None
        if direct and _O_DIRECT:
            try:
                self.dfd = os.open(path, os.O_WRONLY | _O_DIRECT)
            except OSError as exc:
                log.info("direct_io_unavailable", path=str(path), reason=exc.strerror)
        self._buf = mmap.mmap(-1, max(ALIGN, -(-buffer_bytes // ALIGN) * ALIGN))  # mmap: page-aligned
        self._view = memoryview(self._buf)
        self._cap = len(self._buf)
        self.base = offset
        self.fill = 0
        try:
            if self.dfd is not None:
                self._load_head(offset)
        except BaseException:
            self.close()
            raise

    @property
    def direct(self) -> bool:
        return self.dfd is not None

    @property
    def position(self) -> int:
        """File offset of the next byte to be written."""
        return self.base + self.fill

    def _load_head(self, offset: int) -> None:
        """Start the buffer at the block boundary below `offset`, holding the bytes already there."""
        self.base = offset - offset % ALIGN
        self.fill = 0
        while self.fill < offset - self.base:
            n = os.preadv(self.fd, [self._view[self.fill : offset - self.base]], self.base + self.fill)
            if n <= 0:
                raise OSError(errno.EIO, "short read of the partial file's last block")
            self.fill += n

    def write(self, pieces: list[bytes]) -> None:
        view, cap = self._view, self._cap
        for piece in pieces:
            data = memoryview(piece)
            while data:
                n = min(cap - self.fill, len(data))
                view[self.fill : self.fill + n] = data[:n]
                self.fill += n
                data = data[n:]
                if self.fill == cap:
                    self._emit(cap)
                    self.base += cap
                    self.fill = 0

    def flush(self) -> None:
        """Put every byte given so far into the file (the last partial block through the page cache)."""
        if not self.fill:
            return
        if self.dfd is None:
            self._emit(self.fill)
            self.base += self.fill
            self.fill = 0
            return
        aligned = self.fill - self.fill % ALIGN
        if aligned:
            self._emit(aligned)
        tail = self.fill - aligned
        if tail:
            _pwrite_full(self.fd, self._view[aligned : self.fill], self.base + aligned)
            self._view[:tail] = self._view[aligned : self.fill]  # rewritten whole by the next direct write
        self.base += aligned
        self.fill = tail

    def _emit(self, n: int) -> None:
        view = self._view[:n]
        if self.dfd is not None:
            try:
                _pwrite_full(self.dfd, view, self.base)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                log.info("direct_io_unavailable", path=str(self.path), reason="the filesystem refused a direct write")
                self._close_direct()
        _pwrite_full(self.fd, view, self.base)
        start_writeback(self.fd, self.base, n)

    def sync(self) -> None:
        self.flush()
        os.fsync(self.fd)

    def _close_direct(self) -> None:
        if self.dfd is not None:
            dfd, self.dfd = self.dfd, None
            os.close(dfd)

    def close(self) -> None:
        self._close_direct()
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
        try:
            self._view.release()
            self._buf.close()
        except BufferError:  # a slice still held by an exception's traceback: freed with it
            pass


def _update_all(digest: Any, pieces: list[bytes]) -> None:
    for piece in pieces:
        digest.update(piece)


class FilePools:
    """The writer and hash threads every PartFile uses; `shutdown` when the downloader closes."""

    def __init__(self, writers: int = 8, hashers: int = 4) -> None:
        self.writer = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="rbee-write")
        self.hasher = ThreadPoolExecutor(max_workers=hashers, thread_name_prefix="rbee-hash")

    def shutdown(self) -> None:
        self.writer.shutdown(wait=False, cancel_futures=True)
        self.hasher.shutdown(wait=False, cancel_futures=True)


class PartFile:
    """The partial file of one download: batches from the event loop, written and hashed on two threads.

    `size` counts every byte handed to `write`; `flush` makes them all be in the file. At most
    one batch is in flight while the next fills, so memory stays at about three batches (the
    aligned buffer is one).
    """

    def __init__(self, path: Path, batch_bytes: int, direct: bool = True, pools: FilePools | None = None) -> None:
        self.path = path
        self.batch_bytes = batch_bytes
        # the aligned buffer, resident for every running download: direct writes are synchronous,
        # and at 1 MiB the writer thread was the pipeline's bottleneck (py-spy: 1.27 s per GiB in
        # pwrite); dd measured 1.2 GB/s at 1 MiB, 1.3-1.4 GB/s at 2 and 4 MiB
        self._block_bytes = min(batch_bytes, _BLOCK_MAX)
        self.direct = direct
        self._shared = pools
        self._own: FilePools | None = None  # without shared pools: two threads of its own, until close
        self._writer: BlockWriter | None = None
        self._hash: Any = hashlib.sha256()
        self.size = 0
        self._batch: list[bytes] = []
        self._batched = 0
        self._inflight: collections.deque[concurrent.futures.Future[None]] = collections.deque()

    @property
    def _writer_pool(self) -> ThreadPoolExecutor:
        return self._pools().writer

    @property
    def _hash_pool(self) -> ThreadPoolExecutor:
        return self._pools().hasher

    def _pools(self) -> FilePools:
        if self._shared is not None:
            return self._shared
        if self._own is None:  # (again after close: a segmented transfer may hand the file back)
            self._own = FilePools(writers=1, hashers=1)
        return self._own

    def _on_writer(self, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(self._writer_pool, func, *args)

    async def open_fresh(self) -> None:
        await self._drain_quietly()
        await self._on_writer(self._close_writer)

        def _create() -> BlockWriter:
            with open(self.path, "wb"):
                pass
            return BlockWriter(self.path, 0, self._block_bytes, self.direct)

        self._writer = await self._on_writer(_create)
        self._hash = hashlib.sha256()
        self.size = 0

    async def open_existing(self) -> int:
        """Open an existing partial to append, hashing what it holds (off the event loop)."""
        await self._drain_quietly()
        await self._on_writer(self._close_writer)

        def _rehash() -> tuple[Any, int]:
            digest = hashlib.sha256()
            with open(self.path, "rb") as f:
                n = f.seek(0, os.SEEK_END)
                hash_range(f.fileno(), digest, 0, n)
            return digest, n

        self._hash, self.size = await asyncio.get_running_loop().run_in_executor(self._hash_pool, _rehash)
        self._writer = await self._on_writer(BlockWriter, self.path, self.size, self._block_bytes, self.direct)
        return self.size

    async def write(self, chunk: bytes) -> None:
        self._batch.append(chunk)
        self._batched += len(chunk)
        self.size += len(chunk)
        if self._batched >= self.batch_bytes:
            await self._submit()

    def write_blocking(self, chunk: bytes) -> None:
        """`write` for a worker thread that has the file to itself meanwhile (the event loop
        leaves the PartFile alone until that thread is done)."""
        self._batch.append(chunk)
        self._batched += len(chunk)
        self.size += len(chunk)
        if self._batched >= self.batch_bytes:
            batch, self._batch, self._batched = self._batch, [], 0
            while self._inflight:  # one batch in flight while the next fills
                self._inflight.popleft().result()
            self._queue(batch)

    def _queue(self, batch: list[bytes]) -> None:
        writer = self._writer
        assert writer is not None
        self._inflight.append(self._writer_pool.submit(writer.write, batch))
        self._inflight.append(self._hash_pool.submit(_update_all, self._hash, batch))

    async def _submit(self) -> None:
        batch, self._batch, self._batched = self._batch, [], 0
        if not batch:
            return
        while self._inflight:  # one batch in flight (on both threads) while the next fills
            await asyncio.wrap_future(self._inflight.popleft())
        self._queue(batch)

    async def _drain(self) -> None:
        await self._submit()
        try:
            while self._inflight:
                await asyncio.wrap_future(self._inflight.popleft())
        finally:
            self._inflight.clear()

    async def _drain_quietly(self) -> None:
        """Wait for what is in flight, ignoring its errors: the file it went to is being replaced."""
        self._batch, self._batched = [], 0
        for future in list(self._inflight):
            try:
                await asyncio.wrap_future(future)
            except OSError:
                pass
        self._inflight.clear()

    async def flush(self) -> None:
        """Everything received so far is in the file and hashed."""
        await self._drain()
        if self._writer is not None:
            await self._on_writer(self._writer.flush)

    async def finish(self) -> str:
        """Everything written, fsynced and closed; the sha256 of the whole file."""
        await self._drain()
        writer = self._writer
        assert writer is not None
        await self._on_writer(writer.sync)
        await self.close()
        return str(self._hash.hexdigest())

    async def detach(self) -> tuple[Any, int]:
        """Close the file for a segmented transfer to take over; its sha256 so far and its size."""
        await self.flush()
        await self.close()
        return self._hash, self.size

    def _close_writer(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()

    async def close(self) -> None:
        """Stop, keeping what is in the file; errors of a write in flight are dropped (ENOSPC...)."""
        if self._writer is None and not self._inflight and (self._shared is not None or self._own is None):
            return
        try:
            await self._drain()
            if self._writer is not None:
                await self._on_writer(self._writer.flush)
        except OSError:
            pass
        finally:
            try:
                await self._on_writer(self._close_writer)
            finally:
                own, self._own = self._own, None
                if own is not None:
                    own.shutdown()


def part_path(dest: Path) -> Path:
    """Where the partial of `dest` is written until it is complete."""
    return dest.with_name(dest.name + PART_SUFFIX)


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
