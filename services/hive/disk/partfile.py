"""The partial file on disk: sequential writes through page-aligned buffers, sha256 on the way.

The bytes go to disk through a BlockWriter (O_DIRECT where the filesystem allows; blockwriter.py
says why). Threads: a batch is written on one thread and hashed on another at the same time, while
the event loop reads the next one; both release the GIL (pwrite, sha256 over 2 KiB). The two pools are
shared by every download (FilePools): a PartFile has at most one job in each at a time, since it
waits for its last batch before queueing the next, so each file's writes and hash stay in order.
Threads of its own per download cost the event loop a Thread.start each, ~0.2 s of loop time when
100 downloads started together (py-spy).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
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
