"""Running rbee-keeper from tests: in-process with captured streams, or as a process of its own (for a
terminal, or Ctrl-C)."""

from __future__ import annotations

import io
import os
import pty
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from services.keeper.cli import run
from tests.support import REPO, read_until, sigint_as_default

__all__ = ["Result", "interrupt_keeper", "keeper", "keeper_on_a_terminal", "running_keeper", "spawn_keeper"]


@dataclass
class Result:
    code: int
    out: str
    err: str


def keeper(*argv: str, queen: str, env: Mapping[str, str] | None = None) -> Result:
    """The CLI in-process with captured (non-terminal) stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = run(["--queen", queen, *argv], out, err, {**(env or {})})
    return Result(code, out.getvalue(), err.getvalue())


def spawn_keeper(*argv: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("RBEE_API_TOKEN", "RBEE_QUEEN_URL", "NO_COLOR")}
    return subprocess.Popen(
        [sys.executable, "-m", "services.keeper.cli", *argv],
        cwd=REPO,
        env={**env, **kwargs.pop("env", {})},
        preexec_fn=sigint_as_default,
        **kwargs,
    )


@contextmanager
def running_keeper(*argv: str) -> Iterator[subprocess.Popen[bytes]]:
    """The keeper as a process with stdout and stderr piped; killed if it is still running at the end."""
    proc = spawn_keeper(*argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def interrupt_keeper(*argv: str, ready: Callable[[bytes], bool], timeout: float = 30) -> Result:
    """The keeper as a process, sent SIGINT (Ctrl-C) once its stdout so far makes `ready` true: its exit
    code, that stdout, and all it wrote to stderr."""
    with running_keeper(*argv) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        shown = read_until(proc.stdout.fileno(), ready, timeout).decode()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=15)
        return Result(code, shown, proc.stderr.read().decode())


def keeper_on_a_terminal(*argv: str, done: bytes, columns: int, timeout: float = 30) -> Result:
    """The keeper as a process whose stdout and stderr are a terminal (a pty) `columns` wide, read until
    `done` shows up: its exit code and everything it showed (escape codes and all) as `out`."""
    master, slave = pty.openpty()
    env = {"TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": "40"}
    proc = spawn_keeper(*argv, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    try:
        output = read_until(master, lambda data: done in data, timeout).decode(errors="replace")
        return Result(proc.wait(timeout=10), output, "")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
