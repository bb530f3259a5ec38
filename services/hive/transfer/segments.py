"""Planning a segmented download: the file cut into chunks that N connections take in order.

Pure. A chunk is fetched by one connection at a time and can resume on its own; connections
take the next untaken chunk, so a slow connection never holds the tail. `written` counts bytes
safely in the file, which is what the ordered hash follows and what survives a restart.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Chunk", "RateWindow", "SegmentPlan", "SplitWatch", "chunk_size"]

MiB = 1024 * 1024


def chunk_size(total: int, connections: int, min_chunk: int = 8 * MiB, max_chunk: int = 128 * MiB) -> int:
    """About four chunks per connection, within [min_chunk, max_chunk]."""
    return max(min_chunk, min(max_chunk, -(-total // (connections * 4))))


@dataclass(slots=True)
class Chunk:
    start: int
    end: int  # exclusive
    written: int  # next byte not yet safely in the file
    taken: bool = False

    @property
    def done(self) -> bool:
        return self.written >= self.end


@dataclass(slots=True)
class SegmentPlan:
    total: int
    chunks: list[Chunk] = field(default_factory=list)

    @classmethod
    def plan(cls, total: int, start: int, size: int) -> SegmentPlan:
        """Chunks of `size` covering [start, total); bytes before `start` are already written."""
        chunks = [Chunk(0, start, start)] if start > 0 else []
        pos = start
        while pos < total:
            end = min(total, pos + size)
            chunks.append(Chunk(pos, end, pos))
            pos = end
        return cls(total, chunks)

    def take(self) -> Chunk | None:
        for chunk in self.chunks:
            if not chunk.taken and not chunk.done:
                chunk.taken = True
                return chunk
        return None

    def release(self, chunk: Chunk) -> None:
        chunk.taken = False

    def frontier(self) -> int:
        """End of the contiguous prefix of written bytes: what the ordered hash may read."""
        for chunk in self.chunks:
            if not chunk.done:
                return chunk.written
        return self.total

    def written(self) -> int:
        return sum(c.written - c.start for c in self.chunks)

    @property
    def done(self) -> bool:
        return all(c.done for c in self.chunks)

    def to_json(self) -> str:
        return json.dumps({"total": self.total, "chunks": [[c.start, c.end, c.written] for c in self.chunks]})

    @classmethod
    def from_json(cls, text: str) -> SegmentPlan | None:
        """A saved plan, or None if it is not one we can trust."""
        try:
            raw = json.loads(text)
            total = int(raw["total"])
            chunks = [Chunk(int(s), int(e), int(w)) for s, e, w in raw["chunks"]]
        except (ValueError, KeyError, TypeError):
            return None
        pos = 0
        for c in chunks:
            if c.start != pos or not c.start <= c.written <= c.end:
                return None
            pos = c.end
        return cls(total, chunks) if pos == total and chunks else None


@dataclass(slots=True)
class SplitWatch:
    """Whether one connection is slow enough that the rest of the file should go over several.

    Splitting is what beats a server that caps each connection (as CDNs do); on a fast link it
    only adds requests and CPU, and measured slower (BENCHMARKS.md). So a download starts on one
    connection and splits as soon as a window of `window` seconds ran below `below_bps` - unless
    the hive process used more than `busy_cores` of CPU over that window: then the hive itself is
    what is slow, and more connections would only make it slower (four fast downloads at once on
    two cores, split into 32 connections, took 10.8 s against 5.05 s unsplit). The first window
    opens at the first body byte, so connecting does not count; a connection that was fast and
    slows down later is caught by a later window.

    (Read sizes are no sign: nginx's limit_rate sends bursts, so a capped connection can deliver
    in reads as big as a fast one's, and judging by them left a capped download unsplit.)
    """

    below_bps: float
    window: float = 0.1
    busy_cores: float = 0.5
    _since: float | None = None
    _at: int = 0
    _cpu: float = 0.0

    def observe(self, now: float, received: int, cpu: Callable[[], float]) -> bool:
        """Told the time (monotonic) and the bytes received so far, on every read; `cpu` gives the
        process's CPU seconds, asked only when a window opens or closes. True = split now."""
        if self._since is None:
            self._since, self._at, self._cpu = now, received, cpu()
            return False
        elapsed = now - self._since
        if elapsed < self.window:
            return False
        used = cpu()
        slow = received - self._at < self.below_bps * elapsed
        if slow and used - self._cpu < self.busy_cores * elapsed:
            return True
        self._since, self._at, self._cpu = now, received, used
        return False


@dataclass(slots=True)
class RateWindow:
    """A connection's rate over consecutive windows of at least `window` seconds, the first
    opening at the first byte: `observe` gives bytes/s each time a window closes, else None."""

    window: float = 0.1
    _since: float | None = None
    _at: int = 0

    def observe(self, now: float, received: int) -> float | None:
        if self._since is None:
            self._since, self._at = now, received
            return None
        elapsed = now - self._since
        if elapsed < self.window:
            return None
        rate = (received - self._at) / elapsed
        self._since, self._at = now, received
        return rate
