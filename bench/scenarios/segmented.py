"""Scenario 2 (`--only segmented`): a segmented download from a local nginx capped per connection, hive vs
one connection and aria2c."""

from __future__ import annotations

import time
from typing import Any

from bench.context import MIB, Context, Trial, hive_fetch_checked, rounds, size_text, timed_command
from bench.nginx import AccessRecord, Nginx
from bench.report import Measurement, Ratio, Section, Target, ratio

__all__ = ["segmented"]


def _requests(nginx: Nginx, offset: int, uri_suffix: str) -> list[AccessRecord]:
    return [r for r in nginx.records_since(offset) if r.uri.endswith(uri_suffix)]


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
            return hive_fetch_checked(ctx, hive_url, url, sha, size, timeout)

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

        aria_trial = timed_command(ctx, argv, target, size, timeout)

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
