"""The benchmark harness still runs end to end (tiny sizes) and writes its report.

Not a benchmark: no timing is asserted. The file scenario needs nginx (skipped without it); the
whole-model and fleet scenarios need only the test hub and huggingface_hub (a dev dependency).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import Kept, Report, Section, Target
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


def _bench(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--tiny", *args, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _assert_all_stopped(stdout: str) -> None:
    """Every process the harness started (it logs "<name> pid N") is gone."""
    pids = [int(p) for p in re.findall(r"\bpid (\d+)\b", stdout)]
    assert pids, stdout
    assert [p for p in pids if _alive(p)] == []


def _row(text: str, label: str) -> list[str]:
    """The cells of the first table row whose first cell is `label`."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r}:\n{text}")


def test_bench_quick_run_writes_the_report(tmp_path: Path) -> None:
    if find_tool("nginx") is None:
        pytest.skip("nginx is not installed: the benchmark harness needs it (apt-get install nginx-light)")
    out = tmp_path / "BENCHMARKS.md"
    result = _bench(out, "--only", "download")
    text = out.read_text()
    for heading in ("# Benchmarks", "## Machine", "## Tools", "## Targets", "## 1. One 8 MiB file from local nginx"):
        assert f"\n{heading}\n" in f"\n{text}", f"missing heading {heading!r}:\n{text}"
    for heading in ("### Method", "### Commands", "### Results", "### Ratios"):
        assert heading in text
    assert "hive (POST -> complete)" in text
    assert re.search(r"\| hive <= 1\.05x curl's wall time \| .* \| \*\*(met|missed|not measured)\*\* \|", text)
    _assert_all_stopped(result.stdout)


def test_bench_whole_model_scenarios_measure_the_hive_and_the_baselines(tmp_path: Path) -> None:
    pytest.importorskip("huggingface_hub")
    out = tmp_path / "BENCHMARKS.md"
    result = _bench(out, "--only", "model,model-memory")
    text = out.read_text()
    for heading in (
        "## 6. A whole model from the test hub: 4 x 1 MiB shards and 8 files",
        "## 7. Hive memory: a model of 16 files",
    ):
        assert f"\n{heading}\n" in text, f"missing heading {heading!r}:\n{text}"
    # measured, so every pull finished and its snapshot passed the harness's file-by-file sha256 check
    for label in (
        "hive (POST -> complete)",
        "hive peak RSS during the pull",
        "snapshot_download (the call alone)",
        "hive peak RSS",
        "hive wall time (POST -> complete)",
    ):
        assert _row(text, label)[1] != "—", f"{label} not measured:\n{text}"
    assert "failed: " not in text, text
    for target in (r"hive <= 0\.5x snapshot_download's wall time", r"hive peak RSS < 150 MB \(16 files\)"):
        assert re.search(rf"\| {target} \| [^|—]+ \| \*\*(met|missed)\*\* \|", text), text
    _assert_all_stopped(result.stdout)


def test_bench_models_scenario_times_get_v2_models_on_a_generated_cache(tmp_path: Path) -> None:
    pytest.importorskip("huggingface_hub")
    out = tmp_path / "BENCHMARKS.md"
    result = _bench(out, "--only", "models")
    text = out.read_text()
    assert "\n## 11a. The model store: GET /v2/models on a cache of 20 models\n" in text, text
    for label in ("hive start, reading the cache (to /healthz)", "GET /v2/models p50", "GET /v2/models p99"):
        assert _row(text, label)[1] != "—", f"{label} not measured:\n{text}"
    # the hive listed every model with the cache's size, and scan_cache_dir agreed on each model's
    assert "scan_cache_dir on the same cache: 20 models, the same sizes, 0 warnings." in text, text
    assert re.search(
        r"\| GET /v2/models p99 < 100 ms \(20 models, 200 files\) \| [^|—]+ \| \*\*(met|missed)\*\* \|", text
    )
    _assert_all_stopped(result.stdout)


def _all_measured(text: str, *labels: str) -> None:
    """Every row of `labels` has a figure, and no run failed."""
    for label in labels:
        assert _row(text, label)[1] != "—", f"{label} not measured:\n{text}"
    assert "failed: " not in text, text


def _ratio(text: str, label: str) -> float:
    return float(_row(text, label)[1].removesuffix("x"))


def test_bench_fleet_scenario_pulls_onto_every_hive_three_ways(tmp_path: Path) -> None:
    pytest.importorskip("huggingface_hub")
    out = tmp_path / "BENCHMARKS.md"
    result = _bench(out, "--only", "fleet")
    text = out.read_text()
    heading = "## 8. Fleet pull: 3 hives, a 4 MiB model of 4 shards and 8 files, the hub's uplink capped at 10 MB/s"
    assert f"\n{heading}\n" in text, text
    # measured, so every pull finished and every hive's snapshot passed the file-by-file sha256 check
    for label in (
        "fleet pull, 3 hives (POST -> the pull's complete)",
        "3 independent pulls (POSTs -> the last complete; one run)",
        "one hive alone (POST -> complete)",
    ):
        assert _row(text, label)[1] != "—", f"{label} not measured:\n{text}"
    assert "failed: " not in text, text
    # what went through the hub's uplink: the model once per hive pulling on its own (not a timing)
    assert 0.99 <= _ratio(text, "one hive alone: hub bytes / model size") < 1.05, text
    assert 2.97 <= _ratio(text, "3 independent pulls: hub bytes / model size") < 3.1, text
    assert _ratio(text, "fleet pull: hub bytes / model size") < 2.0, text
    for target in (r"fleet: hub bytes <= 1\.05x the model", r"fleet wall time <= 1\.1x one hive's alone"):
        assert re.search(rf"\| {target} \| [^|—]+ \| \*\*(met|missed)\*\* \|", text), text
    _assert_all_stopped(result.stdout)


