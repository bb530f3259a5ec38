"""The fleet the end-to-end fleet tests run: real `rbee-hive` processes, a real `rbee-queen` process and
the test hub on loopback, with one multi-file model (the `fleet` fixture is in conftest.py)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from huggingface_hub import snapshot_download

from services.modelserver.hub import Hub
from services.modelserver.hub_repo import Generated
from tests.support import ServiceProcess, free_port, wait_until

__all__ = ["AUTH", "FILES", "HIVE_ENV", "QUEEN_ENV", "REPO", "SHARD", "TOKEN", "WRITE_BATCH", "Fleet", "MiB"]

MiB = 1024 * 1024
REPO = "org/fleet"
TOKEN = "fleet-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FILES: dict[str, bytes | Generated] = {
    "config.json": b'{"hidden": 64, "layers": 3}\n',
    "tokenizer.json": b'{"vocab": ["a", "b", "c"]}\n',
    "model-00001-of-00003.safetensors": Generated(3 * MiB + 1, seed=21),
    "model-00002-of-00003.safetensors": Generated(2 * MiB + 3, seed=22),
    "model-00003-of-00003.safetensors": Generated(2 * MiB + 5, seed=23),
}
SHARD = "model-00001-of-00003.safetensors"
WRITE_BATCH = 64 * 1024
HIVE_ENV = {
    "HIVE_PROGRESS_INTERVAL": "0.05",
    "HIVE_KEEPALIVE_SECS": "1",
    "HIVE_STALL_TIMEOUT": "5",
    "HIVE_CONNECT_TIMEOUT": "2",
    "HIVE_RETRY_BASE_DELAY": "0.05",
    "HIVE_RETRY_MAX_DELAY": "0.2",
    "HIVE_MAX_ATTEMPTS": "4",
    "HIVE_WRITE_BATCH_BYTES": str(WRITE_BATCH),
}
QUEEN_ENV = {
    "QUEEN_HEALTH_INTERVAL": "0.5",
    "QUEEN_FANOUT_TIMEOUT": "3",
    "QUEEN_PLAN_TIMEOUT": "15",
    "QUEEN_UNREACHABLE_BUDGET": "3",
    "QUEEN_RELAY_BACKOFF_INITIAL": "0.05",
    "QUEEN_RELAY_BACKOFF_MAX": "0.3",
    "QUEEN_KEEPALIVE_SECS": "1",
}


@dataclass
class Fleet:
    tmp: Path
    hub: Hub
    stack: contextlib.ExitStack
    queen: ServiceProcess | None = None
    hives: dict[str, ServiceProcess] = field(default_factory=dict)
    models: dict[str, Path] = field(default_factory=dict)

    def start_queen(self, port: int | None = None) -> ServiceProcess:
        env = {"RBEE_API_TOKEN": TOKEN, **QUEEN_ENV}
        queen = ServiceProcess("services.queen.main", port or free_port(), env, self.tmp / "queen.log").start()
        self.stack.callback(queen.stop)
        self.queen = queen
        return queen

    def add_hive(self, hive_id: str, register: bool = True, models: Path | None = None, **env: str) -> ServiceProcess:
        self.models[hive_id] = models = models or self.tmp / hive_id
        hive_env = {
            **HIVE_ENV,
            "HIVE_ID": hive_id,
            "HIVE_MODELS_DIR": str(models),
            "HF_ENDPOINT": self.hub.url,
            "RBEE_API_TOKEN": TOKEN,
            **env,
        }
        hive = ServiceProcess("services.hive.main", free_port(), hive_env, self.tmp / f"{hive_id}.log").start()
        self.stack.callback(hive.stop)
        self.hives[hive_id] = hive
        if register:
            self.register(hive_id, hive.url)
        return hive

    def register(self, hive_id: str, url: str) -> None:
        resp = self.api().post("/v1/hives", json={"hive_id": hive_id, "url": url})
        assert resp.status_code in (200, 201), resp.text

    def api(self) -> httpx.Client:
        assert self.queen is not None
        return httpx.Client(base_url=self.queen.url, headers=AUTH, timeout=30)

    def pull(self, hive_ids: list[str] | str, **body: Any) -> httpx.Response:
        with self.api() as client:
            return client.post("/v1/pulls", json={"model_ref": f"hf:{REPO}", "hive_ids": hive_ids, **body})

    def started(self, hive_ids: list[str] | str) -> dict[str, Any]:
        resp = self.pull(hive_ids)
        assert resp.status_code == 202, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def started_held(self, hive_ids: list[str], bandwidth_limit: int) -> dict[str, Any]:
        """New hives `hive_ids`, each held to `bandwidth_limit` bytes/s so transfers stay in flight, and a pull
        started on them."""
        for hive_id in hive_ids:
            self.add_hive(hive_id, HIVE_BANDWIDTH_LIMIT=str(bandwidth_limit))
        return self.started(hive_ids)

    def state(self, pull_id: str) -> dict[str, Any]:
        with self.api() as client:
            resp = client.get(f"/v1/pulls/{pull_id}")
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def ended(self, pull_id: str, timeout: float = 90) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            state = self.state(pull_id)
            return state if state["status"] != "running" else None

        return wait_until(done, timeout, interval=0.2, what=f"pull {pull_id} to end")

    def hive_downloads(self, hive_id: str) -> list[dict[str, Any]]:
        resp = httpx.get(f"{self.hives[hive_id].url}/v2/downloads", headers=AUTH, timeout=10)
        downloads: list[dict[str, Any]] = resp.json()["downloads"]
        return downloads

    def files(self, hive_id: str, download_id: str) -> dict[str, dict[str, Any]]:
        resp = httpx.get(f"{self.hives[hive_id].url}/v2/downloads/{download_id}", headers=AUTH, timeout=10)
        return {f["path"]: f for f in resp.json()["files"]}

    def lfs_bytes(self) -> int:
        commit = self.hub.repo(REPO).resolve("main")
        assert commit is not None
        return sum(f.size for f in commit.files.values() if f.lfs)

    def assert_snapshot(self, hive_id: str, commit: str) -> None:
        """huggingface_hub finds the whole model in the hive's cache, offline, byte for byte."""
        path = Path(
            snapshot_download(REPO, revision=commit, cache_dir=self.models[hive_id] / "hub", local_files_only=True)
        )
        for name in FILES:
            assert (path / name).read_bytes() == self.hub.file(REPO, name).content(), (hive_id, name)
