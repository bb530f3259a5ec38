"""Scenario 9 (`--only bandwidth`): the hive yields to a competing flow on its interface (README, "Bandwidth").

A hive with `HIVE_NIC=lo` and a budget downloads a big file from a local server; a few seconds in,
another process (curl --limit-rate) starts reading over lo at half the budget. The interface's
received bytes are sampled from /proc/net/dev every 50 ms: how long after the competing flow starts
the total is first within the budget ±10% (1 s windows), how many windows from then on are, and the
total over the flow's last seconds against the budget. The download must still complete. The measuring half is
`bench/bandwidth_run.py`, run in a network namespace of its own where the machine allows one; the
arithmetic is here.
"""

from __future__ import annotations

import json
import sys

from bench.bandwidth_run import ALONE_SECS, OTHER_SECS
from bench.context import MIB, Context, Skip
from bench.procs import run_checked
from bench.report import Section, Target
from services.service_start import own_network_prefix

__all__ = ["bandwidth", "in_band_share", "mean_rate", "settle_time", "window_rates"]

MB = 1_000_000
_WINDOW = 1.0  # seconds each rate is taken over (the controller's own tick)
_TOLERANCE = 0.10


def window_rates(samples: list[tuple[float, int]], window: float = _WINDOW) -> list[tuple[float, float]]:
    """(start of window, bytes/s over it) for every sample that ends a window of at least `window` s."""
    rates: list[tuple[float, float]] = []
    j = 0
    for t, count in samples:
        while j + 1 < len(samples) and t - samples[j + 1][0] >= window:
            j += 1
        t0, c0 = samples[j]
        if t - t0 >= window:
            rates.append((t0, (count - c0) / (t - t0)))
    return rates


def settle_time(
    samples: list[tuple[float, int]], start: float, budget: float, tolerance: float = _TOLERANCE
) -> float | None:
    """Seconds from `start` until the first window whose rate is within budget ±tolerance (None if none is)."""
    return next((t - start for t, r in window_rates(samples) if t >= start and abs(r / budget - 1) <= tolerance), None)


def in_band_share(
    samples: list[tuple[float, int]], start: float, stop: float, budget: float, tolerance: float = _TOLERANCE
) -> float | None:
    """The share of the windows lying wholly within [start, stop] whose rate is within budget ±tolerance."""
    rates = [r for t, r in window_rates(samples) if start <= t <= stop - _WINDOW]
    return sum(abs(r / budget - 1) <= tolerance for r in rates) / len(rates) if rates else None


def mean_rate(samples: list[tuple[float, int]], start: float, stop: float) -> float | None:
    inside = [(t, c) for t, c in samples if start <= t <= stop]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def bandwidth(ctx: Context) -> Section:
    curl = ctx.tools.get("curl")
    if curl is None:
        raise Skip(ctx.tools.missing.get("curl", "curl is not installed"))
    budget = 10 * MB if ctx.tiny else 50 * MB
    other = budget // 2
    size = (budget * 12) // MIB * MIB  # about 12 s alone at the budget
    prefix, how = own_network_prefix()
    where = (
        f"in a network namespace of its own (`{how}`): lo carried only its flows"
        if prefix
        else f"on the machine's shared lo ({how}): other processes' loopback traffic counts too"
    )
    section = Section("bandwidth", "10. Bandwidth that yields: a competing flow on lo")
    section.method = [
        f"A `rbee-hive` subprocess with `HIVE_NIC=lo HIVE_NIC_BUDGET={budget}` (and the default 1 s tick, "
        f"floor and smoothing) downloads a {size // MIB} MiB file from a local model server (sparse, sendfile). "
        f"{ALONE_SECS:.0f} s in, `curl --limit-rate {other}` starts reading another file over lo (half the "
        f"budget) for {OTHER_SECS:.0f} s. `bench/bandwidth_run.py` runs all of it, {where}.",
        "lo's received bytes are sampled from /proc/net/dev every 50 ms (on lo every byte is received once): "
        f"the settle time is from curl's start to the first {_WINDOW:.0f} s window whose rate is within the budget "
        f"±{_TOLERANCE:.0%}; the share in band counts the {_WINDOW:.0f} s windows (one every 50 ms) from then to "
        "curl's end that are within it too; the total is lo's mean rate from 3 s after curl's start to its end, "
        "against the budget. MB = 10^6 bytes.",
    ]
    section.commands.append(f"HIVE_NIC=lo HIVE_NIC_BUDGET={budget} rbee-hive; POST /v2/downloads; curl --limit-rate")
    settle = section.measure("settle time after the competing flow starts", "s")
    share = section.measure("share of 1 s windows in band after settling", "%")
    total = section.measure("lo's total while competing / budget", "x")
    alone = section.measure("lo's total before it / budget", "x")
    took = section.measure(f"the download's wall time ({size // MIB} MiB)", "s")
    workdir = ctx.workdir / "bandwidth"
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [*prefix, sys.executable, "-m", "bench.bandwidth_run", "--budget", str(budget), "--other", str(other)]
    argv += ["--size", str(size), "--runs", str(ctx.runs), "--workdir", str(workdir), "--curl", curl]
    ctx.quiet()
    child = run_checked(argv, timeout=120 + 60 * ctx.runs)
    for run, line in enumerate(line for line in child.stdout.splitlines() if line.startswith("{")):
        result = json.loads(line)
        samples = [(float(t), int(c)) for t, c in result["samples"]]
        if result["error"]:
            section.notes.append(f"run {run + 1}: the download failed: {result['error']}")
            continue
        t_other, t_end = float(result["t_other"]), float(result["t_end"])
        s = settle_time(samples, t_other, budget)
        during = mean_rate(samples, t_other + 3.0, t_end - 0.5)
        before = mean_rate(samples, t_other - 2.0, t_other)
        if s is not None:
            settle.runs.append(s)
            in_band = in_band_share(samples, t_other + s, t_end - 0.5, budget)
            if in_band is not None:
                share.runs.append(in_band * 100)
        else:
            section.notes.append(f"run {run + 1}: lo's total was never within the band while competing")
        for m, v in ((total, during), (alone, before)):
            if v is not None:
                m.runs.append(v / budget)
        took.runs.append(float(result["seconds"]))
        ctx.log(f"  run {run + 1}: settled in {s} s, total {during} B/s vs {budget}, download {result['seconds']} s")
    deviation = None if total.median is None else abs(total.median - 1) * 100
    section.targets = [
        Target("hive settles within 2 s of a competing flow", settle.median, 2.0, "<=", "s"),
        Target("lo's total within the budget ±10% while competing", deviation, 10.0, "<=", "%"),
        Target("the download completes, every run", float(len(took.runs)), float(ctx.runs), ">="),
    ]
    return section
