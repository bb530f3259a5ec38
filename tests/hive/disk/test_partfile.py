"""The partial file: aligned direct writes, flushes at any byte, resuming at any offset, the fallback."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from services.hive.disk import partfile
from services.hive.disk.blockwriter import ALIGN, BlockWriter
from services.hive.disk.partfile import PartFile

KiB = 1024


def pieces_of(data: bytes, rng: random.Random) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        n = rng.choice([1, 7, ALIGN - 1, ALIGN, ALIGN + 1, 10_000, 70 * KiB])
        out.append(data[pos : pos + n])
        pos += n
    return out


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
def test_block_writer_file_is_always_exactly_what_was_given(tmp_path: Path, direct: bool) -> None:
    rng = random.Random(7)
    data = rng.randbytes(600 * KiB + 123)
    path = tmp_path / "f.part"
    path.write_bytes(b"")
    writer = BlockWriter(path, 0, 64 * KiB, direct)
    given = 0
    try:
        for i, piece in enumerate(pieces_of(data, rng)):
            writer.write([piece])
            given += len(piece)
            if i % 5 == 0:  # a flush at whatever byte we are at: the file is then that prefix, exactly
                writer.flush()
                assert path.stat().st_size == given
                assert path.read_bytes() == data[:given]
        writer.sync()
    finally:
        writer.close()
    assert path.read_bytes() == data


def test_block_writer_resumes_at_an_unaligned_offset(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(300 * KiB)
    path = tmp_path / "f.part"
    offset = 3 * ALIGN + 1000
    path.write_bytes(data[:offset])
    writer = BlockWriter(path, offset, 64 * KiB)
    try:
        assert writer.position == offset
        writer.write([data[offset:]])
        writer.sync()
    finally:
        writer.close()
    assert path.read_bytes() == data


def test_block_writer_falls_back_when_direct_writes_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.part"
    path.write_bytes(b"")
    real_pwrite = os.pwrite
    writer = BlockWriter(path, 0, 16 * KiB)
    if not writer.direct:
        writer.close()
        pytest.skip("this filesystem refuses O_DIRECT at open: the fallback is taken before any write")
    direct_fd = writer.dfd

    def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        if fd == direct_fd:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(partfile.os, "pwrite", pwrite)
    data = random.Random(2).randbytes(100 * KiB + 5)
    try:
        writer.write([data])
        assert not writer.direct
        writer.sync()
    finally:
        writer.close()
    assert path.read_bytes() == data


def test_block_writer_passes_on_other_write_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f.part"
    path.write_bytes(b"")

    def full(fd: int, data: bytes | memoryview, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    writer = BlockWriter(path, 0, 16 * KiB)
    monkeypatch.setattr(partfile.os, "pwrite", full)
    try:
        with pytest.raises(OSError) as info:
            writer.write([b"x" * 20 * KiB])
        assert info.value.errno == errno.ENOSPC
    finally:
        writer.close()


def test_part_file_hashes_and_writes_batches_and_reopens(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(1024 * KiB + 77)
    path = tmp_path / "m.bin.part"

    async def go() -> tuple[str, str]:
        part = PartFile(path, 64 * KiB)
        await part.open_fresh()
        for piece in pieces_of(data[: 500 * KiB + 3], random.Random(4)):
            await part.write(piece)
        await part.close()  # as on a cancel: what was received stays in the file
        assert path.read_bytes() == data[: 500 * KiB + 3]
        resumed = PartFile(path, 64 * KiB)
        assert await resumed.open_existing() == 500 * KiB + 3
        for piece in pieces_of(data[500 * KiB + 3 :], random.Random(5)):
            await resumed.write(piece)
        return await resumed.finish(), hashlib.sha256(path.read_bytes()).hexdigest()

    digest, on_disk = asyncio.run(go())
    assert digest == on_disk == hashlib.sha256(data).hexdigest()


def test_part_file_open_fresh_discards_what_was_there(tmp_path: Path) -> None:
    path = tmp_path / "m.bin.part"
    path.write_bytes(b"old bytes" * 1000)

    async def go() -> str:
        part = PartFile(path, 64 * KiB)
        await part.open_fresh()
        await part.write(b"new")
        return await part.finish()

    assert asyncio.run(go()) == hashlib.sha256(b"new").hexdigest()
    assert path.read_bytes() == b"new"


def test_part_file_closes_only_after_a_write_still_running_when_its_waiter_was_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush cancelled while a write runs (a sibling file failed, the download stops): the close that
    follows must not flush or close the BlockWriter under that write (three writer threads here), and the
    write queued after it still lands after it: the file is both batches, in order."""
    path = tmp_path / "m.bin.part"
    gate, entered = threading.Event(), threading.Event()
    writing = [0]
    overlapped: list[str] = []
    original_write, original_flush, original_close = BlockWriter.write, BlockWriter.flush, BlockWriter.close

    def slow_write(self: BlockWriter, pieces: list[bytes]) -> None:
        writing[0] += 1
        entered.set()
        gate.wait(10)
        try:
            original_write(self, pieces)
        finally:
            writing[0] -= 1

    def watched(name: str, original: Callable[[BlockWriter], None]) -> Callable[[BlockWriter], None]:
        def call(self: BlockWriter) -> None:
            if writing[0]:
                overlapped.append(name)
            original(self)

        return call

    monkeypatch.setattr(BlockWriter, "write", slow_write)
    monkeypatch.setattr(BlockWriter, "flush", watched("flush", original_flush))
    monkeypatch.setattr(BlockWriter, "close", watched("close", original_close))

    async def go() -> None:
        pools = partfile.FilePools(writers=3, hashers=1)
        part = PartFile(path, 64 * KiB, direct=False, pools=pools)
        try:
            await part.open_fresh()
            await part.write(b"a" * 64 * KiB)  # (a batch: its write starts and waits at the gate)
            await asyncio.to_thread(entered.wait, 10)
            await part.write(b"b" * 64 * KiB)
            flushing = asyncio.create_task(part.flush())
            await asyncio.sleep(0)
            flushing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flushing
            closing = asyncio.create_task(part.close())
            # the bug this guards against flushes at once, on the second writer thread
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(closing), 0.5)
            gate.set()
            await closing
        finally:
            gate.set()
            pools.shutdown()

    asyncio.run(go())
    assert overlapped == []
    assert path.read_bytes() == b"a" * 64 * KiB + b"b" * 64 * KiB
