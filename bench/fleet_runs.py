"""What a fleet trial (scenarios/fleet.py) starts and measures: fresh hives and a queen, a pull through the
queen or every hive on its own, the bytes the hub sent, and every snapshot checked."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse

from bench.context import TERMINAL, Context, hive_fetch
from bench.hf_clients import hub_env
from bench.hub_models import check_snapshot
from bench.procs import CpuShare, Service, wait_until
from bench.report import Measurement, Section
from services.modelserver.hub import Hub
from services.modelserver.published import Published

__all__ = [
    "QUEEN_ENV",
    "Hubbed",
    "Trials",
    "at_once",
    "check_all",
    "fresh",
    "healthy",
    "hives",
    "pull",
    "snapshot",
    "start",
]


QUEEN_ENV = {"QUEEN_HEALTH_INTERVAL": "1"}


@dataclass
class Hubbed:
    """What went through the hub's uplink during one trial: the CDN's body bytes and the hub's own."""

    cdn: int = 0
    hub: int = 0
    cdn_requests: int = 0
    ranged: int = 0

    @classmethod
    def taken(cls, hub: Hub) -> Hubbed:
        hub.wait_idle()
        hub.cdn.wait_idle()
        cdn = hub.cdn.records()
        return cls(hub.cdn.total_bytes_sent(), hub.total_bytes_sent(), len(cdn), sum(1 for r in cdn if r.range))

    def text(self, model: Published) -> str:
        return (
            f"CDN {self.cdn / 1e6:.0f} MB in {self.cdn_requests} requests ({self.ranged} ranged), the hub itself "
            f"{self.hub / 1e6:.1f} MB: {(self.cdn + self.hub) / model.size:.3f}x the model"
        )


@dataclass
class Trials:
    """One scenario's figures, filled by the trials."""

    ctx: Context
    section: Section
    model: Published
    timeout: float
    hives: int
    traffic: dict[str, list[str]] = field(default_factory=dict)
    ratios: dict[str, Measurement] = field(default_factory=dict)
    sources: dict[str, list[str]] = field(default_factory=dict)
    cpu: dict[str, list[str]] = field(default_factory=dict)

    def start(self) -> None:
        hub = self.ctx.hub()
        hub.wait_idle()
        hub.cdn.wait_idle()
        hub.clear_records()
        hub.cdn.clear_records()

    def took(self, name: str, cpu: CpuShare) -> Hubbed:
        sent = Hubbed.taken(self.ctx.hub())
        self.traffic.setdefault(name, []).append(sent.text(self.model))
        self.ratios[name].runs.append((sent.cdn + sent.hub) / self.model.size)
        if cpu.wall > 0 and cpu.machine > 0:
            others = max(0.0, cpu.machine - cpu.ours) / cpu.wall
            self.cpu.setdefault(name, []).append(
                f"the benchmark's processes {cpu.ours / cpu.wall:.2f} cores, others {others:.2f}"
            )
        return sent


def snapshot(models: Path, model: Published) -> Path:
    return models / "hub" / f"models--{model.repo.replace('/', '--')}" / "snapshots" / model.commit


def check_all(model: Published, models: list[Path]) -> None:
    """Every hive's snapshot holds the model, byte for byte (two at a time: hashing releases the GIL)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda m: check_snapshot(snapshot(m, model), model), models))


def hives(
    ctx: Context, run_dir: Path, count: int, hub: Hub, settings: dict[str, str] | None = None
) -> tuple[list[Service], list[Path]]:
    """`count` fresh hives (default settings but `settings`, not started yet), each with an empty models
    dir under `run_dir`."""
    models = [run_dir / f"hive-{i + 1:02d}" for i in range(count)]
    env = {**hub_env(hub, run_dir / "hf-home"), **(settings or {})}
    hives = [
        ctx.prepare(
            f"hive-{i + 1:02d}",
            "services.hive.main",
            {**env, "HIVE_ID": f"hive-{i + 1:02d}", "HIVE_MODELS_DIR": str(m)},
        )
        for i, m in enumerate(models)
    ]
    return hives, models


def start(ctx: Context, scope: ExitStack, services: list[Service]) -> None:
    """Start them all at once; they stop when the trial's `scope` ends (or the scenario's, at the latest)."""
    for svc in services:
        scope.callback(svc.stop)
    ctx.start_all(services)


def fresh(ctx: Context, phase: str) -> tuple[ExitStack, Path]:
    """A trial's scope (its processes stop, its models dirs go, the disk settles) and its own dir."""
    run_dir = ctx.workdir / "models" / "fleet" / f"{phase}-{time.monotonic_ns()}"
    scope = ExitStack()
    scope.callback(ctx.settle)
    scope.callback(ctx.remove, run_dir)
    return scope, run_dir


