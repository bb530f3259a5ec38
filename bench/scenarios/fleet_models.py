"""Scenario 9b (`--only fleet-models`): `GET /v1/models` over 8 hives of 100 models each.

Each hive's Hugging Face cache is generated on disk before it starts (scenario 9a's `write_cache`: the same
models on every hive), as `hf download` leaves one; the hive indexes it, the queen loads every hive's list
when its stream connects, and then answers `GET /v1/models` from memory.
"""

from __future__ import annotations

import time

import httpx

from bench.context import Context
from bench.report import Section, Target, percentile
from bench.scenarios.models import write_cache
from shared.waiting import wait_until

__all__ = ["fleet_models"]

FILES_PER_MODEL = 3


def fleet_models(ctx: Context) -> Section:
    hives_n, models_n = (2, 10) if ctx.tiny else (8, 100)
    requests = 50 if ctx.tiny else 500
    section = Section("fleet-models", f"11b. GET /v1/models over {hives_n} hives of {models_n} models each")
    section.method = [
        f"{hives_n} `rbee-hive` processes, each on a Hugging Face cache generated on disk before it starts "
        f"({models_n} repos of {FILES_PER_MODEL} files: blobs, snapshot symlinks, `refs/main`; the same on "
        "every hive), and an `rbee-queen` with `QUEEN_HIVES` naming them all.",
        f"Once `GET /v1/models` shows every model on every hive, {requests} requests one after another on one "
        "keep-alive connection, each timed from send to the whole body read.",
    ]
    section.commands = [f"QUEEN_HIVES=hive-01=…,…,hive-{hives_n:02d}=… rbee-queen", "GET {queen}/v1/models"]
    hives = []
    for h in range(hives_n):
        name = f"hive-{h + 1:02d}"
        models_dir = ctx.workdir / "models" / "fleet-models" / name
        write_cache(models_dir / "hub", models_n, models_n * FILES_PER_MODEL)
        hives.append(ctx.prepare(name, "services.hive.main", {"HIVE_ID": name, "HIVE_MODELS_DIR": str(models_dir)}))
    ctx.start_all(hives)
    listed = ",".join(f"{h.name}={h.url}" for h in hives)
    queen = ctx.service("queen-fleet-models", "services.queen.main", {"QUEEN_HIVES": listed})
    m_p50 = section.measure("GET /v1/models p50", "ms")
    m_p99 = section.measure("GET /v1/models p99", "ms")
    m_size = section.measure("answer size", "kB")
    with httpx.Client(base_url=queen.url, timeout=30) as client:

        def everything() -> bool:
            body = client.get("/v1/models").json()
            return len(body["models"]) == models_n and all(len(m["hives"]) == hives_n for m in body["models"])

        wait_until(everything, 60, "every hive's models in GET /v1/models", interval=0.2)
        for run in range(ctx.runs):
            ctx.quiet()
            times = []
            for _ in range(requests):
                t0 = time.perf_counter()
                resp = client.get("/v1/models")
                resp.read()
                times.append((time.perf_counter() - t0) * 1000)
                resp.raise_for_status()
            m_size.runs.append(len(resp.content) / 1000)
            for m, q in ((m_p50, 50), (m_p99, 99)):
                m.runs.append(percentile(times, q) or 0.0)
            ctx.log(f"  run {run + 1}: p50 {m_p50.runs[-1]:.1f} ms, p99 {m_p99.runs[-1]:.1f} ms")
    worst = max(m_p99.runs) if m_p99.runs else None
    section.targets = [
        Target(f"GET /v1/models p99 < 100 ms ({hives_n} x {models_n}), every run", worst, 100, "<", "ms")
    ]
    return section
