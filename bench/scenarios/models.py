"""Scenario 9a (`--only models`): the hive's model store answers `GET /v2/models` on a big cache, kept in
an index (README, "The model store")."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import httpx

from bench.context import Context
from bench.report import Section, Target, fmt, percentile
from bench.system import module_version

__all__ = ["models", "write_cache"]

P99_LIMIT_MS = 100.0


def write_cache(hub: Path, repos: int, files: int) -> int:
    """A Hugging Face cache of `repos` models and `files` files in all, written directly: each model one
    commit of small files (blobs linked from `snapshots/{commit}/`, some in sub-folders), `refs/main`, and
    every fifth model a second commit sharing all but one blob. Returns its size as scan_cache_dir counts it."""
    per_repo = max(1, files // repos)
    total = 0
    for r in range(repos):
        root = hub / f"models--bench--m{r:04d}"
        (root / "blobs").mkdir(parents=True)
        (root / "refs").mkdir()
        commits = [hashlib.sha1(f"{r}-{c}".encode()).hexdigest() for c in range(2 if r % 5 == 0 else 1)]
        for c, commit in enumerate(commits):
            for f in range(per_repo):
                content = f"{r}:{f}:{c if f == 0 else 0}".encode() * (1 + f % 50)
                blob = root / "blobs" / hashlib.sha256(content).hexdigest()
                if not blob.exists():
                    blob.write_bytes(content)
                    total += len(content)
                link = root / "snapshots" / commit / (f"sub/f{f}.bin" if f % 4 == 3 else f"f{f}.bin")
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(os.path.relpath(blob, link.parent), link)
        (root / "refs" / "main").write_text(commits[-1])
    return total


def models(ctx: Context) -> Section:
    repos, files, requests = ctx.sizes.store_repos, ctx.sizes.store_files, ctx.sizes.store_requests
    section = Section("models", f"11a. The model store: GET /v2/models on a cache of {repos:,} models")
    section.method = [
        f"A Hugging Face cache of {repos:,} models and {files:,} files is written directly on disk (no download): "
        "each model one commit of small files (blobs linked from its snapshot, a quarter in a sub-folder), "
        "`refs/main`, and every fifth model a second commit sharing all blobs but one.",
        "A real `rbee-hive` (subprocess) on it: its start-up reads every model's folder once; the time to "
        "`/healthz` is listed. The answer is checked (every model there, `disk.used` the cache's size as "
        "scan_cache_dir counts it, and scan_cache_dir's own view when huggingface_hub is installed).",
        f"Then {requests} `GET /v2/models` one after the other on one keep-alive connection, each timed from "
        "request to the whole body. Meanwhile the hive looks at the disk for other tools' changes once a second "
        "(a listing and a few stats per model, on a thread), which competes with the requests for the CPU.",
    ]
    section.commands = ["rbee-hive (HIVE_MODELS_DIR: the generated cache)", f"{requests} x GET {{hive}}/v2/models"]
    m_start = section.measure("hive start, reading the cache (to /healthz)", "s")
    m_p50 = section.measure("GET /v2/models p50", "ms")
    m_p99 = section.measure("GET /v2/models p99", "ms")
    m_bytes = section.measure("answer size", "KB")
    for run in range(ctx.runs):
        models_dir = ctx.workdir / "models" / f"store-{run + 1}"
        ctx.log(f"  writing a cache of {repos} models, {files} files")
        used = write_cache(models_dir / "hub", repos, files)
        ctx.quiet()
        started = time.monotonic()
        hive = ctx.hive("hive-store", models_dir=models_dir)
        m_start.runs.append(time.monotonic() - started)
        times: list[float] = []
        with httpx.Client(base_url=hive.url, timeout=30) as client:
            body = client.get("/v2/models").json()
            got = len(body["models"])
            if got != repos or body["disk"]["used"] != used:
                raise RuntimeError(
                    f"the hive lists {got} models, {body['disk']['used']} bytes; expected {repos}, {used}"
                )
            if run == 0 and module_version("huggingface_hub") is not None:
                section.notes.append(_agrees(models_dir / "hub", body["models"]))
            for _ in range(requests):
                t0 = time.perf_counter()
                answer = client.get("/v2/models")
                answer.raise_for_status()
                times.append((time.perf_counter() - t0) * 1000)
            m_bytes.runs.append(len(answer.content) / 1000)
        hive.stop()
        ctx.remove(models_dir)
        p50, p99 = percentile(times, 50), percentile(times, 99)
        if p50 is not None and p99 is not None:
            m_p50.runs.append(p50)
            m_p99.runs.append(p99)
        ctx.log(f"  run {run + 1}: p50 {fmt(p50, 'ms')}, p99 {fmt(p99, 'ms')}")
    section.targets = [
        Target(
            f"GET /v2/models p99 < {P99_LIMIT_MS:.0f} ms ({repos:,} models, {files:,} files)",
            m_p99.median,
            P99_LIMIT_MS,
            "<",
            "ms",
        )
    ]
    return section


def _agrees(hub: Path, listed: list[dict[str, object]]) -> str:
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(hub)
    theirs = {r.repo_id: r.size_on_disk for r in info.repos}
    ours = {str(m["repo_id"]): m["size_on_disk"] for m in listed}
    same = "the same sizes" if theirs == ours else "DIFFERENT sizes"
    return f"scan_cache_dir on the same cache: {len(theirs)} models, {same}, {len(info.warnings)} warnings."
