"""Scenarios 1, 2 and 4: file downloads from a local nginx (hive vs curl, aria2c, hf_hub_download; memory)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.context import MIB, Context, Trial, hive_fetch, rounds, size_text
from bench.nginx import AccessRecord, Nginx
from bench.procs import RssSampler, run_checked
from bench.report import Measurement, Ratio, Section, Target, fmt, ratio
from bench.system import module_version

__all__ = ["download", "memory", "segmented"]

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


def _check_size(path: Path, size: int) -> None:
    got = path.stat().st_size if path.exists() else -1
    if got != size:
        raise RuntimeError(f"{path.name}: {got} bytes on disk, expected {size}")


def _requests(nginx: Nginx, offset: int, uri_suffix: str) -> list[AccessRecord]:
    return [r for r in nginx.records_since(offset) if r.uri.endswith(uri_suffix)]


# --------------------------------------------------------------------------- 1. one big file


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
        seconds, payload = hive_fetch(hive_url, url, timeout)
        ranges = [r.range or "(none)" for r in wait_for_log(nginx, offset)]
        asked.setdefault(hive_url, []).append(", ".join(ranges))
        final = Path(payload["path"])
        try:
            if payload.get("sha256") != sha:
                raise RuntimeError(f"hive sha256 {payload.get('sha256')} != {sha}")
            _check_size(final, size)
        finally:
            ctx.remove(final)
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
                _check_size(target, size)
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

        def aria_trial() -> float:
            t0 = time.perf_counter()
            try:
                run_checked(argv, timeout)
                seconds = time.perf_counter() - t0
                _check_size(out / f"aria2-{name}", size)
            finally:
                ctx.remove(out / f"aria2-{name}", out / f"aria2-{name}.aria2")
            return seconds

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
                _check_size(Path(info["path"]).resolve(), size)
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


# --------------------------------------------------------------------------- 2. segmented, rate-capped


def segmented(ctx: Context) -> Section:
    size = ctx.sizes.segmented
    section = Section("segmented", f"2. One {size_text(size)} file, each connection capped at 20 MiB/s")
    nginx = ctx.nginx()
    src, sha = ctx.data_file(f"seg-{size // MIB}m.bin", size)
    name = src.name
    url = f"{nginx.url}/limited/data/{name}"
    timeout = 60 + 2 * size / (20 * MIB)
    out = ctx.workdir / "out"
    out.mkdir(parents=True, exist_ok=True)
    from services.hive.settings import HiveSettings

    default_segments = HiveSettings.model_fields["segments"].default
    section.method = [
        "nginx serves the file under `/limited/` with `limit_rate 20m;`: 20 MiB/s (20.97 MB/s) per request, "
        "which is the ceiling of one connection (checked with curl while writing this harness: 64 MiB in "
        "3.1 s; nginx sends a request's first write unthrottled, so short ranges finish a little early).",
        "Each hive configuration is its own `rbee-hive` subprocess (`HIVE_SEGMENTS` in its environment); "
        "wall time from POST to the `complete` event, sha256 checked. The nginx access log of each run "
        "gives the number of requests and distinct connections the client used.",
        f"`HIVE_SEGMENTS` default in this code: {default_segments}.",
    ]
    configs: list[tuple[str, dict[str, Any]]] = [
        (f"hive, HIVE_SEGMENTS default ({default_segments})", {}),
        ("hive, HIVE_SEGMENTS=8", {"segments": 8}),
        ("hive, HIVE_SEGMENTS=1", {"segments": 1}),
    ]
    conns: dict[str, list[str]] = {}
    trials: list[tuple[Measurement, Trial]] = []

    def counted(label: str, trial: Trial) -> Trial:
        def wrapped() -> float:
            offset = nginx.log_offset()
            seconds = trial()
            time.sleep(0.05)  # nginx logs a request when it ends; ours have
            records = _requests(nginx, offset, f"/{name}")
            conns.setdefault(label, []).append(
                f"{len(records)} requests / {len({r.connection for r in records})} connections"
            )
            return seconds

        return wrapped

    measures: dict[str, Measurement] = {}
    for label, settings in configs:
        hive = ctx.hive(f"hive-seg{settings.get('segments', 'default')}", **settings)
        m = section.measure(label, "s")
        measures[label] = m
        env = " ".join(f"HIVE_{k.upper()}={v}" for k, v in settings.items())
        section.commands.append(f'{env + " " if env else ""}rbee-hive; POST /v2/downloads {{"model_ref": "{url}"}}')

        def hive_trial(hive_url: str = hive.url) -> float:
            seconds, payload = hive_fetch(hive_url, url, timeout)
            final = Path(payload["path"])
            try:
                if payload.get("sha256") != sha:
                    raise RuntimeError(f"hive sha256 {payload.get('sha256')} != {sha}")
                _check_size(final, size)
            finally:
                ctx.remove(final)
            return seconds

        trials.append((m, counted(label, hive_trial)))

    aria2c = ctx.tools.get("aria2c")
    m_aria = None
    if aria2c:
        m_aria = section.measure("aria2c -x8 -s8 -k1M", "s")
        target = out / f"aria2-{name}"
        argv = [
            aria2c, "-x8", "-s8", "-k1M", "--file-allocation=none", "-q", "--allow-overwrite=true",
            "--auto-file-renaming=false", "-d", str(out), "-o", target.name, url,
        ]  # fmt: skip
        section.commands.append(" ".join(argv))

        def aria_trial() -> float:
            t0 = time.perf_counter()
            try:
                run_checked(argv, timeout)
                seconds = time.perf_counter() - t0
                _check_size(target, size)
            finally:
                ctx.remove(target, Path(f"{target}.aria2"))
            return seconds

        trials.append((m_aria, counted(m_aria.label, aria_trial)))
    else:
        section.notes.append(f"aria2c baseline skipped: {ctx.tools.missing.get('aria2c')}")

    ctx.log(f"scenario 2: {size_text(size)} at 20 MiB/s per connection x {len(trials)} clients x {ctx.runs} runs")
    rounds(ctx, section, trials)

    m_default, m_8, m_1 = (measures[label] for label, _ in configs)
    for m in section.measurements:
        if m.median:
            m.note = f"{size / m.median / 1e6:.0f} MB/s"
    for label, runs in conns.items():
        section.notes.append(f"{label}: {'; '.join(runs)} (per run)")
    fresh = [label for label, runs in conns.items() if label.startswith("hive") and runs and _no_reuse(runs)]
    if fresh:
        section.notes.append(
            f"{', '.join(fresh)}: a new TCP connection for (nearly) every request; connections are not kept "
            "alive between the segments' ranges (on a real network each one pays a handshake and slow start)."
        )
    r_default = ratio(m_1, m_default)
    r_8 = ratio(m_1, m_8)
    section.ratios = [
        Ratio(f"speed-up, default ({default_segments}) vs one connection", r_default, "one-connection time / time"),
        Ratio("speed-up, HIVE_SEGMENTS=8 vs one connection", r_8, "one-connection time / time"),
        Ratio(f"hive default ({default_segments}) / aria2c -x8", ratio(m_default, m_aria), "time ratio"),
        Ratio("hive HIVE_SEGMENTS=8 / aria2c -x8", ratio(m_8, m_aria), "time ratio"),
    ]
    section.targets = [
        Target(f"hive (default, {default_segments} segments) >= 4x one connection", r_default, 4.0, ">=", "x"),
        Target(
            f"hive (default, {default_segments} segments) no slower than aria2c -x8 (time ratio)",
            ratio(m_default, m_aria),
            1.0,
            "<=",
            "x",
            "" if aria2c else "aria2c missing",
        ),
        Target("hive (HIVE_SEGMENTS=8) >= 4x one connection", r_8, 4.0, ">=", "x"),
        Target(
            "hive (HIVE_SEGMENTS=8) no slower than aria2c -x8 (time ratio)",
            ratio(m_8, m_aria),
            1.0,
            "<=",
            "x",
            "" if aria2c else "aria2c missing",
        ),
    ]
    multi = [
        r for label, settings in configs if settings.get("segments", default_segments) > 1 for r in conns.get(label, [])
    ]
    if multi and all(r.endswith("/ 1 connections") for r in multi):
        section.notes.append(
            "Every hive run used a single connection whatever HIVE_SEGMENTS said: segmented downloading "
            "is not in the hive measured here."
        )
    return section


def _no_reuse(runs: list[str]) -> bool:
    """From "N requests / M connections" lines: more than 2 requests and connections >= requests - 1."""
    for line in runs:
        parts = line.split()
        requests, connections = int(parts[0]), int(parts[3])
        if requests <= 2 or connections < requests - 1:
            return False
    return True


# --------------------------------------------------------------------------- 4. memory


def _fetch_all(hive_url: str, urls: list[str], timeout: float) -> list[tuple[float, dict[str, Any]] | BaseException]:
    """The downloads of `urls` started together, each followed on its own thread."""
    results: list[tuple[float, dict[str, Any]] | BaseException] = []

    def fetch(url: str) -> None:
        try:
            results.append(hive_fetch(hive_url, url, timeout))
        except BaseException as exc:  # reported by the caller
            results.append(exc)

    threads = [threading.Thread(target=fetch, args=(u,), daemon=True) for u in urls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 10)
    return results


def memory(ctx: Context) -> Section:
    size = ctx.sizes.big
    section = Section("memory", f"4. Hive memory: four concurrent {size_text(size)} downloads")
    nginx = ctx.nginx()
    src, sha = ctx.data_file(f"model-{size // MIB}m.bin", size)
    urls = [nginx.url + ctx.link(f"mem/m{i}-{src.name}", src) for i in range(4)]
    timeout = 120 + 4 * size / (20 * MIB)
    section.method = [
        f"A fresh `rbee-hive` per run with `HIVE_MAX_CONCURRENT=4` (the default, 3, would queue the fourth); four "
        f"POSTs of four different URLs (symlinks to one {size_text(size)} file) to the local nginx, unthrottled.",
        "psutil samples the hive's RSS every 50 ms from before the POSTs until all four are `complete` "
        "(sha256 checked); the figure is the peak. The idle RSS (after start-up, before the POSTs) is listed "
        "too. MB = 10^6 bytes.",
    ]
    section.commands.append("HIVE_MAX_CONCURRENT=4 rbee-hive; 4 x POST /v2/downloads {model_ref: <url i>}")
    section.commands.append("HIVE_MAX_CONCURRENT=4 HIVE_SEGMENTS=1 rbee-hive; the same (for comparison)")
    configs: list[tuple[str, dict[str, Any]]] = [("", {}), (", HIVE_SEGMENTS=1 (for comparison)", {"segments": 1})]
    rows = {
        suffix: (
            section.measure(f"hive peak RSS{suffix}", "MB"),
            section.measure(f"hive idle RSS (before){suffix}", "MB"),
            section.measure(f"wall time, all four{suffix}", "s"),
        )
        for suffix, _ in configs
    }
    for run in range(ctx.runs):
        for suffix, settings in configs:
            m_peak, m_idle, m_time = rows[suffix]
            peak_idle_time = _memory_run(ctx, section, f"run {run + 1}{suffix}", urls, sha, timeout, settings)
            if peak_idle_time is not None:
                for m, v in zip((m_peak, m_idle, m_time), peak_idle_time, strict=True):
                    m.runs.append(v)
    section.targets = [Target("hive peak RSS < 150 MB (default settings)", rows[""][0].median, 150.0, "<", "MB")]
    return section


def _memory_run(
    ctx: Context, section: Section, label: str, urls: list[str], sha: str, timeout: float, settings: dict[str, Any]
) -> tuple[float, float, float] | None:
    """One fresh hive, four downloads at once: (peak RSS MB, idle RSS MB, seconds), or None if one failed."""
    with ExitStack() as run_stack:
        run_stack.callback(ctx.settle)
        hive = ctx.hive("hive-mem", max_concurrent=4, **settings)
        run_stack.callback(hive.stop)
        sampler = RssSampler(hive.pid, 0.05).start()
        run_stack.callback(sampler.stop)
        ctx.quiet()
        idle = sampler.now()
        t0 = time.perf_counter()
        results = _fetch_all(hive.url, urls, timeout)
        elapsed = time.perf_counter() - t0
        sampler.stop()
        failures = [r for r in results if isinstance(r, BaseException)]
        finals = [Path(r[1]["path"]) for r in results if not isinstance(r, BaseException)]
        shas = [r[1].get("sha256") for r in results if not isinstance(r, BaseException)]
        bad = [x for x in shas if x != sha]
        ctx.remove(*finals)
        if failures or bad or len(results) != len(urls):
            section.notes.append(f"{label} failed: {failures or bad or 'a download did not finish'}")
            return None
        ctx.log(f"  {label}: peak RSS {sampler.peak / 1e6:.0f} MB, idle {idle / 1e6:.0f} MB, {elapsed:.1f} s")
        return sampler.peak / 1e6, idle / 1e6, elapsed
