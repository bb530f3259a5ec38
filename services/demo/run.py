"""The demo's steps in order: start the hub, a queen and two hives, pull the model with the keeper,
verify it (`checks.py`) and print a summary. Every child is started through `procs.Supervisor`."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from services.demo.checks import cache_of, verify
from services.demo.model import MODEL_REF, ORG_REPO, SHARDS, small_files
from services.demo.procs import REPO, Child, DemoError, Supervisor, read_line, send_signal, suppress_interrupts, tail
from services.keeper.format import human_bytes
from services.modelserver.published import Published
from services.service_start import service_argv, wait_healthy
from shared.waiting import free_port, wait_until

__all__ = ["Demo"]

HIVES = ("hive-a", "hive-b")
START_TIMEOUT = 30.0  # each service up and healthy; hives registered with the queen
GENERATE_TIMEOUT = 120.0  # the hub generates the shards before it answers (about a second for 64 MiB)


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

    def start_hub(self) -> Published:
        argv = [sys.executable, "-m", "services.modelserver.hub_cli", "--root", str(self.workdir / "hub")]
        argv += ["--port", "0", "--repo", ORG_REPO, "--file", *(f"{shard}:{self.size}" for shard in SHARDS)]
        for path, text in small_files(self.size).items():
            argv += ["--text", f"{path}={text}"]
        child = self.procs.spawn("hub", argv, self.child_env({}), stdout=subprocess.PIPE)
        line = read_line(child, GENERATE_TIMEOUT)
        try:
            return Published.parse(line)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise DemoError(f"the hub printed {line!r}, not its JSON line\n{tail(child.log)}") from None

    def start_service(self, name: str, module: str, port: int, env: Mapping[str, str]) -> Child:
        return self.procs.spawn(name, service_argv(module, port), self.child_env(env))

    def wait_healthy(self, child: Child, url: str) -> None:
        wait_healthy(url, child.check_alive, START_TIMEOUT, f"{child.name} at {url}/healthz")

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
        budget = self.size * len(SHARDS) / self.rate + 60.0
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

    def run(self) -> int:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        for hive in HIVES:  # a fresh download every run: no finished file waiting on disk
            shutil.rmtree(self.workdir / hive, ignore_errors=True)

        self.say(f"generating {ORG_REPO} ({len(SHARDS)} shards of {human_bytes(self.size)}) and starting the hub ...")
        hub = self.start_hub()
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
                    "HF_ENDPOINT": hub.url,
                    # the hub serves at full speed: the hive's own cap makes the bar visible
                    "HIVE_BANDWIDTH_LIMIT": str(self.rate),
                },
            )
            for name in HIVES
        ]
        self.wait_healthy(queen, queen_url)
        for name, child in zip(HIVES, hives, strict=True):
            self.wait_healthy(child, f"http://127.0.0.1:{ports[name]}")
        self.wait_registered(queen, queen_url, hives)
        self.say(f"queen {queen_url} with {', '.join(HIVES)} healthy; hub {hub.url}")

        took = self.run_keeper(queen_url)
        state = verify(queen_url, self.auth_headers(), hub, self.say)
        total = int(state.get("total_bytes") or 0)
        snapshot = Path(str(state.get("path")))
        self.say(
            f"summary: {ORG_REPO}, {state.get('files_total')} files, {human_bytes(total)} downloaded on "
            f"{state.get('hive_id')} through the queen in {took:.1f}s ({human_bytes(total / took)}/s), "
            f"snapshot {snapshot}"
        )
        self.say(
            f"load it offline: HF_HOME={cache_of(snapshot).parent} HF_HUB_OFFLINE=1 python -c "
            f"\"from huggingface_hub import snapshot_download; print(snapshot_download('{ORG_REPO}'))\""
        )
        return 0
