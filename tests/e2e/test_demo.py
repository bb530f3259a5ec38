"""`make demo` in small: the demo pulls its model end to end, verifies every file and leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import REPO, sigint_as_default, wait_until


def pid_alive(pid: int) -> bool:
    """True while /proc/<pid> exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def started_pids(output: str) -> dict[str, int]:
    return {name: int(pid) for name, pid in re.findall(r"started (\S+) \(pid (\d+)\)", output)}


def demo_command(size: str, rate: str) -> list[str]:
    """The demo's command line: `size` of each of the model's two shards, `rate` each hive's bandwidth limit."""
    return [sys.executable, "-m", "services.demo", "--size", size, "--rate", rate]


def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HIVE_", "QUEEN_", "RBEE_", "HF_"))}
    return {**env, "RBEE_DEMO_DIR": str(tmp_path / "demo-run"), "NO_COLOR": "1"}


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="checks processes through /proc")
def test_demo_downloads_verifies_and_cleans_up(tmp_path: Path) -> None:
    result = subprocess.run(
        demo_command("8M", "32M"),
        cwd=REPO,
        env=demo_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=90,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "rbee-keeper --queen http://127.0.0.1:" in output and " download hf:demo-org/demo-model " in output
    assert re.search(r"sha256 verified: all 5 files of \S+/snapshots/[0-9a-f]{40} match the hub's", output), output
    assert "huggingface_hub.snapshot_download(local_files_only=True) finds the same snapshot" in output
    assert re.search(r"summary: demo-org/demo-model, \d+ files, 16\.8 MB downloaded on hive-[ab] ", output), output
    # the keeper in plain mode (a pipe): the model's progress with its files, then its own last line
    assert re.search(r"hive-[ab] demo-org/demo-model downloading .* files \d+/\d+\n", output), output
    assert re.search(r"complete: demo-org/demo-model 16\.8 MB \(\d+ files\)", output), output
    assert "\x1b[" not in output
    pids = started_pids(output)
    assert set(pids) == {"hub", "queen", "hive-a", "hive-b"}, output
    assert not [name for name, pid in pids.items() if pid_alive(pid)]
    logs = tmp_path / "demo-run" / "logs"
    assert {p.name for p in logs.iterdir()} >= {"queen.log", "hive-a.log", "hive-b.log", "hub.log"}


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="checks processes through /proc")
def test_demo_stops_everything_when_interrupted(tmp_path: Path) -> None:
    # slow enough that the download is still running when SIGINT arrives
    proc = subprocess.Popen(
        demo_command("32M", "4M"),
        cwd=REPO,
        env=demo_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=sigint_as_default,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if " downloading " in line:  # the keeper's plain progress line: the download runs
                break
        assert any(" downloading " in line for line in seen), "".join(seen)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(seen) + rest
    assert proc.returncode == 130, output
    assert re.search(r"rbee-keeper: interrupted; cancelled download dl-\S+", output), output  # SIGINT passed on
    assert "interrupted; shutting down" in output
    pids = started_pids(output)
    assert len(pids) == 4
    wait_until(lambda: not any(pid_alive(pid) for pid in pids.values()), 5, what="no demo process left")
