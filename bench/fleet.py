"""Scenario 8: a fleet pull (#15): one model onto many hives through the queen, the hub's uplink capped,
against every hive pulling it on its own and against one hive alone.

The test hub (services/modelserver/hub.py, on this process's threads) sends every body, its CDN's and
its own, through one `Uplink`: a total byte rate over all connections, the uplink a cluster shares.
Each trial starts fresh processes with fresh models dirs, so nothing is held from an earlier trial;
every hive's snapshot is checked file by file (paths and sha256 against the hub's) once the clock
stops, so a fast wrong answer counts as a failure, not as a time.
"""

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

from bench.context import TERMINAL, Context, Trial, hive_fetch, rounds, size_text
from bench.models import Published, check_snapshot, hub_env, publish, shard_names
from bench.procs import Service, wait_until
from bench.report import Measurement, Ratio, Section, Target, ratio
from services.modelserver.hub import Hub

__all__ = ["fleet"]

FLEET_REPO = "bench/fleet"
SHARDS = 4
HUB_BYTES_GOAL = 1.1  # the fleet's hub bytes over the model's size
WALL_GOAL = 1.5  # the fleet's wall time over one hive's alone
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

    def start(self) -> None:
        hub = self.ctx.hub()
        hub.wait_idle()
        hub.cdn.wait_idle()
        hub.clear_records()
        hub.cdn.clear_records()

    def took(self, name: str) -> Hubbed:
        sent = Hubbed.taken(self.ctx.hub())
        self.traffic.setdefault(name, []).append(sent.text(self.model))
        self.ratios[name].runs.append((sent.cdn + sent.hub) / self.model.size)
        return sent


def _snapshot(models: Path, model: Published) -> Path:
    return models / "hub" / f"models--{model.repo.replace('/', '--')}" / "snapshots" / model.commit


def _check_all(model: Published, models: list[Path]) -> None:
    """Every hive's snapshot holds the model, byte for byte (two at a time: hashing releases the GIL)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda m: check_snapshot(_snapshot(m, model), model), models))


def _hives(ctx: Context, run_dir: Path, count: int, hub: Hub) -> tuple[list[Service], list[Path]]:
    """`count` fresh hives (default settings, not started yet), each with an empty models dir under `run_dir`."""
    models = [run_dir / f"hive-{i + 1:02d}" for i in range(count)]
    env = hub_env(hub, run_dir / "hf-home")
    hives = [
        ctx.prepare(
            f"hive-{i + 1:02d}",
            "services.hive.main",
            {**env, "HIVE_ID": f"hive-{i + 1:02d}", "HIVE_MODELS_DIR": str(m)},
        )
        for i, m in enumerate(models)
    ]
    return hives, models


def _start(ctx: Context, scope: ExitStack, services: list[Service]) -> None:
    """Start them all at once; they stop when the trial's `scope` ends (or the scenario's, at the latest)."""
    for svc in services:
        scope.callback(svc.stop)
    ctx.start_all(services)


def _fresh(ctx: Context, phase: str) -> tuple[ExitStack, Path]:
    """A trial's scope (its processes stop, its models dirs go, the disk settles) and its own dir."""
    run_dir = ctx.workdir / "models" / "fleet" / f"{phase}-{time.monotonic_ns()}"
    scope = ExitStack()
    scope.callback(ctx.settle)
    scope.callback(ctx.remove, run_dir)
    return scope, run_dir


def _healthy(queen: Service, count: int) -> None:
    """Wait for the queen's health checks to find all `count` hives up (it started beside them)."""

    def all_up() -> bool:
        hives = httpx.get(f"{queen.url}/v1/hives", timeout=10).json()["hives"]
        return len(hives) == count and all(h["healthy"] for h in hives)

    wait_until(all_up, 30, "the queen to find every hive healthy", interval=0.1)


def _pull(queen: Service, model: Published, timeout: float) -> tuple[float, dict[str, float], dict[str, Any]]:
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


def _at_once(hives: list[Service], model: Published, timeout: float) -> tuple[float, list[float]]:
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


