"""Scenario 3b (`--only fanout`): one download's SSE stream fanned out by the queen to 1,000 clients. How
events are dated: bench/latency.py."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from bench.context import MIB, TERMINAL, Context, Skip
from bench.latency import (
    HIVE_ID,
    emitted_at,
    post_downloads,
    queen_module_missing,
    reference_times,
    start_pair,
    worst,
)
from bench.procs import RssSampler
from bench.report import Measurement, Section, Target, fmt, percentile
from bench.sse import SseClient
from services.modelserver.server import Fault, ModelServer, generate_file
from shared.wire.hive import hive_stream_url

__all__ = ["fanout"]


@dataclass
class _Fanout:
    got: int = 0  # clients whose stream ended with `complete`
    live: int = 0  # ... and that had a live event before it (connected while the download ran)
    lat_c: list[float] = field(default_factory=list)  # terminal event, kernel receive - reference receive
    lat_read: list[float] = field(default_factory=list)  # the same, but when the client's loop read it
    lat_a: list[float] = field(default_factory=list)  # terminal event, kernel receive - emitted_at
    prog_c: list[float] = field(default_factory=list)  # progress events once every client was connected
    connect_secs: float | None = None
    rss_idle: int = 0
    rss_connected: int = 0
    errors: list[str] = field(default_factory=list)


def fanout(ctx: Context) -> Section:
    clients_n, secs = ctx.sizes.fanout_clients, ctx.sizes.fanout_secs
    rate = 256 * 1024
    size = int(rate * secs)
    section = Section("fanout", f"3b. SSE fan-out: one download, {clients_n:,} queen clients")
    if missing := queen_module_missing():
        raise Skip(missing)
    section.method = [
        f"One download of {size / MIB:.2f} MiB from the Python ModelServer capped at {rate // 1024} KiB/s "
        f"(about {secs:g} s), started through the queen (`POST /v1/downloads`) on a real hive "
        f"(`HIVE_SEGMENTS=1`); {clients_n:,} raw-socket SSE clients in the harness process connect to "
        "`GET {queen}/v1/downloads/{id}/stream` while it runs (at most 200 handshakes at a time) and read "
        "until the terminal event; one more client reads the hive's own `GET {hive}/v2/downloads/{id}/stream` "
        "as the reference.",
        "Terminal-event latency per client (method C, what the queen adds): the kernel receive time "
        "(SO_TIMESTAMPNS) of the client's `complete` event minus the reference client's receive time of the "
        "same event. The same figure taken when the client's event loop read the bytes is listed as well: "
        "the difference is the harness's own delay in serving 1,000 sockets on one loop, not the queen's.",
        "Only clients that had a live event before the terminal one count in the latency (a client that "
        "connected after the end would get the terminal event as its snapshot); how many that is is listed.",
        "psutil samples the queen's RSS every 50 ms: before the clients, once all are connected, and the peak.",
    ]
    section.commands = [
        f"HIVE_SEGMENTS=1 rbee-hive; QUEEN_HIVES={HIVE_ID}=<hive> rbee-queen",
        f"POST {{queen}}/v1/downloads; {clients_n} x GET {{queen}}/v1/downloads/{{id}}/stream",
    ]
    root = ctx.workdir / "modelserver-fanout"
    generate_file(root / "fan" / "model.bin", size, seed=11)
    m_got = section.measure("clients that got the terminal event", "")
    m_live = section.measure("clients connected before the end", "")
    m_p50 = section.measure("terminal event latency p50 (method C)", "ms")
    m_p99 = section.measure("terminal event latency p99 (method C)", "ms")
    m_max = section.measure("terminal event latency max (method C)", "ms")
    m_read99 = section.measure("terminal event p99 as read by the client loop (not the target figure)", "ms")
    m_prog = section.measure("progress event latency p99, once all clients were connected (method C)", "ms")
    m_connect = section.measure(f"time to connect {clients_n:,} clients", "s")
    m_idle = section.measure("queen RSS before clients", "MB")
    m_conn_rss = section.measure(f"queen RSS with {clients_n:,} clients", "MB")
    m_peak = section.measure("queen peak RSS", "MB")
    m_a50: Measurement | None = None
    m_a99: Measurement | None = None
    for run in range(ctx.runs):
        server = ModelServer(root).start()
        try:
            server.set_fault("/fan/model.bin", Fault(rate_bps=rate))
            hive, queen = start_pair(ctx, f"fan{run + 1}", segments=1)
            ctx.quiet()
            sampler = RssSampler(queen.pid, 0.05).start()
            ctx.scope.callback(sampler.stop)
            ctx.log(f"  run {run + 1}: {clients_n} clients on one {size / MIB:.2f} MiB download")
            out = asyncio.run(_fanout_run(ctx, hive.url, queen.url, f"{server.url}/fan/model.bin", sampler))
        finally:
            ctx.scope.close()
            server.stop()
        m_got.runs.append(float(out.got))
        m_live.runs.append(float(out.live))
        for m, samples, q in (
            (m_p50, out.lat_c, 50),
            (m_p99, out.lat_c, 99),
            (m_max, out.lat_c, 100),
            (m_read99, out.lat_read, 99),
            (m_prog, out.prog_c, 99),
        ):
            if (v := percentile(samples, q)) is not None:
                m.runs.append(v)
        if out.lat_a:
            m_a50 = m_a50 or section.measure("terminal event latency p50 (method A, emitted_at)", "ms")
            m_a50.runs.append(percentile(out.lat_a, 50) or 0.0)
            m_a99 = m_a99 or section.measure("terminal event latency p99 (method A, emitted_at)", "ms")
            m_a99.runs.append(percentile(out.lat_a, 99) or 0.0)
        if out.connect_secs is not None:
            m_connect.runs.append(out.connect_secs)
        m_idle.runs.append(out.rss_idle / 1e6)
        m_conn_rss.runs.append(out.rss_connected / 1e6)
        m_peak.runs.append(sampler.peak / 1e6)
        if out.errors:
            section.notes.append(f"run {run + 1}: {len(out.errors)} client errors, e.g. {out.errors[:3]}")
        ctx.log(
            f"  run {run + 1}: {out.got}/{clients_n} got it, {out.live} live; p99 "
            f"{fmt(percentile(out.lat_c, 99), 'ms')} (loop-read {fmt(percentile(out.lat_read, 99), 'ms')}); "
            f"queen RSS {out.rss_connected / 1e6:.0f} MB"
        )
    key = "method A" if m_a99 is not None else "method C"
    p99 = worst(m_a99 if m_a99 is not None else m_p99)
    section.targets = [
        Target(
            f"{clients_n:,} clients held: all got the terminal event (fewest over runs)",
            min(m_got.runs, default=None),
            clients_n,
            ">=",
        ),
        Target(
            f"terminal event p99 < 250 ms across {clients_n:,} clients in every run ({key}; the worst run)",
            p99,
            250,
            "<",
            "ms",
        ),
    ]
    if m_a99 is None:
        section.notes.append(
            "Without an `emitted_at` on events, method C leaves out the hive's own step from tracker to its "
            "socket (the reference client reads the hive directly); that step is the same for 1 or 1,000 "
            "queen clients."
        )
    return section


async def _fanout_run(ctx: Context, hive_url: str, queen_url: str, url: str, sampler: RssSampler) -> _Fanout:
    n = ctx.sizes.fanout_clients
    out = _Fanout(rss_idle=sampler.now())
    (did,) = await post_downloads(queen_url, [url])
    ref = SseClient(hive_stream_url(hive_url, did))
    ref_task = asyncio.create_task(ref.run(stop_after=set(TERMINAL)))
    await asyncio.wait_for(ref.first_event.wait(), 10)
    clients = [SseClient(f"{queen_url}/v1/downloads/{did}/stream") for _ in range(n)]
    gate = asyncio.Semaphore(200)
    t0 = time.monotonic()

    async def one(client: SseClient) -> None:
        async with gate:  # at most 200 handshakes in flight
            task = asyncio.create_task(client.run(stop_after=set(TERMINAL)))
            try:
                await asyncio.wait_for(client.connected.wait(), 30)
            except TimeoutError:
                pass
        await task

    tasks = [asyncio.create_task(one(c)) for c in clients]
    all_in = float("inf")  # wall time once every client is connected
    try:
        await asyncio.wait_for(asyncio.gather(*(c.settled.wait() for c in clients)), ctx.sizes.fanout_secs * 2 + 30)
        out.connect_secs = time.monotonic() - t0
        out.rss_connected = sampler.now()
        all_in = time.time()
    except TimeoutError:
        ctx.log("  not every client connected in time")
    try:
        await asyncio.wait_for(asyncio.gather(*tasks, ref_task), ctx.sizes.fanout_secs * 3 + 60)
    except TimeoutError:
        ctx.log("  some clients never got a terminal event")
    for c in (ref, *clients):
        c.close()
    await asyncio.gather(*tasks, ref_task, return_exceptions=True)
    out.rss_connected = out.rss_connected or sampler.peak
    reference = reference_times(ref.events)
    terminal_ref = next((ev for ev in ref.events if ev.event in TERMINAL), None)
    for c in clients:
        terminal = next((ev for ev in c.events if ev.event in TERMINAL), None)
        if terminal is None or terminal.event != "complete":
            continue
        out.got += 1
        if len(c.events) < 2:
            continue  # the terminal event was this client's snapshot: it connected too late
        out.live += 1
        if terminal_ref is not None and terminal.id == terminal_ref.id:
            out.lat_c.append((terminal.recv - terminal_ref.recv) * 1000)
            out.lat_read.append((terminal.read_at - terminal_ref.recv) * 1000)
        emitted = emitted_at(terminal.json())
        if emitted is not None:
            out.lat_a.append((terminal.recv - emitted) * 1000)
        for ev in c.events[1:-1]:
            r = reference.get((did, ev.id or ""))
            if r is not None and r >= all_in:
                out.prog_c.append((ev.recv - r) * 1000)
    out.errors = [c.error for c in clients if c.error]
    return out
