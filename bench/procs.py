"""Processes the benchmarks start (hive, queen, nginx), stopped by PID; RSS sampling; bounded waits."""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.system import REPO
from services.service_start import service_argv, wait_healthy
from shared.waiting import free_port, wait_until

__all__ = [
    "CpuShare",
    "Proc",
    "QuietGate",
    "RssSampler",
    "Service",
    "free_port",
    "others_cpu",
    "port_open",
    "rss_reader",
    "run_checked",
    "wait_until",
]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_checked(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to its end; a non-zero exit raises with the tail of its output."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {result.returncode}: {(result.stderr or result.stdout).strip()[-500:]}")
    return result


class Proc:
    """A child process with its output in a log file; `stop()` signals its PID only, then SIGKILLs it."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} not started"
        return self.popen.pid

    def start(self) -> Proc:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO
            )
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise RuntimeError(f"{self.name} exited with status {self.popen.returncode}:\n{tail}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 10.0) -> None:
        popen = self.popen
        if popen is None or popen.poll() is not None:
            return
        try:
            popen.send_signal(sig)
            popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout=10)
        except ProcessLookupError:
            pass


class Service(Proc):
    """`python -m services.<x>.main --host 127.0.0.1 --port P`, healthy once GET /healthz answers 200.

    It inherits this process's environment with `env` on top; a variable set to None in `env` is removed.
    """

    def __init__(
        self, name: str, module: str, env: Mapping[str, str | None], log_path: Path, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        merged = {**os.environ, **env}
        inherited = {k: v for k, v in merged.items() if v is not None}
        super().__init__(name, service_argv(module, self.port), inherited, log_path)

    def start(self, timeout: float = 30.0) -> Service:
        super().start()
        try:
            wait_healthy(self.url, self.check_alive, timeout, f"{self.name} to answer /healthz")
        except BaseException:
            self.stop()
            raise
        return self


def rss_reader(pid: int) -> Callable[[], int]:
    """A function returning `pid`'s resident set size in bytes (psutil if installed, else /proc)."""
    try:
        import psutil
    except ImportError:
        page = os.sysconf("SC_PAGE_SIZE")
        statm = Path(f"/proc/{pid}/statm")
        return lambda: int(statm.read_text().split()[1]) * page
    proc = psutil.Process(pid)
    return lambda: int(proc.memory_info().rss)


class RssSampler:
    """Samples a process's RSS every `interval` seconds on a thread; `peak` and `samples` in bytes."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self._read = rss_reader(pid)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"rss-{pid}", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), self._read()))
            except Exception:  # the process is gone (psutil.Error or OSError)
                return
            self._stop.wait(self.interval)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> RssSampler:
        self._stop.set()
        self._thread.join(timeout=5)
        return self

    def now(self) -> int:
        return self._read()

    @property
    def peak(self) -> int:
        return max((rss for _, rss in self.samples), default=0)

    def __enter__(self) -> RssSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class CpuShare:
    """CPU used on the whole machine vs by this process and its children between start() and stop().

    The machine is not necessarily ours alone: what others used while a scenario ran goes in the report.
    """

    def __init__(self) -> None:
        self.wall = 0.0
        self.machine = 0.0  # busy CPU-seconds, all processes
        self.ours = 0.0  # this process, its live children and the children it has reaped
        self._t0: tuple[float, float, float] | None = None

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        try:
            import psutil
        except ImportError:
            return time.monotonic(), 0.0, 0.0
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
        own = os.times()
        ours = own.user + own.system + own.children_user + own.children_system
        for child in psutil.Process().children(recursive=True):
            try:
                c = child.cpu_times()
                ours += c.user + c.system
            except psutil.Error:
                pass
        return time.monotonic(), busy, ours

    def start(self) -> CpuShare:
        self._t0 = self._sample()
        return self

    def stop(self) -> CpuShare:
        assert self._t0 is not None
        t1 = self._sample()
        self.wall, self.machine, self.ours = (b - a for a, b in zip(self._t0, t1, strict=True))
        return self

    def summary(self) -> str:
        cores = os.cpu_count() or 1
        if self.wall <= 0 or self.machine <= 0:
            return ""
        others = max(0.0, self.machine - self.ours)
        load1 = os.getloadavg()[0]
        return (
            f"CPU while this scenario ran ({self.wall:.0f} s, {cores} cores): the benchmark's processes used "
            f"{self.ours / self.wall:.2f} cores, other processes on the machine {others / self.wall:.2f} cores; "
            f"1-minute load average at the end {load1:.1f}."
        )


def others_cpu(window: float = 0.5) -> float | None:
    """Cores used over `window` seconds by processes outside this benchmark (None without psutil)."""
    share = CpuShare().start()
    if share._t0 is None or share._t0[1] == 0.0:
        return None
    time.sleep(window)
    share.stop()
    return max(0.0, share.machine - share.ours) / share.wall


@dataclass
class QuietGate:
    """Before a measurement, wait (bounded) until the rest of the machine is nearly idle.

    The machine may be shared; a measurement taken while others burn CPU says little. Each wait lasts
    at most `max_wait` seconds; what was waited, and how often the machine never went quiet, is kept.
    """

    max_wait: float = 4.0
    threshold: float = 0.3  # cores used by other processes
    waited: float = 0.0
    gates: int = 0
    noisy: int = 0  # measurements started although others still used >= threshold
    others: list[float] = field(default_factory=list)  # the last reading before each measurement

    def wait(self) -> None:
        if self.max_wait <= 0:
            return
        self.gates += 1
        t0 = time.monotonic()
        while True:
            load = others_cpu()
            if load is None:
                return
            if load < self.threshold or time.monotonic() - t0 >= self.max_wait:
                break
        self.others.append(load)
        self.waited += time.monotonic() - t0
        if load >= self.threshold:
            self.noisy += 1

    def summary(self) -> str:
        if not self.gates or not self.others:
            return ""
        return (
            f"Quiet gate: before each of {self.gates} measurements the harness waited up to {self.max_wait:g} s "
            f"for other processes to use < {self.threshold:g} cores (0.5 s window): {self.waited:.0f} s waited in "
            f"all; {self.noisy} measurement(s) started while others still used more (median reading "
            f"{statistics.median(self.others):.2f} cores, max {max(self.others):.2f})."
        )
