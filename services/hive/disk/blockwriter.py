"""BlockWriter: appends to the partial file through one page-aligned buffer, with O_DIRECT.

Why O_DIRECT: on the machines we measure on, writing through the page cache and then fsyncing
took 0.3 to 2.4 s per GiB from one run to the next, while O_DIRECT writes of 4 MiB blocks took
0.46 to 0.55 s every time (BENCHMARKS.md). The hive must fsync before it renames a file into
place, so it pays for the page cache without getting anything back; direct writes make the
bytes durable as they arrive and keep multi-GB model files from flushing everything else out of
the cache. Where the filesystem refuses O_DIRECT (some tmpfs, FUSE, network filesystems) the
writer falls back to ordinary writes with early writeback, and says so in the log.
"""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path

import structlog

from services.hive.disk.fileio import pwrite_full, start_writeback

__all__ = ["ALIGN", "BlockWriter"]

log = structlog.get_logger()

ALIGN = 4096  # O_DIRECT wants buffer address, file offset and length aligned to the logical block size
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)


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
            pwrite_full(self.fd, self._view[aligned : self.fill], self.base + aligned)
            self._view[:tail] = self._view[aligned : self.fill]  # rewritten whole by the next direct write
        self.base += aligned
        self.fill = tail

    def _emit(self, n: int) -> None:
        view = self._view[:n]
        if self.dfd is not None:
            try:
                pwrite_full(self.dfd, view, self.base)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                log.info("direct_io_unavailable", path=str(self.path), reason="the filesystem refused a direct write")
                self._close_direct()
        pwrite_full(self.fd, view, self.base)
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
