"""The partial file on disk: sequential writes through page-aligned buffers, sha256 on the way.

The bytes go to disk through a BlockWriter (O_DIRECT where the filesystem allows; blockwriter.py
says why). Threads: a batch is written on one thread and hashed on another at the same time, while
the body's reader fills the next one; both release the GIL (pwrite, sha256 over 2 KiB). The two pools
are shared by every download (FilePools). Each file's jobs on the writer pool (its writes, and the
flush, fsync and close of its BlockWriter) run one after another, in order, and so do its hash updates
(a job waits for the one submitted before it): nothing touches the BlockWriter while a write of it runs,
even when the task that was waiting for that write was cancelled. The two lanes do not wait for
each other: up to `_DEPTH` batches may wait in each, so a write that takes longer than its hash (a
direct write waits for the disk) does not hold the hash back, nor the reader. In lock-step (the reader
waiting for both of the last batch) a 1 GiB copy spent 45% of its body thread's time waiting (py-spy),
and took 1.04-1.09 s against 0.91-0.93 s with the lanes (a hive copying from a peer and from the
test hub, 8 runs each).
Threads of its own per download cost the event loop a Thread.start each, ~0.2 s of loop time when
100 downloads started together (py-spy).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import errno
import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from services.hive.disk.blockwriter import BlockWriter
from services.hive.disk.fileio import hash_range
from services.hive.refs import PART_SUFFIX

__all__ = ["FilePools", "PartFile", "part_path"]

_BLOCK_MAX = 4 * 1024 * 1024
_DEPTH = 2  # batches queued in each lane (writes, hash) before the reader waits


def _update_all(digest: Any, pieces: list[bytes]) -> None:
    for piece in pieces:
        digest.update(piece)


_Job = concurrent.futures.Future[Any]


def _after(before: _Job | None, func: Callable[..., None], *args: Any) -> None:
    """Run `func` once the lane's job before it is done (its error is this job's too: no write after a
    failed one, which would leave a hole). The one before was submitted first, so it runs already or is
    done: waiting for it never waits for a free thread."""
    if before is not None:
        try:
            before.result()
        except concurrent.futures.CancelledError:  # (not this task's cancel: an error of the file's)
            raise OSError(errno.ECANCELED, "a write before this one was cancelled") from None
    func(*args)


def _after_settled(before: _Job | None, func: Callable[..., Any], *args: Any) -> Any:
    """Run `func` once the job before it has ended, however it ended (closing the file, opening it anew)."""
    if before is not None:
        concurrent.futures.wait([before])
    return func(*args)


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
    `_DEPTH` batches are queued while the next fills, so memory stays at about `_DEPTH` + 1
    batches and the aligned buffer.
    """

    def __init__(self, path: Path, batch_bytes: int, direct: bool = True, pools: FilePools | None = None) -> None:
        self.path = path
        self.batch_bytes = batch_bytes
        # the aligned buffer, resident for every running download: direct writes are synchronous,
        # and at 1 MiB the writer thread was the pipeline's bottleneck (py-spy: 1.27 s per GiB in
        # pwrite); dd measured 1.2 GB/s at 1 MiB, 1.3-1.4 GB/s at 2 and 4 MiB. No larger than a
        # batch: the file grows a block at a time, and a follower of this partial reads no further
        self._block_bytes = min(batch_bytes, _BLOCK_MAX)
        self.direct = direct
        self._shared = pools
        self._own: FilePools | None = None  # without shared pools: two threads of its own, until close
        self._writer: BlockWriter | None = None
        self._hash: Any = hashlib.sha256()
        self.size = 0
        self._batch: list[bytes] = []
        self._batched = 0
        self._writes: collections.deque[_Job] = collections.deque()  # queued, not yet waited for
        self._hashes: collections.deque[_Job] = collections.deque()
        self._last_write: _Job | None = None  # every writer-pool job of this file comes after this one
        self._last_hash: _Job | None = None

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
        job = self._writer_pool.submit(_after_settled, self._last_write, func, *args)
        self._last_write = job
        return asyncio.wrap_future(job)

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
            for lane in (self._writes, self._hashes):
                while len(lane) >= _DEPTH:
                    lane.popleft().result()
            self._queue(batch)

    def _queue(self, batch: list[bytes]) -> None:
        writer = self._writer
        assert writer is not None
        self._last_write = self._writer_pool.submit(_after, self._last_write, writer.write, batch)
        self._writes.append(self._last_write)
        self._last_hash = self._hash_pool.submit(_after, self._last_hash, _update_all, self._hash, batch)
        self._hashes.append(self._last_hash)

    def _inflight(self) -> list[_Job]:
        return [*self._writes, *self._hashes]

    async def _submit(self) -> None:
        batch, self._batch, self._batched = self._batch, [], 0
        if not batch:
            return
        for lane in (self._writes, self._hashes):
            while len(lane) >= _DEPTH:
                await asyncio.wrap_future(lane.popleft())
        self._queue(batch)

    async def _drain(self) -> None:
        await self._submit()
        try:
            for lane in (self._writes, self._hashes):
                while lane:
                    await asyncio.wrap_future(lane.popleft())
        finally:
            self._writes.clear()
            self._hashes.clear()

    async def _drain_quietly(self) -> None:
        """Wait for what is in flight, ignoring its errors: the file it went to is being replaced."""
        self._batch, self._batched = [], 0
        for future in self._inflight():
            try:
                await asyncio.wrap_future(future)
            except OSError:
                pass
        self._writes.clear()
        self._hashes.clear()

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
        idle = not self._writes and not self._hashes
        if self._writer is None and idle and (self._shared is not None or self._own is None):
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
