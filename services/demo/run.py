"""`make demo`: the whole system on loopback, offline.

Starts the local test hub (`services/modelserver/hub_cli.py`) with a small multi-file model (two
generated safetensors shards, their index, config.json and tokenizer.json), a queen and two hives
(each a subprocess on a free port; the hives register themselves with the queen), pulls the whole
model through the queen with `rbee-keeper download hf:demo-org/demo-model` so its progress bar shows
in this terminal, checks every file of the hive's snapshot against the hub's sha256, prints a summary
and stops every process it started, also on failure or Ctrl-C.
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
from services.modelserver.files import parse_size
from shared.waiting import free_port, wait_until

__all__ = ["main"]

T = TypeVar("T")

ORG_REPO = "demo-org/demo-model"
MODEL_REF = f"hf:{ORG_REPO}"
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
HIVES = ("hive-a", "hive-b")
START_TIMEOUT = 30.0  # each service up and healthy; hives registered with the queen
GENERATE_TIMEOUT = 120.0  # the hub generates the shards before it answers (about a second for 64 MiB)


def small_files(shard_size: int) -> dict[str, str]:
    """The model's text files, as a real sharded checkpoint has them (the weights are random bytes)."""
    config = {"architectures": ["DemoForCausalLM"], "model_type": "demo", "hidden_size": 256, "num_hidden_layers": 2}
    tokenizer = {"version": "1.0", "model": {"type": "BPE", "vocab": {"<s>": 0, "</s>": 1}, "merges": []}}
    index = {
        "metadata": {"total_size": shard_size * len(SHARDS)},
        "weight_map": {f"layers.{i}.weight": shard for i, shard in enumerate(SHARDS)},
    }
    texts = {"config.json": config, "tokenizer.json": tokenizer, "model.safetensors.index.json": index}
    return {path: json.dumps(body, indent=2) + "\n" for path, body in texts.items()}


@dataclass(frozen=True)
class HubModel:
    """What the test hub printed: where it listens, the commit of the model, and each file's sha256."""

    url: str
    commit: str
    files: dict[str, str]

    @classmethod
    def parse(cls, line: str) -> HubModel:
        info = json.loads(line)
        return cls(str(info["url"]), str(info["commit"]), {str(p): str(h) for p, h in info["files"].items()})


class _Terminated(Exception):
    """SIGTERM: unwind through the `finally` that stops the children."""


def cache_of(snapshot: Path) -> Path:
    """The Hugging Face cache (`{models}/hub`) that holds this snapshot directory of the demo's model."""
    if snapshot.parent.name != "snapshots" or snapshot.parent.parent.name != f"models--{ORG_REPO.replace('/', '--')}":
        raise DemoError(f"the hive reports {snapshot}, which is not a snapshot of {ORG_REPO} in a Hugging Face cache")
    return snapshot.parent.parent.parent


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

    def start_hub(self) -> HubModel:
        argv = [sys.executable, "-m", "services.modelserver.hub_cli", "--root", str(self.workdir / "hub")]
        argv += ["--port", "0", "--repo", ORG_REPO, "--file", *(f"{shard}:{self.size}" for shard in SHARDS)]
        for path, text in small_files(self.size).items():
            argv += ["--text", f"{path}={text}"]
        child = self.procs.spawn("hub", argv, self.child_env({}), stdout=subprocess.PIPE)
        line = read_line(child, GENERATE_TIMEOUT)
        try:
            return HubModel.parse(line)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise DemoError(f"the hub printed {line!r}, not its JSON line\n{tail(child.log)}") from None

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

    def queen_json(self, queen_url: str, path: str) -> dict[str, Any]:
        try:
            response = httpx.get(f"{queen_url}{path}", headers=self.auth_headers(), timeout=5)
            body = response.raise_for_status().json()
        except (httpx.HTTPError, ValueError) as exc:
            raise DemoError(f"GET {path} on the queen failed: {exc}") from None
        if not isinstance(body, dict):
            raise DemoError(f"GET {path} on the queen answered {body!r}, not a JSON object")
        return body

    def verify(self, queen_url: str, hub: HubModel) -> dict[str, Any]:
        """The model's download is complete, of the hub's commit, and every file in its snapshot is the hub's."""
        listed = self.queen_json(queen_url, "/v1/downloads").get("downloads", [])
        done = [s for s in listed if s.get("model_ref") == MODEL_REF and s.get("status") == "complete"]
        if len(done) != 1:
            raise DemoError(f"the queen lists {len(done)} complete downloads of {MODEL_REF}, not one: {listed}")
        state = self.queen_json(queen_url, f"/v1/downloads/{done[0]['download_id']}")
        if state.get("commit") != hub.commit:
            raise DemoError(f"the hive pulled commit {state.get('commit')}, the hub's main is {hub.commit}")
        files = state.get("files") or []
        if not files or any(f.get("status") != "complete" for f in files):
            raise DemoError(f"the queen's state of the model does not list every file complete: {files}")
        snapshot = Path(str(state.get("path")))
        cache = cache_of(snapshot)
        for name, expected in hub.files.items():
            file = snapshot / name
            actual = sha256_of(file) if file.is_file() else "missing"
            if actual != expected:
                raise DemoError(f"{file}: sha256 {actual}, the hub's is {expected}")
        self.say(f"sha256 verified: all {len(hub.files)} files of {snapshot} match the hub's")
        self.check_with_huggingface_hub(cache, snapshot)
        return state

    def check_with_huggingface_hub(self, cache: Path, snapshot: Path) -> None:
        """huggingface_hub, where installed, finds the model in the hive's cache without the network."""
        try:
            from huggingface_hub import snapshot_download
        except ImportError:
            return
        found = snapshot_download(ORG_REPO, cache_dir=cache, local_files_only=True)
        if Path(found).resolve() != snapshot.resolve():
            raise DemoError(f"huggingface_hub found {found} in the hive's cache, not {snapshot}")
        self.say("huggingface_hub.snapshot_download(local_files_only=True) finds the same snapshot")

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
        state = self.verify(queen_url, hub)
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
        default=environ.get("RBEE_DEMO_SIZE", "32M"),
        help="size of each of the model's two shards, K/M/G = 1024 multiples (RBEE_DEMO_SIZE, default 32M)",
    )
    parser.add_argument(
        "--rate",
        type=_size,
        default=environ.get("RBEE_DEMO_RATE", "8M"),
        help="each hive's bandwidth limit in bytes/s, so the bar is visible (RBEE_DEMO_RATE, default 8M: about 8 s)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(environ.get("RBEE_DEMO_DIR", "demo-run")),
        help="generated files, hive model dirs and logs (RBEE_DEMO_DIR, default ./demo-run)",
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
