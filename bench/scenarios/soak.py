"""Scenario 5: a soak. Thousands of small downloads relayed through the queen; what do the services hold?

A long-running queen and hive must hold nothing per finished download or departed client (sockets,
tasks, subscriptions, buffers). The harness runs the downloads in two equal halves and samples each
service at three quiet points (after a warm-up, after the first half, after the second): resident
memory, open files and asyncio tasks. Flat means the end is where the middle was.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass

import httpx
from httpx_sse import aconnect_sse

from bench.context import TERMINAL, Context, Skip
from bench.procs import RssSampler, Service, rss_reader, wait_until
from bench.report import Measurement, Section, Target
from services.modelserver.server import ModelServer

__all__ = ["soak"]

HIVE_ID = "soak-hive"
AT_ONCE = 50
FILE_SIZE = 4096
RSS_GROWTH = 1.10  # the end's RSS within 10% of the middle's
FD_SLACK = 5  # open files and tasks: within a small constant of the middle
TASK_SLACK = 5


@dataclass(frozen=True)
class Sample:
    rss_mb: float
    fds: int
    tasks: int


def _sample(service: Service) -> Sample:
    text = httpx.get(f"{service.url}/metrics", timeout=10).text
    match = re.search(r"^rbee_asyncio_tasks (\S+)$", text, re.MULTILINE)
    tasks = int(float(match[1])) if match else -1
    return Sample(rss_reader(service.pid)() / 1e6, len(os.listdir(f"/proc/{service.pid}/fd")), tasks)


def _metric(service: Service, name: str) -> float:
    text = httpx.get(f"{service.url}/metrics", timeout=10).text
    return sum(float(m[1]) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


async def _relay(queen: str, refs: list[str]) -> dict[str, int]:
    """Start every ref through the queen and follow each to its terminal event, AT_ONCE at a time."""
    ends: dict[str, int] = {}
    limit = asyncio.Semaphore(AT_ONCE)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=120), limits=httpx.Limits(max_connections=None)) as c:

        async def one(ref: str) -> None:
            async with limit:
                started = await c.post(f"{queen}/v1/downloads", json={"model_ref": ref, "hive_id": HIVE_ID})
                if started.status_code not in (200, 202):
                    ends[f"POST {started.status_code}"] = ends.get(f"POST {started.status_code}", 0) + 1
                    return
                did = started.json()["download_id"]
                end = "stream ended early"
                async with aconnect_sse(c, "GET", f"{queen}/v1/downloads/{did}/stream") as source:
                    async for sse in source.aiter_sse():
                        if sse.event in TERMINAL:
                            end = sse.event
                            break
                ends[end] = ends.get(end, 0) + 1

        await asyncio.gather(*(one(r) for r in refs))
    return ends


def soak(ctx: Context) -> Section:
    total = ctx.sizes.soak_downloads
    section = Section("soak", f"5. Soak: {total:,} downloads relayed through the queen")
    if not os.path.isdir("/proc/self/fd"):
        raise Skip("needs /proc to count a process's open files")
    section.method = [
        f"{total:,} distinct {FILE_SIZE // 1024} KiB files from the Python ModelServer, each started through "
        f"the queen (`POST /v1/downloads`) on one real hive (`HIVE_MAX_CONCURRENT={AT_ONCE}`) and followed to "
        f"its terminal event on `GET /v1/downloads/{{id}}/stream`, {AT_ONCE} at a time, in two halves.",
        "Each service is sampled at three quiet points: after a warm-up of "
        f"{AT_ONCE} downloads, after the first half and after the second, each once the queen has no relayed "
        "stream and the hive no running download. RSS from psutil, open files from /proc/<pid>/fd, tasks "
        "from the service's own `rbee_asyncio_tasks` gauge, once the open-file counts have held still for 6 s "
        "(idle keep-alive connections expire within seconds). One run: a soak is not repeated.",
    ]
    section.commands = [
        f"HIVE_MAX_CONCURRENT={AT_ONCE} rbee-hive; QUEEN_HIVES={HIVE_ID}=<hive> rbee-queen",
        f"{total:,} x (POST {{queen}}/v1/downloads; GET {{queen}}/v1/downloads/{{id}}/stream)",
    ]
    root = ctx.workdir / "modelserver-soak"
    server = ModelServer(root).start()
    ctx.scope.callback(server.stop)
    refs = []
    for i in range(total + AT_ONCE):
        server.add_file(f"soak/f{i:05d}.bin", FILE_SIZE)
        refs.append(f"{server.url}/soak/f{i:05d}.bin")
    hive = ctx.hive(HIVE_ID, max_concurrent=AT_ONCE)
    queen = ctx.service(
        "queen-soak", "services.queen.main", {"QUEEN_HIVES": f"{HIVE_ID}={hive.url}", "QUEEN_HEALTH_INTERVAL": "1"}
    )
    wait_until(lambda: _metric(queen, "rbee_queen_hives") >= 1, 30, "the queen to know the hive")
    services = {"queen": queen, "hive": hive}
    samplers = {name: RssSampler(s.pid, 0.1).start() for name, s in services.items()}
    for sampler in samplers.values():
        ctx.scope.callback(sampler.stop)

    def quiet() -> dict[str, Sample]:
        wait_until(
            lambda: (
                _metric(queen, "rbee_queen_upstream_subscriptions") <= 1
                and _metric(hive, 'rbee_hive_downloads{status="downloading"}') == 0
            ),
            60,
            "the services to go quiet",
            interval=0.2,
        )
        # idle keep-alive connections close within seconds (4 s in the queen's pool, 5 s in uvicorn's):
        # sample once the open-file counts have held still for 6 s, so every point is taken alike
        history: list[tuple[int, ...]] = []

        def steady() -> bool:
            history.append(tuple(len(os.listdir(f"/proc/{s.pid}/fd")) for s in services.values()))
            return len(history) >= 13 and len(set(history[-13:])) == 1

        wait_until(steady, 60, "open-file counts to hold still", interval=0.5)
        return {name: _sample(s) for name, s in services.items()}

    half = total // 2
    phases = [("warm-up", refs[:AT_ONCE]), ("first half", refs[AT_ONCE : AT_ONCE + half])]
    phases.append(("second half", refs[AT_ONCE + half :]))
    points: list[dict[str, Sample]] = []
    ends: dict[str, int] = {}
    for name, batch in phases:
        ctx.log(f"  {name}: {len(batch)} downloads")
        for end, count in asyncio.run(_relay(queen.url, batch)).items():
            ends[end] = ends.get(end, 0) + count
        points.append(quiet())
        ctx.log(f"  after the {name}: {points[-1]}")
    start, middle, end = points
    for name in services:
        for label, unit, pick in (
            ("RSS", "MB", lambda s: s.rss_mb),
            ("open files", "", lambda s: float(s.fds)),
            ("asyncio tasks", "", lambda s: float(s.tasks)),
        ):
            for point, sample in (("start", start), ("middle", middle), ("end", end)):
                m: Measurement = section.measure(f"{name} {label}, {point}", unit)
                m.runs.append(pick(sample[name]))
        section.measure(f"{name} peak RSS", "MB").runs.append(samplers[name].peak / 1e6)
    section.measure("downloads that ended complete", "").runs.append(float(ends.get("complete", 0)))
    if set(ends) != {"complete"}:
        section.notes.append(f"ends other than complete: {ends}")
    section.targets = [
        Target(f"all {total + AT_ONCE:,} downloads complete", ends.get("complete", 0), total + AT_ONCE, ">=")
    ]
    for name in services:
        m, e = middle[name], end[name]
        section.targets += [
            Target(f"{name} RSS at the end <= 1.10x the middle", e.rss_mb / m.rss_mb, RSS_GROWTH, "<=", "x"),
            Target(f"{name} open files at the end <= middle + {FD_SLACK}", e.fds - m.fds, FD_SLACK, "<="),
            Target(f"{name} asyncio tasks at the end <= middle + {TASK_SLACK}", e.tasks - m.tasks, TASK_SLACK, "<="),
        ]
    return section
