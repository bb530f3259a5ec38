"""`make up` runs whichever Compose is installed: v2's `docker compose`, else v1's `docker-compose`.

Fake `docker` / `docker-compose` programs, alone on PATH, stand for each machine; `make -n`
prints what `make up` would run, so no engine is needed.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support import REPO

MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def fake(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def make_up(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": str(bin_dir)}
    env.pop("COMPOSE", None)
    assert MAKE is not None
    return subprocess.run([MAKE, "-n", "--no-print-directory", "up"], cwd=REPO, env=env, capture_output=True, text=True)


def test_compose_v2_is_used_where_its_plugin_is_installed(tmp_path: Path) -> None:
    fake(tmp_path, "docker", 'if [ "$1 $2" = "compose version" ]; then echo v2.27; exit 0; fi; exit 0')
    fake(tmp_path, "docker-compose", "exit 0")
    result = make_up(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "docker compose up --build" in result.stdout


def test_compose_v1_is_used_where_docker_has_no_compose_plugin(tmp_path: Path) -> None:
    fake(tmp_path, "docker", "echo \"docker: 'compose' is not a docker command.\" >&2; exit 1")
    fake(tmp_path, "docker-compose", "exit 0")
    result = make_up(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "docker-compose up --build" in result.stdout and "docker compose up" not in result.stdout


def test_without_any_compose_make_up_says_what_is_missing(tmp_path: Path) -> None:
    fake(tmp_path, "docker", "exit 1")
    env = {**os.environ, "PATH": str(tmp_path)}
    env.pop("COMPOSE", None)
    assert MAKE is not None
    result = subprocess.run([MAKE, "--no-print-directory", "up"], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "neither 'docker compose' (Compose v2) nor 'docker-compose' (v1) is installed" in result.stderr
