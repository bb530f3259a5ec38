"""What scenarios 3a and 3b (scenarios/sse.py, scenarios/fanout.py) share: how an SSE event is dated.

Clocks: everything runs on one machine and every time is the wall clock (CLOCK_REALTIME). The model server
runs in this process (threads); the clients are raw sockets on this process's event loop whose events carry
the kernel's receive time (SO_TIMESTAMPNS), so the loop's own delays are left out. The hive and the queen
are subprocesses. Three ways to date an event, each stated in the report:

- A, `emitted_at`: if the hive puts a timestamp on its events, client wall clock minus that timestamp.
- B, byte reflection: a progress event says `bytes`; the model server logs when it handed each piece of
  each file to the kernel, so the event describes the moment the server had sent `bytes` bytes. Client
  receive time minus that moment is an upper bound of the tracker-to-client latency (it adds the loopback
  transfer to the hive and the hive's read of the chunk).
- C, relay delay: the same event (download id, event id) read straight from the hive's own stream by a
  client of this process; queen client receive time minus direct receive time is what the queen adds.
"""

from __future__ import annotations

import asyncio
import bisect
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.context import Context
from bench.procs import Service, wait_until
from bench.report import Measurement, Section, percentile
from bench.sse import SseEvent
from bench.system import REPO
from services.modelserver.server import ModelServer, RequestRecord

__all__ = [
    "HIVE_ID",
    "Lat",
    "TimedModelServer",
    "add_percentiles",
    "emitted_at",
    "latencies",
    "live",
    "post_downloads",
    "queen_module_missing",
    "reference_times",
    "start_pair",
    "worst",
]


HIVE_ID = "bench-hive"


class _TimedRecord(RequestRecord):
    """A RequestRecord that reports every change of `bytes_sent` (the server counts a piece just before sending)."""

    def __setattr__(self, name: str, value: Any) -> None:
        sink = self.__dict__.get("_sink")
        if name == "bytes_sent" and sink is not None:
            sink(self.path, value - self.__dict__.get("bytes_sent", 0))
        object.__setattr__(self, name, value)


class TimedModelServer(ModelServer):
    """ModelServer that keeps, per URL path, (wall time, cumulative body bytes handed to the kernel)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._send_lock = threading.Lock()
        self._sent: dict[str, tuple[list[float], list[int]]] = {}

    def _record(self, record: RequestRecord) -> None:
        record.__class__ = _TimedRecord  # same fields, no slots: only __setattr__ differs
        record.__dict__["_sink"] = self._on_send
        super()._record(record)

    def _on_send(self, path: str, delta: int) -> None:
        now = time.time()
        with self._send_lock:
            times, totals = self._sent.setdefault(path, ([], []))
            total = (totals[-1] if totals else 0) + delta
            if delta > 0:
                times.append(now)
                totals.append(total)
            elif totals:
                totals[-1] = total

    def sent_at(self, path: str, nbytes: int) -> float | None:
        """When the server had first handed at least `nbytes` bytes of `path` to the kernel."""
        with self._send_lock:
            times, totals = self._sent.get(path, ([], []))
            i = bisect.bisect_left(totals, nbytes)
            return times[i] if i < len(times) else None


def queen_module_missing() -> str:
    if not (REPO / "services" / "queen" / "main.py").exists():
        return "the queen (`services/queen/main.py`) does not exist yet in this checkout"
    return ""


def start_pair(ctx: Context, tag: str, **hive_settings: Any) -> tuple[Service, Service]:
    hive = ctx.hive(f"hive-{tag}", id=HIVE_ID, **hive_settings)
    queen = ctx.service(f"queen-{tag}", "services.queen.main", {"QUEEN_HIVES": f"{HIVE_ID}={hive.url}"})

    def hive_healthy() -> bool:
        queen.check_alive()
        try:
            hives = httpx.get(f"{queen.url}/v1/hives", timeout=2).json().get("hives", [])
        except (httpx.HTTPError, ValueError):
            return False
        return any(h.get("hive_id") == HIVE_ID and h.get("healthy") for h in hives)

    wait_until(hive_healthy, 30, "the queen to see the hive healthy", interval=0.1)
    return hive, queen


async def post_downloads(queen_url: str, urls: list[str]) -> list[str]:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=20)) as client:

        async def post(url: str) -> str:
            resp = await client.post(f"{queen_url}/v1/downloads", json={"model_ref": url, "hive_id": HIVE_ID})
            if resp.status_code not in (200, 202):
                raise RuntimeError(f"queen POST /v1/downloads -> {resp.status_code}: {resp.text[:300]}")
            return str(resp.json()["download_id"])

        return list(await asyncio.gather(*(post(u) for u in urls)))


def emitted_at(payload: dict[str, Any]) -> float | None:
    """An `emitted_at` timestamp on the event, as epoch seconds (number or RFC 3339 string), if there is one."""
    value = payload.get("emitted_at")
    if isinstance(value, int | float):
        return float(value) / (1000.0 if value > 1e11 else 1.0)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


@dataclass
class Lat:
    """Latency samples in ms by method."""

    a: list[float]
    b: list[float]
    c: list[float]

    @classmethod
    def empty(cls) -> Lat:
        return cls([], [], [])


def live(events: list[SseEvent]) -> list[tuple[SseEvent, dict[str, Any]]]:
    """Events after each download's first one (the snapshot a new subscriber gets), with their payloads."""
    seen: set[str] = set()
    out = []
    for ev in events:
        try:
            payload = ev.json()
        except ValueError:
            continue
        did = str(payload.get("download_id"))
        if did not in seen:
            seen.add(did)
            continue
        out.append((ev, payload))
    return out


def latencies(
    events: list[SseEvent],
    reference: dict[tuple[str, str], float],
    server: TimedModelServer | None,
    path_of: dict[str, str],
) -> Lat:
    lat = Lat.empty()
    for ev, payload in live(events):
        did = str(payload.get("download_id"))
        emitted = emitted_at(payload)
        if emitted is not None:
            lat.a.append((ev.recv - emitted) * 1000)
        ref = reference.get((did, ev.id or ""))
        if ref is not None:
            lat.c.append((ev.recv - ref) * 1000)
        nbytes, total = payload.get("bytes"), payload.get("total")
        if (
            server is not None
            and ev.event == "progress"
            and payload.get("status") == "downloading"
            and isinstance(nbytes, int)
            and nbytes > 0
            and (not isinstance(total, int) or nbytes < total)
            and did in path_of
        ):
            sent = server.sent_at(path_of[did], nbytes)
            if sent is not None:
                lat.b.append((ev.recv - sent) * 1000)
    return lat


def reference_times(events: list[SseEvent]) -> dict[tuple[str, str], float]:
    ref: dict[tuple[str, str], float] = {}
    for ev in events:
        try:
            did = str(ev.json().get("download_id"))
        except ValueError:
            continue
        ref.setdefault((did, ev.id or ""), ev.recv)
    return ref


def worst(m: Measurement | None) -> float | None:
    return max(m.runs) if m is not None and m.runs else None


def add_percentiles(section: Section, label: str, samples: list[float], count: Measurement | None = None) -> None:
    for q in (50, 99):
        m = section.find(f"{label} p{q}") or section.measure(f"{label} p{q}", "ms")
        value = percentile(samples, q)
        if value is not None:
            m.runs.append(value)
    if count is not None:
        count.runs.append(float(len(samples)))
