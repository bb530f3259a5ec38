"""Fixtures shared by the suite: a real model server and real hives on loopback."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from services.hive.main import create_app
from services.hive.settings import HiveSettings
from services.modelserver.server import ModelServer
from tests.support import ServerThread, free_port

# Fast, test-sized defaults: short intervals and backoffs, quick stall detection.
FAST_HIVE: dict[str, Any] = {
    "progress_interval": 0.05,
    "keepalive_secs": 1.0,
    "stall_timeout": 1.0,
    "connect_timeout": 2.0,
    "retry_base_delay": 0.01,
    "retry_max_delay": 0.05,
    "max_attempts": 4,
    "split_below_bps": 0,  # segmented tests split at once: whether to split is tested on its own
    "min_free_bytes": 0,  # tests on small disks (tmpfs) fill them; the store's tests set their own
}


@pytest.fixture(autouse=True)
def _no_hub_token(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hive finds a hub token where huggingface_hub looks (HF_TOKEN, HUGGING_FACE_HUB_TOKEN, the
    token file under HF_HOME): no test picks up the one of whoever runs the suite."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))


@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[ModelServer]:
    with ModelServer(tmp_path / "hub") as server:
        yield server


@contextmanager
def hive_factory(tmp_path: Path, endpoint: str, **defaults: Any) -> Iterator[Callable[..., ServerThread]]:
    """Start real hives (in-process uvicorn) with HF_ENDPOINT `endpoint`; keywords override HiveSettings."""
    started: list[ServerThread] = []

    def _make(**overrides: Any) -> ServerThread:
        port = overrides.pop("port", None) or free_port()
        fields = {
            "id": f"hive-{len(started)}",
            "port": port,  # so a hive that registers with a queen advertises where it really listens
            "models_dir": tmp_path / f"models-{len(started)}",
            "hf_endpoint": endpoint,
            **FAST_HIVE,
            **defaults,
            **overrides,
        }
        server = ServerThread(create_app(HiveSettings(**fields)), port).start()
        started.append(server)
        return server

    try:
        yield _make
    finally:
        for server in reversed(started):
            server.stop()


@pytest.fixture
def make_hive(tmp_path: Path, model_server: ModelServer) -> Iterator[Callable[..., ServerThread]]:
    """Start a real hive (in-process uvicorn) on the model server; keyword arguments override HiveSettings."""
    with hive_factory(tmp_path, model_server.url) as make:
        yield make


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs mounted for this test (root only); skipped, saying why, where mounting is not allowed."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if not shutil.which("mount"):
        pytest.skip("no mount(8) here")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if result.returncode != 0:
        print(f"tmpfs tests skipped: mount failed: {result.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
