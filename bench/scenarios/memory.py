"""Scenario 4 (`--only memory`): the hive's memory during four concurrent big downloads from a local nginx."""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.context import MIB, Context, hive_fetch, size_text
from bench.procs import RssSampler
from bench.report import Section, Target

__all__ = ["memory"]


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
