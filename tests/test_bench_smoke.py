"""The benchmark harness still runs end to end (tiny sizes, one scenario) and writes its report.

Not a benchmark: no timing is asserted. Needs nginx (the harness's file server); skipped without it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.system import REPO, find_tool


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[-1].startswith("Z"))


def test_bench_quick_run_writes_the_report(tmp_path: Path) -> None:
    if find_tool("nginx") is None:
        pytest.skip("nginx is not installed: the benchmark harness needs it (apt-get install nginx-light)")
    out = tmp_path / "BENCHMARKS.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--tiny", "--only", "download", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = out.read_text()
    for heading in ("# Benchmarks", "## Machine", "## Tools", "## Targets", "## 1. One 8 MiB file from local nginx"):
        assert f"\n{heading}\n" in f"\n{text}", f"missing heading {heading!r}:\n{text}"
    for heading in ("### Method", "### Commands", "### Results", "### Ratios"):
        assert heading in text
    assert "hive (POST -> complete)" in text
    assert re.search(r"\| hive <= 1\.05x curl's wall time \| .* \| \*\*(met|missed|not measured)\*\* \|", text)
    # every process the harness started (it logs "<name> pid N") is gone
    pids = [int(p) for p in re.findall(r"\bpid (\d+)\b", result.stdout)]
    assert pids, result.stdout
    assert [p for p in pids if _alive(p)] == []
