"""Scenario 1 (`--only download`): one big file from a local nginx, hive vs curl, aria2c and hf_hub_download."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.context import MIB, Context, Trial, check_size, hive_fetch_checked, rounds, size_text, timed_command
from bench.nginx import AccessRecord, Nginx
from bench.procs import run_checked
from bench.report import Measurement, Ratio, Section, Target, fmt, ratio
from bench.system import module_version

__all__ = ["download"]


HF_REPO = "bench/model"


def wait_for_log(nginx: Nginx, offset: int, settle: float = 2.0) -> list[AccessRecord]:
    """The access-log lines after `offset`; nginx writes a line when its request ends, and a request the
    client abandoned (a body moved to a thread) ends a moment later."""
    deadline = time.monotonic() + settle
    records = nginx.records_since(offset)
    while time.monotonic() < deadline:
        time.sleep(0.05)
        again = nginx.records_since(offset)
        if len(again) == len(records) and records:
            return records
        records = again
    return records


def download(ctx: Context) -> Section:
    size = ctx.sizes.big
    section = Section("download", f"1. One {size_text(size)} file from local nginx")
    nginx = ctx.nginx()
    src, sha = ctx.data_file(f"model-{size // MIB}m.bin", size)
    name = src.name
    url = f"{nginx.url}/data/{name}"
    ctx.link(f"{HF_REPO}/resolve/main/{name}", src)
    out = ctx.workdir / "out"
    out.mkdir(parents=True, exist_ok=True)
    timeout = 60 + size / (20 * MIB)
    tools = ctx.tools

    section.method = [
        f"nginx serves a {size_text(size)} file of pseudo-random bytes on 127.0.0.1 with `sendfile on`; it sits in the "
        "page cache, so this measures the clients, not the disk read.",
        "Each run measures every client once, one after the other, in an order rotated each run; `sync` runs "
        "before and after every measurement, each downloaded file is deleted after it, and a measurement "
        "waits (at most 4 s) for other processes on the machine to go quiet first (see the notes).",
        "hive: a real `rbee-hive` subprocess (default settings, one process for all runs; a second one with "
        "`HIVE_SEGMENTS=1` is listed for comparison, outside the targets); wall time from "
        "sending `POST /v2/downloads {model_ref: <url>}` to receiving the `complete` event on "
        "`GET /v2/downloads/{id}/stream`. The hive streams to `<file>.part` (with O_DIRECT: the bytes reach the "
        "disk as they arrive, not the page cache), hashes sha256 on the way, **fsyncs the file before its atomic "
        "rename** and fsyncs the directory; the harness checks its sha256. Its body starts on the event loop and "
        "moves to a worker thread once it runs faster than `HIVE_THREAD_ABOVE_BPS` (one more ranged request); "
        "it splits over several connections only if one proves slow (`HIVE_SPLIT_BELOW_BPS`). The notes list "
        "the ranges each hive run asked nginx for.",
        "curl: `curl -s -o FILE URL` (no fsync). `curl + sync`: the same followed by `sync FILE`, which "
        "flushes the file to disk as the hive does; that is the like-for-like baseline for durability.",
        "aria2c: one connection (`-x1 -s1 --file-allocation=none`).",
        f"hf_hub_download: `HF_ENDPOINT={nginx.url}` (nginx serves the file at "
        f"`/{HF_REPO}/resolve/main/{name}` and adds an `X-Repo-Commit` header), `HF_HUB_DISABLE_TELEMETRY=1`, "
        "`HF_HUB_ENABLE_HF_TRANSFER=0`, progress bars off, a fresh `cache_dir` per run. It runs in its own "
        "interpreter; the figure is the `hf_hub_download()` call alone (interpreter start-up and imports "
        "excluded, in its favour).",
    ]

    trials: list[tuple[Measurement, Trial]] = []
    missing_notes: list[str] = []

    asked: dict[str, list[str]] = {}

    def hive_trial(hive_url: str) -> float:
        offset = nginx.log_offset()
        seconds = hive_fetch_checked(ctx, hive_url, url, sha, size, timeout)
        ranges = [r.range or "(none)" for r in wait_for_log(nginx, offset)]
        asked.setdefault(hive_url, []).append(", ".join(ranges))
        return seconds

    hive = ctx.hive("hive-download")
    m_hive = section.measure("hive (POST -> complete)", "s")
    section.commands.append(f'rbee-hive (HIVE_MODELS_DIR=<tmp>); POST /v2/downloads {{"model_ref": "{url}"}}')
    trials.append((m_hive, lambda: hive_trial(hive.url)))
    hive_1 = ctx.hive("hive-download-seg1", segments=1)
    m_hive_1 = section.measure("hive, HIVE_SEGMENTS=1 (for comparison)", "s")
    section.commands.append("HIVE_SEGMENTS=1 rbee-hive; the same POST")
    trials.append((m_hive_1, lambda: hive_trial(hive_1.url)))

    curl = tools.get("curl")
    m_curl = m_curl_sync = None
    if curl:
        target = out / f"curl-{name}"
        m_curl = section.measure("curl -s -o FILE", "s")
        m_curl_sync = section.measure("curl -s -o FILE && sync FILE", "s")
        section.commands += [f"curl -s -o {target} {url}", f"curl -s -o {target} {url} && sync {target}"]

        def curl_trial(sync: bool) -> float:
            t0 = time.perf_counter()
            try:
                run_checked([curl, "-s", "-o", str(target), url], timeout)
                if sync:
                    run_checked(["sync", str(target)], timeout)
                seconds = time.perf_counter() - t0
                check_size(target, size)
            finally:
                ctx.remove(target)
            return seconds

        trials += [(m_curl, lambda: curl_trial(False)), (m_curl_sync, lambda: curl_trial(True))]
    else:
        missing_notes.append(f"curl baseline skipped: {tools.missing.get('curl')}")

    aria2c = tools.get("aria2c")
    m_aria = None
    if aria2c:
        m_aria = section.measure("aria2c -x1 -s1", "s")
        argv = [
            aria2c, "-x1", "-s1", "--file-allocation=none", "-q", "--allow-overwrite=true",
            "--auto-file-renaming=false", "-d", str(out), "-o", f"aria2-{name}", url,
        ]  # fmt: skip
        section.commands.append(" ".join(argv))

        aria_trial = timed_command(ctx, argv, out / f"aria2-{name}", size, timeout)

        trials.append((m_aria, aria_trial))
    else:
        missing_notes.append(f"aria2c baseline skipped: {tools.missing.get('aria2c')}")

    m_hf: Measurement | None = None
    if module_version("huggingface_hub") is None:
        missing_notes.append("hf_hub_download baseline skipped: huggingface_hub is not installed (`.[bench]` extra)")
    else:
        m_hf = section.measure("hf_hub_download", "s", note="the call alone")
        hf_env = {
            **os.environ,
            "HF_ENDPOINT": nginx.url,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_ENABLE_HF_TRANSFER": "0",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HOME": str(ctx.workdir / "hf-home"),
        }
        section.commands.append(
            f"HF_ENDPOINT={nginx.url} HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_ENABLE_HF_TRANSFER=0 "
            f"HF_HUB_DISABLE_PROGRESS_BARS=1 python -m bench.hf_fetch --repo {HF_REPO} --file {name} "
            "--cache-dir <fresh dir>   # hf_hub_download(repo, file, cache_dir=...)"
        )

        def hf_trial() -> float:
            cache = out / "hf-cache"
            ctx.remove(cache)
            try:
                argv = [
                    sys.executable,
                    "-m",
                    "bench.hf_fetch",
                    "--repo",
                    HF_REPO,
                    "--file",
                    name,
                    "--cache-dir",
                    str(cache),
                ]
                result = run_checked(argv, timeout + 30, env=hf_env)
                info: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
                check_size(Path(info["path"]).resolve(), size)
                return float(info["seconds"])
            finally:
                ctx.remove(cache)

        trials.append((m_hf, hf_trial))

    ctx.log(f"scenario 1: {size_text(size)} x {len(trials)} clients x {ctx.runs} runs")
    rounds(ctx, section, trials)

    r_curl = ratio(m_hive, m_curl)
    r_curl_sync = ratio(m_hive, m_curl_sync)
    r_hf = ratio(m_hive, m_hf)
    section.ratios = [
        Ratio("hive / curl", r_curl, "time ratio, lower is better"),
        Ratio("hive / (curl + sync)", r_curl_sync, "time ratio"),
        Ratio("hive / aria2c -x1", ratio(m_hive, m_aria), "time ratio"),
        Ratio("hive / hf_hub_download", r_hf, "time ratio"),
        Ratio("hive HIVE_SEGMENTS=1 / curl", ratio(m_hive_1, m_curl), "time ratio, for comparison"),
        Ratio("hive HIVE_SEGMENTS=1 / hf_hub_download", ratio(m_hive_1, m_hf), "time ratio, for comparison"),
    ]
    if m_hive.median:
        section.notes.append(f"hive throughput: {size / m_hive.median / 1e6:.0f} MB/s (median)")
    if m_curl and m_curl.median:
        section.notes.append(f"curl throughput: {size / m_curl.median / 1e6:.0f} MB/s (median)")
    for label, server in (("hive", hive), ("hive, HIVE_SEGMENTS=1", hive_1)):
        if asked.get(server.url):
            section.notes.append(f"{label}, ranges asked per run: " + "; ".join(f"`{a}`" for a in asked[server.url]))
    section.notes += missing_notes
    why = "" if curl else "curl missing"
    section.targets = [
        Target("hive <= 1.05x curl's wall time", r_curl, 1.05, "<=", "x", why),
        Target("hive <= 0.55x hf_hub_download's wall time", r_hf, 0.55, "<=", "x"),
    ]
    if r_curl_sync is not None:
        section.notes.append(
            f"Against `curl + sync` (the same durability as the hive) the hive is at {fmt(r_curl_sync, 'x')}; "
            "the target above is judged against plain curl, as stated."
        )
    return section
