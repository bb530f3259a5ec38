"""huggingface_hub's clients as the benchmarks run them against the test hub: `snapshot_download` in its own
interpreter (bench/hf_fetch.py) and the `hf` command, with an environment that points at the hub."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.context import Context
from bench.hub_models import check_snapshot
from bench.procs import run_checked
from services.modelserver.hub import Hub
from services.modelserver.published import Published

__all__ = [
    "HF_PREFIXES",
    "MAX_WORKERS",
    "env_text",
    "environ",
    "hf_cli",
    "hub_env",
    "run_snapshot_download",
    "snapshot_command",
]


MAX_WORKERS = 8  # snapshot_download's and `hf download`'s default, given explicitly

HF_PREFIXES = ("HF_", "HUGGING_FACE_")  # a token or cache of whoever runs the bench must not leak in


def hub_env(hub: Hub, home: Path) -> dict[str, str | None]:
    """For the hive and huggingface_hub alike: the test hub, a fresh HF_HOME, no token of the caller's."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith(HF_PREFIXES)}
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HOME=str(home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_UPDATE_CHECK="1",  # the CLI would ask pypi.org for a newer release first
        HF_HUB_DISABLE_XET="1",  # the test hub names Xet hashes but does not speak Xet's protocol (CAS)
    )
    return env


def environ(env: Mapping[str, str | None]) -> dict[str, str]:
    merged = {**os.environ, **env}
    return {k: v for k, v in merged.items() if v is not None}


def env_text(env: Mapping[str, str | None]) -> str:
    return " ".join(f"{k}={v}" for k, v in env.items() if v is not None and k != "HF_HOME") + " HF_HOME=<fresh dir>"


def run_snapshot_download(
    cache: Path, model: Published, env: Mapping[str, str | None], timeout: float
) -> tuple[float, float]:
    """`snapshot_download` in a fresh interpreter into a fresh `cache`, checked and removed after:
    (seconds of the call, seconds of the call and a `sync`)."""
    argv = [sys.executable, "-m", "bench.hf_fetch", "--repo", model.repo, "--revision", "main"]
    argv += ["--max-workers", str(MAX_WORKERS), "--cache-dir", str(cache)]
    Context.remove(cache)
    try:
        result = run_checked(argv, timeout, env=environ(env))
        info: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        check_snapshot(Path(info["path"]), model)
    finally:
        Context.remove(cache)
    return float(info["seconds"]), float(info["seconds_with_sync"])


def snapshot_command(model: Published, env: Mapping[str, str | None]) -> str:
    return (
        f"{env_text(env)} python -m bench.hf_fetch --repo {model.repo} --revision main "
        f"--max-workers {MAX_WORKERS} --cache-dir <fresh dir>   # snapshot_download(...), then os.sync()"
    )


def hf_cli() -> tuple[str | None, str, list[str]]:
    """The `hf` command huggingface_hub installs: (path, why not, extra flags), checked against its --help."""
    beside = Path(sys.executable).parent / "hf"
    path = str(beside) if beside.exists() else shutil.which("hf")
    if path is None:
        return None, "the `hf` command is not installed (huggingface_hub >= 0.34 provides it)", []
    try:
        help_text = subprocess.run([path, "download", "--help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"`hf download --help` failed: {exc}", []
    lacking = [flag for flag in ("--revision", "--cache-dir", "--max-workers") if flag not in help_text]
    if lacking:
        return None, f"`hf download` of this huggingface_hub has no {', '.join(lacking)}", []
    return path, "", ["--quiet"] if "--quiet" in help_text else []
