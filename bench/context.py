"""What every scenario shares: the work dir, the tools, one nginx, one test hub, generated files, started
services, and the loop that times trials."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse

from bench.nginx import Nginx
from bench.procs import QuietGate, Service, run_checked
from bench.report import Measurement, Section
from bench.system import Tools
from services.modelserver.hub import Hub
from services.modelserver.server import generate_file
from shared.wire.hive import hive_stream_url

__all__ = [
    "TERMINAL",
    "Context",
    "Sizes",
    "Skip",
    "Trial",
    "check_size",
    "hive_fetch",
    "hive_fetch_checked",
    "rounds",
    "size_text",
    "timed_command",
]

MIB = 1024 * 1024
TERMINAL = frozenset({"complete", "error", "cancelled"})
Trial = Callable[[], float]  # one timed attempt: its seconds


def size_text(n: int) -> str:
    if n < MIB:
        return f"{n / 1024:.0f} KiB"
    return f"{n / MIB:.0f} MiB" if n < 1024 * MIB else f"{n / (1024 * MIB):.0f} GiB"


def check_size(path: Path, size: int) -> None:
    """A downloaded file has `size` bytes on disk."""
    got = path.stat().st_size if path.exists() else -1
    if got != size:
        raise RuntimeError(f"{path.name}: {got} bytes on disk, expected {size}")


class Skip(Exception):
    """A scenario (or one baseline) cannot run here; the message says why."""


@dataclass(frozen=True)
class Sizes:
    big: int  # scenario 1 and the memory scenario
    segmented: int
    sse_downloads: int
    sse_rate: int  # bytes/s per SSE download
    sse_secs: float  # how long each SSE download lasts
    fanout_clients: int
    fanout_secs: float
    soak_downloads: int
    model_shard: int  # the whole-model scenario: four shards of this size
    many_files: int  # the many-files memory scenario: a model of this many files (8 small, the rest shards
    many_file_size: int  # of this size to twice it)
    fleet_hives: int = 8  # the fleet scenario: this many hives pull a model of four shards of
    fleet_shard: int = 256 * MIB  # this size
    fleet_uplink_bps: int = 50_000_000  # through the test hub's uplink, capped at this (all connections)
    store_repos: int = 1000  # the model store scenario: a cache of this many models
    store_files: int = 20_000  # and this many files in all
    store_requests: int = 300  # GET /v2/models timed

    @classmethod
    def for_mode(cls, quick: bool, tiny: bool = False) -> Sizes:
        if tiny:  # the smoke test: seconds, not figures
            return cls(
                8 * MIB, 4 * MIB, 10, 200 * 1024, 1.0, 50, 2.0, 100, MIB, 16, 64 * 1024, 3, MIB, 10_000_000, 20, 200, 20
            )
        if quick:
            return cls(64 * MIB, 32 * MIB, 100, 200 * 1024, 4.0, 1000, 8.0, 1000, 32 * MIB, 100, 2 * MIB, 8, 32 * MIB)
        return cls(1024 * MIB, 256 * MIB, 100, 200 * 1024, 10.0, 1000, 15.0, 5000, 256 * MIB, 100, 2 * MIB)


@dataclass
class Context:
    workdir: Path
    tools: Tools
    runs: int
    quick: bool
    stack: ExitStack  # lives for the whole run (nginx)
    sizes: Sizes
    tiny: bool = False
    scope: ExitStack = field(default_factory=ExitStack)  # one scenario's processes; run.py closes it
    gate: QuietGate = field(default_factory=QuietGate)  # one scenario's; run.py replaces it
    _nginx: Nginx | None = None
    _hub: Hub | None = None
    _data: dict[str, tuple[Path, str]] = field(default_factory=dict)
    _services: int = 0

    @property
    def www(self) -> Path:
        return self.workdir / "www"

    @property
    def logs(self) -> Path:
        path = self.workdir / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def nginx(self) -> Nginx:
        if self._nginx is None:
            binary = self.tools.get("nginx")
            if binary is None:
                raise Skip(self.tools.missing.get("nginx", "nginx is not installed"))
            self.www.mkdir(parents=True, exist_ok=True)
            nginx = Nginx(binary, self.workdir / "nginx", self.www, rate_limited={"/limited/": "20m"})
            self.stack.callback(nginx.stop)
            self._nginx = nginx.start()
            self.log(f"nginx pid {nginx.proc.pid if nginx.proc else '?'} on {nginx.url}")
        return self._nginx

    def hub(self) -> Hub:
        """The test hub (services/modelserver/hub.py) and its CDN, on this process's threads, for the whole run."""
        if self._hub is None:
            hub = Hub(self.workdir / "hub-store")
            self.stack.callback(hub.stop)
            self._hub = hub.start()
            self.log(f"test hub on {hub.url}, its CDN on {hub.cdn.url}")
        return self._hub

    def data_file(self, name: str, size: int) -> tuple[Path, str]:
        """`www/data/<name>` with `size` deterministic bytes, and its sha256 (generated once per run)."""
        if name not in self._data:
            path = self.www / "data" / name
            self.log(f"generating {name} ({size / MIB:.0f} MiB)")
            self._data[name] = (path, generate_file(path, size, seed=size))
        return self._data[name]

    def link(self, rel: str, target: Path) -> str:
        """Serve `target` also at `www/<rel>` (a symlink); returns the URL path."""
        path = self.www / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        path.symlink_to(target)
        return f"/{rel}"

    def service(self, name: str, module: str, env: Mapping[str, str | None], timeout: float = 30.0) -> Service:
        """Start a hive or queen subprocess; it is stopped (by PID) when the scenario ends. A variable set to
        None in `env` is removed from the environment it inherits."""
        return self.start_all([self.prepare(name, module, env)], timeout)[0]

    def prepare(self, name: str, module: str, env: Mapping[str, str | None]) -> Service:
        """A service not started yet (its port and url are chosen), stopped when the scenario ends."""
        self._services += 1
        svc = Service(name, module, env, self.logs / f"{self._services:02d}-{name}.log")
        self.scope.callback(svc.stop)
        return svc

    def start_all(self, services: Sequence[Service], timeout: float = 60.0) -> list[Service]:
        """Start prepared services at once, their start-ups overlapping; each is healthy on return."""
        with ThreadPoolExecutor(max_workers=max(1, len(services))) as pool:
            for svc in pool.map(lambda svc: svc.start(timeout), services):
                self.log(f"{svc.name} pid {svc.pid} on {svc.url}")
        return list(services)

    def hive(self, name: str, env: Mapping[str, str | None] | None = None, **settings: Any) -> Service:
        """A hive with its own models dir; `settings` become HIVE_* variables, `env` is added as it is."""
        models = self.workdir / "models" / f"{self._services + 1:02d}-{name}"
        hive_env: dict[str, str | None] = {
            "HIVE_ID": name,
            "HIVE_MODELS_DIR": str(models),
            **{f"HIVE_{k.upper()}": str(v) for k, v in settings.items()},
            **(env or {}),
        }
        return self.service(name, "services.hive.main", hive_env)

    @staticmethod
    def settle() -> None:
        """Write back dirty pages so one measurement's writeback does not land in the next one."""
        os.sync()

    def quiet(self) -> None:
        """Right before a measurement: settle the disk, then wait (bounded) for the machine to be quiet."""
        self.settle()
        self.gate.wait()

    @staticmethod
    def remove(*paths: Path | str | None) -> None:
        for p in paths:
            if p is None:
                continue
            path = Path(p)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
                Path(f"{path}.part").unlink(missing_ok=True)


