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
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx

from services.demo_procs import (
    REPO,
    Child,
    DemoError,
    Supervisor,
    read_line,
    send_signal,
    suppress_interrupts,
    tail,
)
from services.keeper.format import human_bytes
from services.modelserver.server import parse_size
from shared.waiting import free_port, wait_until

__all__ = ["main"]

T = TypeVar("T")

ORG_REPO = "rbee-demo/demo-model"
FILE = "model.bin"
MODEL_REF = f"hf:{ORG_REPO}::file={FILE}"
HIVES = ("hive-a", "hive-b")
START_TIMEOUT = 30.0  # each service up and healthy; hives registered with the queen
# The generated file stays in the work dir between runs; generating 256 MB takes a few seconds.
GENERATE_TIMEOUT = 180.0


class _Terminated(Exception):
    """SIGTERM: unwind through the `finally` that stops the children."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Demo:
    workdir: Path
    size: int
    rate: int
    environ: Mapping[str, str]
    say: Callable[[str], None]
    procs: Supervisor = field(init=False)

    def __post_init__(self) -> None:
        self.procs = Supervisor(self.logs, self.say)

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def child_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        # Settings inherited from the user's shell must not leak into the demo's services (e.g. a shared
        # HIVE_STATE_DB), and a real HF_TOKEN has no business going to the local model server.
        env = {k: v for k, v in self.environ.items() if not k.startswith(("HIVE_", "QUEEN_", "HF_"))}
        return {**env, "PYTHONUNBUFFERED": "1", **extra}

    # -- steps

    def start_model_server(self) -> tuple[str, str]:
        rel = f"{ORG_REPO}/{FILE}"
        argv = [sys.executable, "-m", "services.modelserver.server", "--root", str(self.workdir / "hub")]
        argv += ["--port", "0", "--rate-bps", str(self.rate), "--generate", f"{rel}:{self.size}"]
        child = self.procs.spawn("modelserver", argv, self.child_env({}), stdout=subprocess.PIPE)
        line = read_line(child, GENERATE_TIMEOUT)
        try:
            info = json.loads(line)
            return str(info["url"]), str(info["files"][rel])
        except (ValueError, KeyError, TypeError):
            raise DemoError(f"the model server printed {line!r}, not its JSON line\n{tail(child.log)}") from None

    def start_service(self, name: str, module: str, port: int, env: Mapping[str, str]) -> Child:
        argv = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port)]
        return self.procs.spawn(name, argv, self.child_env(env))

    def wait_healthy(self, child: Child, url: str) -> None:
        def healthy() -> bool:
            child.check_alive()
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, START_TIMEOUT, f"{child.name} at {url}/healthz", 0.1)

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
            wait_until(registered, START_TIMEOUT, "both hives to register with the queen and report healthy", 0.1)
        except TimeoutError as exc:
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
        self.procs.children.append(Child("rbee-keeper", proc, self.logs / "rbee-keeper.log"))
        budget = self.size / self.rate + 60.0
        try:
            code = proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            raise DemoError(f"rbee-keeper did not finish within {budget:.0f}s") from None
        except KeyboardInterrupt:
            with suppress_interrupts():
                send_signal(proc, signal.SIGINT)
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
    except (DemoError, TimeoutError) as exc:
        say(f"FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted; shutting down")
        return 130
    except _Terminated:
        say("terminated; shutting down")
        return 143
    finally:
        with suppress_interrupts():
            demo.procs.shutdown()
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
