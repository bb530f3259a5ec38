"""The chaos proxy's seeded decisions and its account of what it did: pure, thread-safe, free of I/O.

`ChaosBook.decide(path)` draws the n-th decision for a path from one `random.Random` seeded from
(seed, path), so a run is replayed by its seed whatever the order of paths. The book also keeps the
faults that fired (`FaultRecord`) and the body bytes sent, in total and per path.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field

KINDS = ("cut", "short", "stall", "close", "status")


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    seed: int
    probability: float = 0.35  # chance that a request misbehaves, while its path has budget left
    max_faults: int = 3  # per path
    kinds: tuple[str, ...] = KINDS
    retry_after: tuple[str, ...] = ("0", "1")  # Retry-After values a `status` fault picks from
    stall_secs: float = 30.0  # a stall ends sooner when the client disconnects or the proxy stops
    body_bps: float | None = None  # each response body at most this many bytes/s (a path capping each connection)


@dataclass(frozen=True, slots=True)
class FaultRecord:
    path: str
    request: int  # 1-based number of the request on its path
    kind: str
    at: int | None  # body bytes sent before a cut / short body / stall


@dataclass(slots=True)
class Decision:
    kind: str | None
    fraction: float = 0.0  # where in the body a body fault strikes
    retry_after: str = "0"


@dataclass(slots=True)
class _PathState:
    rng: random.Random
    requests: int = 0
    faults: int = 0


@dataclass
class _Stats:
    faults: list[FaultRecord] = field(default_factory=list)
    body_bytes: int = 0
    body_bytes_by_path: Counter[str] = field(default_factory=Counter)
    requests: int = 0


class ChaosBook:
    """Decisions per path under one `ChaosConfig`, and the record of faults and body bytes."""

    def __init__(self, config: ChaosConfig) -> None:
        self.config = config
        self._paths: dict[str, _PathState] = {}
        self._stats = _Stats()
        self._lock = threading.Lock()

    def decide(self, path: str) -> Decision:
        """The next decision for `path` (deterministic per path and seed)."""
        cfg = self.config
        with self._lock:
            state = self._paths.get(path)
            if state is None:
                state = self._paths[path] = _PathState(random.Random(f"{cfg.seed}:{path}"))
            state.requests += 1
            self._stats.requests += 1
            rng = state.rng
            roll, kind, fraction, retry = rng.random(), rng.choice(cfg.kinds), rng.random(), rng.choice(cfg.retry_after)
            if state.faults >= cfg.max_faults or roll >= cfg.probability:
                return Decision(None)
            state.faults += 1
            return Decision(kind, fraction, retry)

    def record(self, path: str, kind: str, at: int | None) -> None:
        """A fault fired on the latest request on `path`."""
        with self._lock:
            self._stats.faults.append(FaultRecord(path, self._paths[path].requests, kind, at))

    def count(self, path: str, n: int) -> None:
        """`n` body bytes were written to a client for `path`."""
        with self._lock:
            self._stats.body_bytes += n
            self._stats.body_bytes_by_path[path] += n

    @property
    def faults(self) -> list[FaultRecord]:
        with self._lock:
            return list(self._stats.faults)

    @property
    def body_bytes(self) -> int:
        with self._lock:
            return self._stats.body_bytes

    def body_bytes_of(self, path: str) -> int:
        with self._lock:
            return self._stats.body_bytes_by_path[path]

    @property
    def requests(self) -> int:
        with self._lock:
            return self._stats.requests
