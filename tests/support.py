"""Real servers on loopback for tests: in-process uvicorn in a thread, or a service subprocess."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from services.service_start import service_argv, wait_healthy
from shared.waiting import free_port, wait_until

__all__ = ["Hold", "ServerThread", "ServiceProcess", "free_port", "held_until", "read_until", "serve", "wait_until"]

REPO = Path(__file__).resolve().parent.parent


class Hold:
    """A hive's downloads held at their first chunk until `release()` (or the end of the `with` block).

    It sets the hive's bandwidth limit to 1 byte/s (`PUT /v2/settings/bandwidth`): each download reads
    one chunk, then waits for tokens; queued ones stay queued. A test that looks at a running or queued
    download holds it so, instead of hoping that a download served at a fixed rate is still going.
    Releasing restores the limit the hive had.
    """

    def __init__(self, hive_url: str, headers: Mapping[str, str] | None = None) -> None:
        self.url = f"{hive_url}/v2/settings/bandwidth"
        self.headers = dict(headers or {})
        self.before = httpx.get(self.url, headers=self.headers, timeout=10).json()["bandwidth_limit"]
        self._put(1)
        self.released = False

    def _put(self, limit: int) -> None:
        resp = httpx.put(self.url, json={"bandwidth_limit": limit}, headers=self.headers, timeout=10)
        assert resp.status_code == 200, resp.text

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._put(self.before)

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def held_until(
    hives: Iterable[ServerThread], ready: Callable[[], bool], then: Callable[[], None] | None = None
) -> Iterator[None]:
    """The hives' downloads held (`Hold`) from now until `ready()` (polled in a thread, within 30 s) while
    the block runs; then `then` runs, if given, and the hives go on (those still running). For a client
    that must see a download under way however long it takes to start: release once it follows."""
    holds = [(hive, Hold(hive.url)) for hive in hives]

    def release() -> None:
        try:
            wait_until(ready, 30, what="the client following")
            if then is not None:
                then()
        finally:
            for hive, hold in holds:
                if hive.thread.is_alive():
                    hold.release()

    releaser = threading.Thread(target=release, daemon=True)
    releaser.start()
    try:
        yield
    finally:
        releaser.join(35)


class ServerThread:
    """A uvicorn server running an ASGI app in its own thread and event loop."""

    def __init__(self, app: Any, port: int | None = None, http: Any = "auto") -> None:
        """`http`: uvicorn's protocol (a service's own, shared.http_protocol, to serve as it does)."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=2,
            http=http,
        )
        self.server = uvicorn.Server(config)  # off the main thread uvicorn installs no signal handlers
        self.thread = threading.Thread(target=self.server.run, daemon=True, name=f"uvicorn-{self.port}")

    def start(self) -> ServerThread:
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), 15, what="server start")
        if not self.server.started:
            raise RuntimeError(f"server on port {self.port} did not start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout=5)


@contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[ServerThread]:
    server = ServerThread(app, port).start()
    try:
        yield server
    finally:
        server.stop()


class ServiceProcess:
    """rbee-hive / rbee-queen as a real subprocess (for kill -9 and restart tests)."""

    def __init__(self, module: str, port: int, env: Mapping[str, str], log_path: Path) -> None:
        self.module = module
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> ServiceProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                service_argv(self.module, self.port), env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
            )
        wait_healthy(self.url, self._check_alive, timeout, f"{self.module} healthy")
        return self

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.module} exited with {self.proc.returncode}: {self.log_path.read_text()}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def read_until(fd: int, done: Callable[[bytes], bool], timeout: float) -> bytes:
    """Bytes from `fd` until `done(everything so far)` or EOF; fails after `timeout` seconds."""
    data = b""
    deadline = time.monotonic() + timeout
    while not done(data):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; got {data!r}"
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # a pty's master reads EIO once the child side is closed
                chunk = b""
            if not chunk:
                break
            data += chunk
    return data


def sigint_as_default() -> None:
    """preexec_fn for a child a test interrupts with SIGINT: a suite started in the background (a
    shell's `&`, nohup) passes SIGINT on as ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
