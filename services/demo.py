"""`make demo`: the whole system on loopback, offline.

Starts a local model server with a generated file, a queen and two hives (each a subprocess on a free
port; the hives register themselves with the queen), downloads the file through the queen with
`rbee-keeper` so its progress bar shows in this terminal, checks the file's sha256 against the generated
one, prints a summary and stops every process it started, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx

from services.keeper.render import human_bytes
from services.modelserver.server import parse_size

__all__ = ["main"]

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
ORG_REPO = "rbee-demo/demo-model"
FILE = "model.bin"
MODEL_REF = f"hf:{ORG_REPO}::file={FILE}"
HIVES = ("hive-a", "hive-b")
START_TIMEOUT = 30.0  # each service up and healthy; hives registered with the queen
STOP_TIMEOUT = 10.0  # SIGTERM, then SIGKILL
# The generated file stays in the work dir between runs; generating 256 MB takes a few seconds.
GENERATE_TIMEOUT = 180.0


class DemoError(Exception):
    """A step failed; the message says which and where to look."""


class _Terminated(Exception):
    """SIGTERM: unwind through the `finally` that stops the children."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def poll(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


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
class Demo:
    workdir: Path
    size: int
    rate: int
    environ: Mapping[str, str]
    say: Callable[[str], None]
    children: list[Child] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def child_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        # Settings inherited from the user's shell must not leak into the demo's services (e.g. a shared
        # HIVE_STATE_DB), and a real HF_TOKEN has no business going to the local model server.
        env = {k: v for k, v in self.environ.items() if not k.startswith(("HIVE_", "QUEEN_", "HF_"))}
        return {**env, "PYTHONUNBUFFERED": "1", **extra}

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

    # -- steps

    def start_model_server(self) -> tuple[str, str]:
        rel = f"{ORG_REPO}/{FILE}"
        argv = [sys.executable, "-m", "services.modelserver.server", "--root", str(self.workdir / "hub")]
        argv += ["--port", "0", "--rate-bps", str(self.rate), "--generate", f"{rel}:{self.size}"]
        child = self.spawn("modelserver", argv, self.child_env({}), stdout=subprocess.PIPE)
        line = read_line(child, GENERATE_TIMEOUT)
        try:
            info = json.loads(line)
            return str(info["url"]), str(info["files"][rel])
        except (ValueError, KeyError, TypeError):
            raise DemoError(f"the model server printed {line!r}, not its JSON line\n{tail(child.log)}") from None

    def start_service(self, name: str, module: str, port: int, env: Mapping[str, str]) -> Child:
        argv = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port)]
        return self.spawn(name, argv, self.child_env(env))

    def wait_healthy(self, child: Child, url: str) -> None:
        def healthy() -> bool:
            child.check_alive()
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        poll(healthy, START_TIMEOUT, f"{child.name} at {url}/healthz")

    def wait_registered(self, queen: Child, queen_url: str, hives: list[Child]) -> None:
        def registered() -> bool:
            for child in (queen, *hives):
                child.check_alive()
            try:
                response = httpx.get(f"{queen_url}/v1/hives", headers=self.auth_headers(), timeout=2)
                listed = response.json().get("hives", []) if response.status_code == 200 else []
            except (httpx.HTTPError, ValueError):
                return False
            healthy = {h.get("hive_id") for h in listed if h.get("healthy")}
            return healthy >= set(HIVES)

        try:
            poll(registered, START_TIMEOUT, "both hives to register with the queen and report healthy")
        except DemoError as exc:
            raise DemoError(f"{exc}\n{tail(queen.log)}") from None

    def auth_headers(self) -> dict[str, str]:
        token = self.environ.get("RBEE_API_TOKEN")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def run_keeper(self, queen_url: str) -> float:
        script = Path(sys.executable).with_name("rbee-keeper")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "services.keeper.cli"]
        # --cancel-on-interrupt: on Ctrl-C the demo tears everything down anyway.
        args = ["--queen", queen_url, "download", MODEL_REF, "--cancel-on-interrupt"]
        self.say(f"$ rbee-keeper {' '.join(args)}")
        env = {k: v for k, v in self.environ.items() if k != "RBEE_QUEEN_URL"}
        started = time.monotonic()
        # Inherits this terminal so the bar shows. Its own process group: a Ctrl-C reaches the demo only,
        # which passes it on exactly once (a second one would cut the keeper's cancel short).
        proc = subprocess.Popen([*command, *args], cwd=REPO, env=env, process_group=0)
        self.children.append(Child("rbee-keeper", proc, self.logs / "rbee-keeper.log"))
        budget = self.size / self.rate + 60.0
        try:
            code = proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            raise DemoError(f"rbee-keeper did not finish within {budget:.0f}s") from None
        except KeyboardInterrupt:
            with _suppress_interrupts():
                _signal(proc, signal.SIGINT)
                try:
                    proc.wait(timeout=5)  # let it cancel the download and say so
                except subprocess.TimeoutExpired:
                    pass
            raise
        if code != 0:
            raise DemoError(f"rbee-keeper exited with code {code}")
        return time.monotonic() - started

    def verify(self, queen_url: str, expected_sha: str) -> dict[str, Any]:
        try:
            response = httpx.get(f"{queen_url}/v1/downloads", headers=self.auth_headers(), timeout=5)
            listed = response.raise_for_status().json().get("downloads", [])
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise DemoError(f"could not list the queen's downloads: {exc}") from None
        states = [s for s in listed if s.get("model_ref") == MODEL_REF]
        done = [s for s in states if s.get("status") == "complete"]
        if not done:
            raise DemoError(f"the queen lists no complete download of {MODEL_REF}: {states}")
        state: dict[str, Any] = done[0]
        path = Path(str(state.get("path")))
        if not path.is_file():
            raise DemoError(f"the hive reports {path}, which is not a file")
        actual = sha256_of(path)
        if actual != expected_sha or state.get("sha256") != expected_sha:
            raise DemoError(
                f"sha256 mismatch: generated {expected_sha}, file {actual}, hive reported {state.get('sha256')}"
            )
        self.say(f"sha256 verified: {actual} matches the generated file")
        return state

    def run(self) -> int:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        for hive in HIVES:  # a fresh download every run: no finished file waiting on disk
            shutil.rmtree(self.workdir / hive, ignore_errors=True)

        self.say(f"generating {human_bytes(self.size)} model file and starting the model server ...")
        hub_url, expected_sha = self.start_model_server()
        ports = {name: free_port() for name in ("queen", *HIVES)}
        queen_url = f"http://127.0.0.1:{ports['queen']}"
        queen = self.start_service("queen", "services.queen.main", ports["queen"], {"QUEEN_HEALTH_INTERVAL": "0.5"})
        hives = [
            self.start_service(
                name,
                "services.hive.main",
                ports[name],
                {
                    "HIVE_ID": name,
                    "HIVE_MODELS_DIR": str(self.workdir / name),
                    "HIVE_QUEEN_URL": queen_url,
                    "HF_ENDPOINT": hub_url,
                    # The model server caps each response at --rate; one connection makes that the real rate.
                    "HIVE_SEGMENTS": "1",
                },
            )
            for name in HIVES
        ]
        self.wait_healthy(queen, queen_url)
        for name, child in zip(HIVES, hives, strict=True):
            self.wait_healthy(child, f"http://127.0.0.1:{ports[name]}")
        self.wait_registered(queen, queen_url, hives)
        self.say(f"queen {queen_url} with {', '.join(HIVES)} healthy; model server {hub_url}")

        took = self.run_keeper(queen_url)
        state = self.verify(queen_url, expected_sha)
        self.say(
            f"summary: {human_bytes(self.size)} downloaded on {state.get('hive_id')} through the queen in {took:.1f}s "
            f"({human_bytes(self.size / took)}/s), saved to {state.get('path')}"
        )
        return 0

    def shutdown(self) -> None:
        """SIGTERM every child still running, SIGKILL what is left after STOP_TIMEOUT; reap them all."""
        running = [c for c in self.children if c.alive()]
        for child in running:
            _signal(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in running:
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} (pid {child.proc.pid}) ignored SIGTERM; killing it")
                _signal(child.proc, signal.SIGKILL)
                child.proc.wait(timeout=STOP_TIMEOUT)
        for child in self.children:
            if child.proc.stdout is not None:
                child.proc.stdout.close()
        if running:
            self.say("stopped " + ", ".join(f"{c.name} (pid {c.proc.pid})" for c in running))


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
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
def _suppress_interrupts() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait while a bounded cleanup step runs."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _size(text: str) -> int:
    try:
        value = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def parse_args(argv: list[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size",
        type=_size,
        default=environ.get("RBEE_DEMO_SIZE", "256M"),
        help="generated file size, K/M/G = 1024 multiples (RBEE_DEMO_SIZE, default 256M)",
    )
    parser.add_argument(
        "--rate",
        type=_size,
        default=environ.get("RBEE_DEMO_RATE", "24M"),
        help="model server rate in bytes/s, so the bar is visible (RBEE_DEMO_RATE, default 24M: about 10 s)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(environ.get("RBEE_DEMO_DIR", "demo-run")),
        help="generated file, hive model dirs and logs (RBEE_DEMO_DIR, default ./demo-run)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, os.environ)

    def say(message: str) -> None:
        print(f"[demo] {message}", flush=True)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise _Terminated

    demo = Demo(args.workdir.resolve(), args.size, args.rate, dict(os.environ), say)
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return demo.run()
    except DemoError as exc:
        say(f"FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted; shutting down")
        return 130
    except _Terminated:
        say("terminated; shutting down")
        return 143
    finally:
        with _suppress_interrupts():
            demo.shutdown()
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