def rounds(ctx: Context, section: Section, trials: list[tuple[Measurement, Trial]], runs: int | None = None) -> None:
    """Every trial once per run (`ctx.runs`, unless given), the order rotated each run; a failed trial is
    noted, not fatal."""
    for run in range(ctx.runs if runs is None else runs):
        k = run % len(trials)
        for measurement, trial in trials[k:] + trials[:k]:
            ctx.quiet()
            try:
                seconds = trial()
            except Exception as exc:
                section.notes.append(f"run {run + 1}: {measurement.label} failed: {type(exc).__name__}: {exc}")
                ctx.log(f"  {measurement.label}: FAILED {exc}")
                continue
            finally:
                ctx.settle()
            measurement.runs.append(seconds)
            ctx.log(f"  run {run + 1} {measurement.label}: {seconds:.3f} s")


def hive_fetch(hive_url: str, model_ref: str, timeout: float) -> tuple[float, dict[str, Any]]:
    """POST a download to a hive and follow its SSE stream: (seconds from POST to `complete`, its payload)."""
    with httpx.Client(timeout=httpx.Timeout(10.0, read=60.0)) as client:
        t0 = time.perf_counter()
        resp = client.post(f"{hive_url}/v2/downloads", json={"model_ref": model_ref})
        if resp.status_code not in (200, 202):
            raise RuntimeError(f"POST /v2/downloads {model_ref} -> {resp.status_code}: {resp.text[:300]}")
        state = resp.json()
        if state["status"] == "complete":
            raise RuntimeError(f"{model_ref} was already on disk; the harness must delete it between runs")
        with connect_sse(client, "GET", hive_stream_url(hive_url, state["download_id"])) as source:
            for sse in source.iter_sse():
                if sse.event in TERMINAL:
                    seconds = time.perf_counter() - t0
                    payload = sse.json()
                    if sse.event != "complete":
                        raise RuntimeError(f"hive download ended with {sse.event}: {payload}")
                    return seconds, payload
                if time.perf_counter() - t0 > timeout:
                    break
    raise TimeoutError(f"hive download of {model_ref} took longer than {timeout:g}s")


def hive_fetch_checked(ctx: Context, hive_url: str, url: str, sha: str, size: int, timeout: float) -> float:
    """`hive_fetch` of one file, then its sha256 (the hive's) and size on disk checked and the file removed:
    the seconds from POST to `complete`."""
    seconds, payload = hive_fetch(hive_url, url, timeout)
    final = Path(payload["path"])
    try:
        if payload.get("sha256") != sha:
            raise RuntimeError(f"hive sha256 {payload.get('sha256')} != {sha}")
        check_size(final, size)
    finally:
        ctx.remove(final)
    return seconds


def timed_command(ctx: Context, argv: list[str], target: Path, size: int, timeout: float) -> Trial:
    """A trial that runs a downloader (aria2c) to `target`: its seconds, once the file's size is checked;
    the file (and aria2c's `.aria2` control file) removed after."""

    def trial() -> float:
        t0 = time.perf_counter()
        try:
            run_checked(argv, timeout)
            seconds = time.perf_counter() - t0
            check_size(target, size)
        finally:
            ctx.remove(target, Path(f"{target}.aria2"))
        return seconds

    return trial
