"""The demo's child processes: each in its own session with its log in a file, stopped by PID on the way out."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "STOP_TIMEOUT",
    "Child",
    "DemoError",
    "Supervisor",
    "read_line",
    "send_signal",
    "suppress_interrupts",
    "tail",
]

REPO = Path(__file__).resolve().parents[2]
STOP_TIMEOUT = 10.0  # SIGTERM, then SIGKILL


class DemoError(Exception):
    """A step failed; the message says which and where to look."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise DemoError(f"{self.name} exited with code {self.proc.returncode}\n{tail(self.log)}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return f"--- last lines of {path} ---\n" + "\n".join(text)


@dataclass
class Supervisor:
    """Every process the demo started, so that all of them are stopped, also on failure or Ctrl-C."""

    logs: Path
    say: Callable[[str], None]
    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], env: Mapping[str, str], stdout: int | None = None) -> Child:
        log = self.logs / f"{name}.log"
        with log.open("wb") as log_file:
            # Own session: a Ctrl-C in the terminal reaches the demo (which stops everything), not the services.
            proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log_file if stdout is None else stdout,
                stderr=log_file,
                start_new_session=True,
            )
        child = Child(name, proc, log)
        self.children.append(child)
        self.say(f"started {name} (pid {proc.pid}), log {log}")
        return child

    def shutdown(self) -> None:
        """SIGTERM every child still running, SIGKILL what is left after STOP_TIMEOUT; reap them all."""
        running = [c for c in self.children if c.alive()]
        for child in running:
            send_signal(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in running:
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} (pid {child.proc.pid}) ignored SIGTERM; killing it")
                send_signal(child.proc, signal.SIGKILL)
                child.proc.wait(timeout=STOP_TIMEOUT)
        for child in self.children:
            if child.proc.stdout is not None:
                child.proc.stdout.close()
        if running:
            self.say("stopped " + ", ".join(f"{c.name} (pid {c.proc.pid})" for c in running))


def send_signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass


def read_line(child: Child, timeout: float) -> str:
    """The child's first stdout line, within `timeout`, failing early if it exits."""
    assert child.proc.stdout is not None
    fd = child.proc.stdout.fileno()
    buffer = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DemoError(f"{child.name} printed nothing within {timeout:g}s\n{tail(child.log)}")
            if selector.select(timeout=min(left, 0.5)):
                chunk = os.read(fd, 65536)
                if not chunk:
                    child.proc.wait(timeout=STOP_TIMEOUT)
                    child.check_alive()
                buffer += chunk
    return buffer.split(b"\n", 1)[0].decode(errors="replace")


@contextmanager
def suppress_interrupts() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait while a bounded cleanup step runs."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