def fleet(ctx: Context) -> Section:
    n, shard, uplink = ctx.sizes.fleet_hives, ctx.sizes.fleet_shard, ctx.sizes.fleet_uplink_bps
    hub = ctx.hub()
    model = publish(ctx, FLEET_REPO, dict.fromkeys(shard_names(SHARDS), shard))
    small = len(model.files) - SHARDS
    section = Section(
        "fleet",
        f"8. Fleet pull: {n} hives, a {size_text(model.size)} model of {SHARDS} shards and {small} files, "
        f"the hub's uplink capped at {uplink / 1e6:g} MB/s",
    )
    alone_floor = model.size / uplink
    timeout = 120 + 3 * n * alone_floor
    section.method = [
        f"The test hub (`services/modelserver/hub.py`, on the harness's threads) holds `{FLEET_REPO}` at one "
        f"commit: {SHARDS} safetensors shards of {size_text(shard)} (LFS, through its CDN, a second host) and "
        f"{small} small files (config, tokenizer, index, `.gitattributes`; served by the hub itself), "
        f"{model.size / 1e6:.0f} MB in all. Its uplink is capped at {uplink / 1e6:g} MB/s in total: one token "
        "bucket (`cdn.Uplink`, `Hub(uplink_bps=...)`) that every body the CDN and the hub send, over all their "
        f"connections, draws from. So one hive alone needs at least {alone_floor:.1f} s, and {n} hives "
        f"pulling on their own at least {n * alone_floor:.0f} s.",
        f"Three trials, each with fresh processes and empty models dirs (default hive settings): "
        f"**fleet**: {n} `rbee-hive` processes and an `rbee-queen` (`QUEEN_HIVES` names them), "
        f'`POST /v1/pulls {{"model_ref": "{model.ref}", "hive_ids": "all"}}`, timed to the pull\'s terminal '
        "`complete` event on `GET /v1/pulls/{id}/stream`; "
        f'**{n} independent**: {n} hives, each its own `POST /v2/downloads {{"model_ref": "{model.ref}"}}`, '
        "all sent at the same moment (no queen, no peers), timed to the last hive's `complete`; "
        "**one hive alone**: the same POST on one hive, timed to its `complete`.",
        "Hub bytes: what the CDN sent (`total_bytes_sent()`, body bytes really written) and what the hub itself "
        "sent (small files, API answers) during the trial, over the model's size.",
        "After the clock stops every hive's snapshot (`models--bench--fleet/snapshots/<commit>`) must hold "
        "exactly the commit's files, each with the hub's sha256; a failed check is a failed run. The runs "
        "rotate the order of the trials; `sync` runs before and after each.",
    ]
    ids = ",".join(f"hive-{i + 1:02d}=<hive {i + 1}>" for i in range(n))
    section.commands = [
        f"Hub(uplink_bps={uplink})   # the test hub in the harness; HF_ENDPOINT=<hub> for every hive",
        f"{n} x rbee-hive (HIVE_MODELS_DIR=<fresh dir>); QUEEN_HIVES={ids} rbee-queen",
        f'POST {{queen}}/v1/pulls {{"model_ref": "{model.ref}", "hive_ids": "all"}}; '
        "GET {queen}/v1/pulls/{id}/stream until its terminal event",
        f'{n} x rbee-hive; on each at once: POST /v2/downloads {{"model_ref": "{model.ref}"}}; '
        "GET /v2/downloads/{id}/stream",
        f'rbee-hive; POST /v2/downloads {{"model_ref": "{model.ref}"}}; GET /v2/downloads/{{id}}/stream',
    ]
    m_fleet = section.measure(f"fleet pull, {n} hives (POST -> the pull's complete)", "s")
    m_first = section.measure("fleet pull: the first hive's complete", "s")
    m_indep = section.measure(f"{n} independent pulls (POSTs -> the last complete)", "s")
    m_indep_first = section.measure(f"{n} independent pulls: the first hive's complete", "s")
    m_alone = section.measure("one hive alone (POST -> complete)", "s")
    trials = Trials(ctx, section, model, timeout, n)
    trials.ratios = {
        "fleet": section.measure("fleet pull: hub bytes / model size", "x"),
        "independent": section.measure(f"{n} independent pulls: hub bytes / model size", "x"),
        "alone": section.measure("one hive alone: hub bytes / model size", "x"),
    }
    sources: list[str] = []

    def fleet_trial() -> float:
        scope, run_dir = _fresh(ctx, "fleet")
        with scope:
            hives, models = _hives(ctx, run_dir, n, hub)
            queen_env = {**QUEEN_ENV, "QUEEN_HIVES": ",".join(f"{h.name}={h.url}" for h in hives)}
            queen = ctx.prepare("queen", "services.queen.main", queen_env)
            _start(ctx, scope, [*hives, queen])
            _healthy(queen, len(hives))
            trials.start()
            seconds, ends, state = _pull(queen, model, timeout)
            trials.took("fleet")
            m_first.runs.append(min(ends.values(), default=seconds))
            hub_says = sum(p["sources"].get("hub", 0) for p in state["hives"])
            peers = sum(v for p in state["hives"] for k, v in p["sources"].items() if k.startswith("http"))
            sources.append(
                f"{hub_says / 1e6:.0f} MB from the hub, {peers / 1e6:.0f} MB from peers; each hive's end "
                + ", ".join(f"{ends[h]:.1f}" for h in sorted(ends))
                + " s"
            )
            _check_all(model, models)
            return seconds

    def independent_trial() -> float:
        scope, run_dir = _fresh(ctx, "independent")
        with scope:
            hives, models = _hives(ctx, run_dir, n, hub)
            _start(ctx, scope, hives)
            trials.start()
            seconds, ends = _at_once(hives, model, timeout)
            trials.took("independent")
            m_indep_first.runs.append(min(ends))
            _check_all(model, models)
            return seconds

    def alone_trial() -> float:
        scope, run_dir = _fresh(ctx, "alone")
        with scope:
            (hive,), models = _hives(ctx, run_dir, 1, hub)
            _start(ctx, scope, [hive])
            trials.start()
            seconds, _ = hive_fetch(hive.url, model.ref, timeout)
            trials.took("alone")
            _check_all(model, models)
            return seconds

    hub.uplink.set_rate(uplink)
    try:
        plan: list[tuple[Measurement, Trial]] = [
            (m_fleet, fleet_trial),
            (m_indep, independent_trial),
            (m_alone, alone_trial),
        ]
        ctx.log(f"scenario 8: {model.size / 1e6:.0f} MB onto {n} hives, uplink {uplink / 1e6:g} MB/s")
        rounds(ctx, section, plan)
    finally:
        hub.uplink.set_rate(None)

    r_hub = trials.ratios["fleet"].median
    r_wall = ratio(m_fleet, m_alone)
    section.ratios = [
        Ratio("fleet / one hive alone", r_wall, "time ratio, lower is better"),
        Ratio(f"{n} independent / one hive alone", ratio(m_indep, m_alone), "time ratio"),
        Ratio(f"fleet / {n} independent", ratio(m_fleet, m_indep), "time ratio"),
    ]
    _notes(section, trials, sources, [(m_fleet, n), (m_indep, n), (m_alone, 1)], uplink)
    section.targets = [
        Target(f"fleet: hub bytes <= {HUB_BYTES_GOAL}x the model", r_hub, HUB_BYTES_GOAL, "<=", "x"),
        Target(f"fleet wall time <= {WALL_GOAL}x one hive's alone", r_wall, WALL_GOAL, "<=", "x"),
    ]
    return section


def _notes(
    section: Section, trials: Trials, sources: list[str], delivered: list[tuple[Measurement, int]], uplink: int
) -> None:
    size = trials.model.size
    rates = [f"{m.label.split(' (')[0]} {k * size / m.median / 1e6:.0f} MB/s" for m, k in delivered if m.median]
    if rates:
        section.notes.append(
            f"Delivered onto the hives (hives x model size / median wall time; the uplink is {uplink / 1e6:g} "
            f"MB/s): {'; '.join(rates)}"
        )
    if sources:
        section.notes.append(f"fleet pull, by the hives' own account (`sources`), per run: {'; '.join(sources)}")
    for name, runs in trials.traffic.items():
        section.notes.append(f"{name}, through the hub's uplink, per run: {'; '.join(runs)}")