def healthy(queen: Service, count: int) -> None:
    """Wait for the queen's health checks to find all `count` hives up (it started beside them)."""

    def all_up() -> bool:
        hives = httpx.get(f"{queen.url}/v1/hives", timeout=10).json()["hives"]
        return len(hives) == count and all(h["healthy"] for h in hives)

    wait_until(all_up, 30, "the queen to find every hive healthy", interval=0.1)


def pull(queen: Service, model: Published, timeout: float) -> tuple[float, dict[str, float], dict[str, Any]]:
    """POST /v1/pulls onto "all" and follow the pull's stream to its terminal event: (seconds, each hive's
    seconds to its own end, the pull's state from GET /v1/pulls/{id})."""
    ends: dict[str, float] = {}
    with httpx.Client(base_url=queen.url, timeout=httpx.Timeout(30.0, read=60.0)) as client:
        t0 = time.perf_counter()
        resp = client.post("/v1/pulls", json={"model_ref": model.ref, "hive_ids": "all"})
        if resp.status_code != 202:
            raise RuntimeError(f"POST /v1/pulls -> {resp.status_code}: {resp.text[:300]}")
        started = resp.json()
        if started["commit"] != model.commit:
            raise RuntimeError(f"the pull pinned {started['commit']}, not the hub's main {model.commit}")
        pull_id = started["pull_id"]
        seconds = None
        with connect_sse(client, "GET", f"/v1/pulls/{pull_id}/stream") as source:
            for sse in source.iter_sse():
                if not sse.data:
                    continue
                payload = json.loads(sse.data)
                if sse.event in TERMINAL:
                    seconds = time.perf_counter() - t0
                    if sse.event != "complete":
                        raise RuntimeError(f"the pull ended with {sse.event}: {payload}")
                    break
                if payload.get("status") == "complete" and "hive_id" in payload:
                    ends.setdefault(payload["hive_id"], time.perf_counter() - t0)
                if time.perf_counter() - t0 > timeout:
                    raise TimeoutError(f"the fleet pull took longer than {timeout:g}s")
        if seconds is None:
            raise RuntimeError("the pull's stream closed before its terminal event")
        state = client.get(f"/v1/pulls/{pull_id}").json()
    if state.get("status") != "complete" or set(started["downloads"]) != {h["hive_id"] for h in state["hives"]}:
        raise RuntimeError(f"the pull's state is not complete on every hive: {state}")
    return seconds, ends, state


def at_once(hives: list[Service], model: Published, timeout: float) -> tuple[float, list[float]]:
    """Every hive POSTs its own download of the model at the same moment, no peers: (seconds from the
    POSTs to the last `complete`, each hive's seconds)."""
    gate = threading.Barrier(len(hives) + 1)
    ends: list[float] = [0.0] * len(hives)
    errors: list[Exception] = []
    t0 = 0.0

    def one(i: int, hive: Service) -> None:
        gate.wait()
        try:
            hive_fetch(hive.url, model.ref, timeout)
            ends[i] = time.perf_counter() - t0
        except Exception as exc:  # reported below, with the hive
            errors.append(RuntimeError(f"{hive.name}: {exc}"))

    threads = [threading.Thread(target=one, args=(i, h), daemon=True) for i, h in enumerate(hives)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    gate.wait()
    for t in threads:
        t.join(timeout + 30)
    if errors or any(t.is_alive() for t in threads):
        raise RuntimeError(f"independent pulls failed: {errors or 'a pull did not end'}")
    return max(ends), ends
