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
from bench.procs import CpuShare, Service, wait_until
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


def _snapshot(models: Path, model: Published) -> Path:
    return models / "hub" / f"models--{model.repo.replace('/', '--')}" / "snapshots" / model.commit


def _check_all(model: Published, models: list[Path]) -> None:
    """Every hive's snapshot holds the model, byte for byte (two at a time: hashing releases the GIL)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda m: check_snapshot(_snapshot(m, model), model), models))


def _hives(
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
    section.method = _method(model, n, shard, uplink)
    section.commands = _commands(model, n, uplink)
    m_fleet = section.measure(f"fleet pull, {n} hives (POST -> the pull's complete)", "s")
    m_first = section.measure("fleet pull: the first hive's complete", "s")
    compare = not ctx.tiny  # files that small are never split: HIVE_SEGMENTS=1 would change nothing
    m_fleet1 = section.measure(f"fleet pull, {n} hives, HIVE_SEGMENTS=1 (for comparison)", "s") if compare else None
    m_indep = section.measure(f"{n} independent pulls (POSTs -> the last complete; one run)", "s")
    m_alone = section.measure("one hive alone (POST -> complete)", "s")
    trials = Trials(ctx, section, model, timeout, n)
    trials.ratios = {
        "fleet": section.measure("fleet pull: hub bytes / model size", "x"),
        "independent": section.measure(f"{n} independent pulls: hub bytes / model size", "x"),
        "alone": section.measure("one hive alone: hub bytes / model size", "x"),
    }
    if m_fleet1 is not None:
        trials.ratios["fleet, HIVE_SEGMENTS=1"] = section.measure(
            "fleet pull, HIVE_SEGMENTS=1: hub bytes / model size", "x"
        )

    def fleet_trial(name: str, settings: dict[str, str], first: Measurement | None) -> Trial:
        def trial() -> float:
            scope, run_dir = _fresh(ctx, "fleet")
            with scope:
                hives, models = _hives(ctx, run_dir, n, hub, settings)
                queen_env = {**QUEEN_ENV, "QUEEN_HIVES": ",".join(f"{h.name}={h.url}" for h in hives)}
                queen = ctx.prepare("queen", "services.queen.main", queen_env)
                _start(ctx, scope, [*hives, queen])
                _healthy(queen, len(hives))
                trials.start()
                cpu = CpuShare().start()
                seconds, ends, state = _pull(queen, model, timeout)
                trials.took(name, cpu.stop())
                if first is not None:
                    first.runs.append(min(ends.values(), default=seconds))
                hub_says = sum(p["sources"].get("hub", 0) for p in state["hives"])
                peers = sum(v for p in state["hives"] for k, v in p["sources"].items() if k.startswith("http"))
                trials.sources.setdefault(name, []).append(
                    f"{hub_says / 1e6:.0f} MB from the hub, {peers / 1e6:.0f} MB from peers; each hive's end "
                    + ", ".join(f"{ends[h]:.1f}" for h in sorted(ends))
                    + " s"
                )
                _check_all(model, models)
                return seconds

        return trial

    def independent_trial() -> float:
        scope, run_dir = _fresh(ctx, "independent")
        with scope:
            hives, models = _hives(ctx, run_dir, n, hub)
            _start(ctx, scope, hives)
            trials.start()
            cpu = CpuShare().start()
            seconds, ends = _at_once(hives, model, timeout)
            trials.took("independent", cpu.stop())
            trials.sources.setdefault("independent", []).append(
                "each hive's end " + ", ".join(f"{e:.1f}" for e in ends) + " s"
            )
            _check_all(model, models)
            return seconds

    def alone_trial() -> float:
        scope, run_dir = _fresh(ctx, "alone")
        with scope:
            (hive,), models = _hives(ctx, run_dir, 1, hub)
            _start(ctx, scope, [hive])
            trials.start()
            cpu = CpuShare().start()
            seconds, _ = hive_fetch(hive.url, model.ref, timeout)
            trials.took("alone", cpu.stop())
            _check_all(model, models)
            return seconds

    hub.uplink.set_rate(uplink)
    try:
        ctx.log(f"scenario 8: {model.size / 1e6:.0f} MB onto {n} hives, uplink {uplink / 1e6:g} MB/s")
        plan: list[tuple[Measurement, Trial]] = [(m_fleet, fleet_trial("fleet", {}, m_first)), (m_alone, alone_trial)]
        if m_fleet1 is not None:
            plan.insert(1, (m_fleet1, fleet_trial("fleet, HIVE_SEGMENTS=1", {"HIVE_SEGMENTS": "1"}, None)))
        rounds(ctx, section, plan)
        rounds(ctx, section, [(m_indep, independent_trial)], runs=1)  # the uplink's arithmetic: once is enough
    finally:
        hub.uplink.set_rate(None)

    r_wall = ratio(m_fleet, m_alone)
    section.ratios = [
        Ratio("fleet / one hive alone", r_wall, "time ratio, lower is better"),
        Ratio(f"{n} independent / one hive alone", ratio(m_indep, m_alone), "time ratio"),
        Ratio(f"fleet / {n} independent", ratio(m_fleet, m_indep), "time ratio"),
    ]
    delivered = {"fleet": (m_fleet, n), f"{n} independent": (m_indep, n), "one hive alone": (m_alone, 1)}
    if m_fleet1 is not None:
        section.ratios.insert(
            1, Ratio("fleet, HIVE_SEGMENTS=1 / one hive alone", ratio(m_fleet1, m_alone), "time ratio, for comparison")
        )
        delivered["fleet, HIVE_SEGMENTS=1"] = (m_fleet1, n)
    else:
        section.notes.append("fleet, HIVE_SEGMENTS=1 not run: files as small as `--tiny` makes them are never split")
    _notes(section, trials, delivered, uplink)
    section.targets = [
        Target(
            f"fleet: hub bytes <= {HUB_BYTES_GOAL}x the model", trials.ratios["fleet"].median, HUB_BYTES_GOAL, "<=", "x"
        ),
        Target(f"fleet wall time <= {WALL_GOAL}x one hive's alone", r_wall, WALL_GOAL, "<=", "x"),
    ]
    return section


def _method(model: Published, n: int, shard: int, uplink: int) -> list[str]:
    small = len(model.files) - SHARDS
    alone_floor = model.size / uplink
    return [
        f"The test hub (`services/modelserver/hub.py`, on the harness's threads) holds `{FLEET_REPO}` at one "
        f"commit: {SHARDS} safetensors shards of {size_text(shard)} (LFS, through its CDN, a second host) and "
        f"{small} small files (config, tokenizer, index, `.gitattributes`; served by the hub itself), "
        f"{model.size / 1e6:.0f} MB in all. Its uplink is capped at {uplink / 1e6:g} MB/s in total: one token "
        "bucket (`cdn.Uplink`, `Hub(uplink_bps=...)`) that every body the CDN and the hub send, over all their "
        f"connections, draws from. So one hive alone needs at least {alone_floor:.1f} s, and {n} hives "
        f"pulling on their own at least {n * alone_floor:.0f} s.",
        "Every trial starts fresh processes with empty models dirs (default hive settings unless named): "
        f"**fleet**: {n} `rbee-hive` processes and an `rbee-queen` (`QUEEN_HIVES` names them; the pull is sent "
        f'once its health checks find every hive up), `POST /v1/pulls {{"model_ref": "{model.ref}", "hive_ids": '
        '"all"}`, timed to the pull\'s terminal `complete` event on `GET /v1/pulls/{id}/stream`; **fleet, '
        "HIVE_SEGMENTS=1**: the same with every hive on one connection per file (for comparison, no target); "
        f'**{n} independent**: {n} hives, each its own `POST /v2/downloads {{"model_ref": "{model.ref}"}}`, '
        "all sent at the same moment (no queen, no peers), timed to the last hive's `complete` (one run "
        "whatever `--runs` says: it is bound by the uplink); **one hive alone**: the same POST on one hive, "
        "timed to its `complete`.",
        "Hub bytes: what the CDN sent (`total_bytes_sent()`, body bytes really written) and what the hub itself "
        "sent (small files, API answers) during the trial, over the model's size.",
        "After the clock stops every hive's snapshot (`models--bench--fleet/snapshots/<commit>`) must hold "
        "exactly the commit's files, each with the hub's sha256; a failed check is a failed run. The runs "
        "rotate the order of the trials; `sync` runs before and after each.",
        f"All {n} hives, the queen and the hub share this machine's cores and disk: in the fleet pull every "
        f"byte of the model is received, hashed and written {n} times and served to peers {n - 1} times on "
        "the same CPUs, which a real cluster spreads over its nodes. The notes give the CPU each trial used.",
    ]


def _commands(model: Published, n: int, uplink: int) -> list[str]:
    ids = ",".join(f"hive-{i + 1:02d}=<hive {i + 1}>" for i in range(n))
    return [
        f"Hub(uplink_bps={uplink})   # the test hub in the harness; HF_ENDPOINT=<hub> for every hive",
        f"{n} x rbee-hive (HIVE_MODELS_DIR=<fresh dir>); QUEEN_HIVES={ids} rbee-queen",
        f'POST {{queen}}/v1/pulls {{"model_ref": "{model.ref}", "hive_ids": "all"}}; '
        "GET {queen}/v1/pulls/{id}/stream until its terminal event",
        f"{n} x HIVE_SEGMENTS=1 rbee-hive; the same queen and POST",
        f'{n} x rbee-hive; on each at once: POST /v2/downloads {{"model_ref": "{model.ref}"}}; '
        "GET /v2/downloads/{id}/stream",
        f'rbee-hive; POST /v2/downloads {{"model_ref": "{model.ref}"}}; GET /v2/downloads/{{id}}/stream',
    ]


def _notes(section: Section, trials: Trials, delivered: dict[str, tuple[Measurement, int]], uplink: int) -> None:
    size = trials.model.size
    rates = [f"{name}: {k * size / m.median / 1e6:.0f} MB/s" for name, (m, k) in delivered.items() if m.median]
    if rates:
        section.notes.append(
            f"Delivered onto the hives (hives x model size / median wall time; the uplink is {uplink / 1e6:g} "
            f"MB/s): {'; '.join(rates)}"
        )
    for name, runs in trials.sources.items():
        account = " by the hives' own account (`sources`)" if name.startswith("fleet") else ""
        section.notes.append(f"{name}{account}, per run: {'; '.join(runs)}")
    for name, runs in trials.traffic.items():
        section.notes.append(f"{name}, through the hub's uplink, per run: {'; '.join(runs)}")
    for name, runs in trials.cpu.items():
        section.notes.append(f"{name}, CPU while it ran, per run: {'; '.join(runs)}")