def test_bench_peer_scenario_copies_from_a_peer_the_hub_and_nginx(tmp_path: Path) -> None:
    if find_tool("nginx") is None or find_tool("curl") is None:
        pytest.skip("the peer scenario needs nginx and curl")
    out = tmp_path / "BENCHMARKS.md"
    result = _bench(out, "--only", "peer")
    text = out.read_text()
    assert "\n## 9. Peers at line rate: a 10 MiB model from a peer, the hub, nginx\n" in text, text
    # measured, so both copies finished and their snapshots passed the file-by-file sha256 check
    _all_measured(
        text,
        "hub copy: from the test hub's CDN (POST -> complete)",
        "peer copy: from a hive that holds it (POST with sources -> complete)",
        "curl of the hive's GET /v2/blobs/{digest} to /dev/null",
        "curl of nginx serving the same file to /dev/null",
    )
    assert "1000 hives fan-out 2" in text  # the simulation's table
    for target in (r"peer copy <= 1\.0x the hub copy's time", r"1,000-hive simulation <= 2\.0x one hive alone"):
        assert re.search(rf"- {target}: measured [^ ]+ → \*\*(met|missed)\*\*", text), text
    _assert_all_stopped(result.stdout)


def test_bench_fleet_models_scenario_times_the_fleet_inventory(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    result = _bench(out, "--only", "fleet-models")
    text = out.read_text()
    assert "\n## 11b. GET /v1/models over 2 hives of 10 models each\n" in text, text
    # measured, so the queen showed every generated model on every hive before the timing
    assert _row(text, "GET /v1/models p99")[1] != "—", text
    assert re.search(r"\| GET /v1/models p99 < 100 ms \(2 x 10\), every run \| [^|—]+ \| \*\*(met|missed)\*\* \|", text)
    _assert_all_stopped(result.stdout)


def _report(*sections: Section, kept: Kept | None = None) -> Report:
    report = Report("python -m bench.run", "today", 1, False, "abc1234", {}, {}, {}, kept=kept)
    report.sections = list(sections)
    return report


def _section(title: str, value: float) -> Section:
    section = Section(title.split(".")[0], title, method=[f"measured {value}"])
    section.measure("a figure", "s").runs.append(value)
    section.targets = [Target("a figure < 1 s", value, 1.0, "<", "s")]
    return section


def test_an_update_replaces_the_sections_run_and_keeps_the_others_as_written() -> None:
    old = _report(_section("1. One file", 0.5), _section("3b. Fan-out", 0.7), _section("8. Fleet", 2.0)).render()
    new = _report(_section("8. Fleet", 0.9), _section("2. Segments", 3.0), kept=Kept.parse(old)).render()
    headings = [line for line in new.splitlines() if line.startswith("## ") and line[3].isdigit()]
    assert headings == ["## 1. One file", "## 2. Segments", "## 3b. Fan-out", "## 8. Fleet"]
    rows = [line.split(" | ")[0] for line in new.splitlines() if line.startswith("| ") and "a figure < 1 s" in line]
    assert rows == ["| 1. One file", "| 2. Segments", "| 3b. Fan-out", "| 8. Fleet"]
    assert "measured 0.9" in new and "measured 2.0" not in new and "measured 0.7" in new
    kept_before, kept_after = (text.split("## 3b. Fan-out")[1].split("\n## ")[0] for text in (old, new))
    assert kept_after == kept_before  # a kept section is its old text, byte for byte
    assert "- code measured: abc1234\n- updated: sections 8, 2 by `python -m bench.run`" in new
    assert Kept.parse(new).sections.keys() == {(1, ""), (2, ""), (3, "b"), (8, "")}


def test_bench_bandwidth_scenario_measures_a_download_beside_a_competing_flow(tmp_path: Path) -> None:
    if find_tool("curl") is None:
        pytest.skip("curl is not installed: the bandwidth scenario's competing flow is curl --limit-rate")
    out = tmp_path / "BENCHMARKS.md"
    _bench(out, "--only", "bandwidth")
    text = out.read_text()
    assert "\n## 10. Bandwidth that yields: a competing flow on lo\n" in text, text
    # measured, so the download completed beside the flow and lo was sampled throughout (not a timing)
    for label in ("lo's total while competing / budget", "the download's wall time (114 MiB)"):
        assert _row(text, label)[1] != "—", f"{label} not measured:\n{text}"
    assert "failed: " not in text, text
    assert re.search(r"\| the download completes, every run \| 1 \| \*\*met\*\* \|", text), text
