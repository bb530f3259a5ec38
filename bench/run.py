"""`python -m bench.run [--quick] [--only NAME[,NAME]] [--runs N] [--out FILE] [--update]`: benchmarks ->
BENCHMARKS.md. With `--update` the scenarios run replace their own sections of the report at `--out`;
the rest of it stays as it was written (and its header says which sections were updated when)."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from bench.context import Context, Sizes, Skip
from bench.procs import CpuShare, QuietGate
from bench.report import Kept, Report, Section, Target
from bench.scenarios import (
    bandwidth,
    download,
    fanout,
    fleet,
    fleet_models,
    memory,
    model,
    model_memory,
    models,
    peer,
    segmented,
    soak,
    sse,
)
from bench.system import REPO, Tools, git_revision, machine_info, raise_nofile, tool_versions

Scenario = Callable[[Context], Section]

SCENARIOS: dict[str, tuple[str, Scenario, list[str], list[str]]] = {
    # name: (title if it cannot run, function, external tools it needs, its targets)
    "download": (
        "1. One big file from local nginx",
        download.download,
        ["nginx", "curl", "aria2c"],
        ["hive <= 1.05x curl's wall time", "hive <= 0.55x hf_hub_download's wall time"],
    ),
    "segmented": (
        "2. Segmented download, 20 MiB/s per connection",
        segmented.segmented,
        ["nginx", "aria2c"],
        ["hive (default segments) >= 4x one connection", "hive (default segments) no slower than aria2c -x8"],
    ),
    "sse": (
        "3a. SSE latency through the queen, 100 downloads",
        sse.sse_latency,
        [],
        ["per-download p99 < 50 ms at 100 downloads, every run", "aggregated p99 < 75 ms at 100 downloads, every run"],
    ),
    "fanout": (
        "3b. SSE fan-out: one download, 1,000 queen clients",
        fanout.fanout,
        [],
        [
            "1,000 clients held: all got the terminal event",
            "terminal event p99 < 250 ms across 1,000 clients, every run",
        ],
    ),
    "memory": (
        "4. Hive memory: four concurrent big downloads",
        memory.memory,
        ["nginx"],
        ["hive peak RSS < 150 MB"],
    ),
    "soak": (
        "5. Soak: thousands of downloads relayed through the queen",
        soak.soak,
        [],
        ["queen and hive RSS at the end <= 1.10x the middle", "open files and tasks at the end <= middle + 5"],
    ),
    "model": (
        "6. A whole model from the test hub",
        model.model,
        [],
        ["hive <= 0.5x snapshot_download's wall time"],
    ),
    "model-memory": (
        "7. Hive memory: a model of many files",
        model_memory.many_files,
        [],
        ["hive peak RSS < 150 MB"],
    ),
    "fleet": (
        "8. Fleet pull: one model onto 8 hives, the hub's uplink capped",
        fleet.fleet,
        [],
        ["fleet: hub bytes <= 1.05x the model", "fleet wall time <= 1.1x one hive's alone"],
    ),
    "peer": (
        "9. Peers at line rate: a model from a peer, the hub, nginx",
        peer.peer,
        ["nginx", "curl"],
        [
            "peer copy <= 1.0x the hub copy's time",
            "blob serving >= 0.9x nginx's throughput",
            "1,000-hive simulation <= 2.0x one hive alone",
        ],
    ),
    "bandwidth": (
        "10. Bandwidth that yields: a competing flow on lo",
        bandwidth.bandwidth,
        ["curl"],
        ["hive settles within 2 s of a competing flow", "lo's total within the budget ±10% while competing"],
    ),
    "models": (
        "11a. The model store: GET /v2/models on a cache of 1,000 models",
        models.models,
        [],
        ["GET /v2/models p99 < 100 ms (1,000 models, 20,000 files)"],
    ),
    "fleet-models": (
        "11b. GET /v1/models over 8 hives of 100 models each",
        fleet_models.fleet_models,
        [],
        ["GET /v1/models p99 < 100 ms (8 x 100), every run"],
    ),
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one run and smaller files")
    parser.add_argument("--tiny", action="store_true", help="tiny files and few clients: checks the harness runs")
    parser.add_argument("--only", help=f"comma-separated scenarios: {', '.join(SCENARIOS)}")
    parser.add_argument("--runs", type=int, help="runs per figure (default 3, --quick 1)")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md", help="report path")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a fresh temp dir, removed)")
    parser.add_argument(
        "--update", action="store_true", help="replace only the sections of the scenarios run in the report at --out"
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in (args.only or ",".join(SCENARIOS)).split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    args.names = names
    args.runs = args.runs or (1 if args.quick or args.tiny else 3)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through every finally: our processes get stopped


def _reap_children() -> list[str]:
    """Stop any child process still alive (by PID); there should be none."""
    try:
        import psutil
    except ImportError:
        return []

    leftovers = []
    for child in psutil.Process().children(recursive=True):
        try:
            leftovers.append(f"{child.pid} {child.name()}")
            child.kill()
        except psutil.Error:
            pass
    return leftovers


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    soft, _ = raise_nofile(16384)
    needed = sorted({tool for name in args.names for tool in SCENARIOS[name][2]})
    tools = Tools.ensure(needed)
    for reason in tools.missing.values():
        print(f"[bench] {reason}", flush=True)

    from services.hive.settings import HiveSettings

    fields = HiveSettings.model_fields
    settings = {
        f"HIVE_{k.upper()}": str(fields[k].default)
        for k in (
            "segments",
            "split_below_bps",
            "thread_above_bps",
            "direct_io",
            "max_concurrent",
            "progress_interval",
            "write_batch_bytes",
        )
        if k in fields
    }
    machine = machine_info()
    command = "python -m bench.run" + (f" {shlex.join(argv)}" if argv else f" {shlex.join(sys.argv[1:])}").rstrip()
    report = Report(
        command=command.strip(),
        started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        runs=args.runs,
        quick=args.quick,
        revision=git_revision(),
        machine=machine,
        versions=tool_versions(tools),
        settings=settings,
        scenarios=list(SCENARIOS),
        kept=Kept.parse(args.out.read_text()) if args.update and args.out.exists() else None,
    )
    report.machine["open files limit (soft)"] = str(soft)
    if tools.installed:
        report.preamble.append(f"Installed for this run with apt-get: {', '.join(tools.installed)}.\n")

    whole_run = CpuShare().start()
    with ExitStack() as stack:
        workdir = args.workdir
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rbee-bench-")))
        workdir.mkdir(parents=True, exist_ok=True)
        machine["filesystem of the work dir"] = _filesystem(workdir)
        ctx = Context(
            workdir, tools, args.runs, args.quick, stack, Sizes.for_mode(args.quick, args.tiny), tiny=args.tiny
        )
        try:
            for name in args.names:
                report.sections.append(_run_scenario(ctx, name))
        except KeyboardInterrupt:
            print("[bench] interrupted; stopping everything", flush=True)
            raise
        finally:
            ctx.scope.close()
            stack.close()
            leftovers = _reap_children()
            if leftovers:
                print(f"[bench] killed leftover child processes: {leftovers}", flush=True)
            report.total_seconds = time.monotonic() - started
            report.preamble += _shared_machine_note(whole_run.stop())
            args.out.write_text(report.render())
            print(f"[bench] wrote {args.out}", flush=True)
    return 0


def _run_scenario(ctx: Context, name: str) -> Section:
    title, function, _, planned = SCENARIOS[name]
    ctx.log(f"=== {name}")
    t0 = time.monotonic()
    ctx.gate = QuietGate(max_wait=0.0 if ctx.tiny else 4.0)
    cpu = CpuShare().start()
    try:
        section = function(ctx)
    except Skip as exc:
        section = Section(name, title, skipped=str(exc))
        ctx.log(f"{name} not measured: {exc}")
    except Exception as exc:
        traceback.print_exc()
        section = Section(name, title, skipped=f"the scenario failed: {type(exc).__name__}: {exc}")
    finally:
        ctx.scope.close()
        ctx.scope = ExitStack()
    if section.skipped and not section.targets:
        section.targets = [Target(text, None, 0, "<", why_unmeasured=section.skipped) for text in planned]
    section.seconds = time.monotonic() - t0
    if not section.skipped or section.measurements:
        section.notes += [line for line in (cpu.stop().summary(), ctx.gate.summary()) if line]
    return section


def _shared_machine_note(cpu: CpuShare) -> list[str]:
    if cpu.wall <= 0 or cpu.machine <= 0:
        return []
    others = max(0.0, cpu.machine - cpu.ours) / cpu.wall
    if others < 0.1:
        return []
    return [
        f"**The machine was not idle:** over the whole run, processes outside the benchmark used {others:.2f} of "
        f"its {os.cpu_count()} cores on average (the benchmark's own processes {cpu.ours / cpu.wall:.2f}). Each "
        "scenario's notes give its share; figures taken on a busy machine are slower and noisier than on an "
        "idle one, and every run is listed so the spread shows.",
        "",
    ]


def _filesystem(path: Path) -> str:
    try:
        import psutil
    except ImportError:
        return "unknown (psutil not installed)"
    try:
        best = max(
            (p for p in psutil.disk_partitions(all=True) if str(path.resolve()).startswith(p.mountpoint)),
            key=lambda p: len(p.mountpoint),
        )
        return f"{best.fstype} on {best.device} (mounted at {best.mountpoint})"
    except (ValueError, OSError):
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
