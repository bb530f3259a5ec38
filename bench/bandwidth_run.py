"""`python -m bench.bandwidth_run --budget B --other C --size S --runs N --workdir DIR --curl PATH`: the
measuring half of the bandwidth scenario (bench/scenarios/bandwidth.py), run in a network namespace
of its own where it can be (`unshare -n`), so the loopback it measures carries only its own flows.

It starts a model server, a hive (`HIVE_NIC=lo HIVE_NIC_BUDGET=B`) and, 3 s into each download,
`curl --limit-rate C` for 8 s; lo's received bytes are sampled every 50 ms. One JSON line per run on
stdout: {"samples": [[t, bytes], ...], "t_other", "t_end", "seconds", "error"}.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.context import hive_fetch
from bench.procs import Proc, Service
from services.hive.bandwidth.nic import read_counters
from services.modelserver.server import ModelServer

__all__ = ["LoSampler", "main"]

ALONE_SECS = 3.0  # the hive alone before the competing flow
OTHER_SECS = 8.0  # the competing flow's length


@dataclass
class LoSampler:
    """lo's received bytes every `interval` s on a thread: [(monotonic time, bytes)]."""

    interval: float = 0.05
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> LoSampler:
        threading.Thread(target=self._run, daemon=True, name="lo-sampler").start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append((time.monotonic(), read_counters("lo")[0]))

    def stop(self) -> None:
        self._stop.set()


def one_run(hive_url: str, url: str, other_argv: list[str], logs: Path) -> dict[str, Any]:
    """One download with the competing flow from ALONE_SECS in, for OTHER_SECS."""
    sampler = LoSampler().start()
    done: dict[str, Any] = {}

    def fetch() -> None:
        try:
            done["seconds"], done["payload"] = hive_fetch(hive_url, url, timeout=180)
        except Exception as exc:  # reported in the result
            done["error"] = f"{type(exc).__name__}: {exc}"

    fetcher = threading.Thread(target=fetch, daemon=True)
    fetcher.start()
    flow = Proc("curl-other", other_argv, {}, logs / "curl-other.log")
    try:
        time.sleep(ALONE_SECS)  # (the part of the run measured before the flow)
        t_other = time.monotonic()
        flow.start()
        time.sleep(OTHER_SECS)  # (the competing flow's length)
    finally:
        flow.stop()
    t_end = time.monotonic()
    fetcher.join(timeout=200)
    sampler.stop()
    path = done.get("payload", {}).get("path")
    if path:
        Path(path).unlink(missing_ok=True)
    return {
        "samples": sampler.samples,
        "t_other": t_other,
        "t_end": t_end,
        "seconds": done.get("seconds"),
        "error": done.get("error") or (None if "seconds" in done else "the download did not end"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bandwidth_run", description=__doc__)
    for name in ("--budget", "--other", "--size", "--runs"):
        parser.add_argument(name, type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--curl", required=True)
    args = parser.parse_args(argv)
    root: Path = args.workdir
    (root / "data").mkdir(parents=True, exist_ok=True)
    for name, size in (("hive.bin", args.size), ("other.bin", args.other * 4 * int(OTHER_SECS))):
        with (root / "data" / name).open("wb") as f:
            f.truncate(size)  # sparse: nothing to generate, and the server sends it with sendfile
    env = {"HIVE_NIC": "lo", "HIVE_NIC_BUDGET": str(args.budget), "HIVE_MODELS_DIR": str(root / "models")}
    with ModelServer(root, etag="mtime") as server:
        hive = Service("hive-bw", "services.hive.main", env, root / "hive.log").start()
        try:
            other_argv = [args.curl, "-s", "-o", "/dev/null", "--limit-rate", str(args.other)]
            for _ in range(args.runs):
                result = one_run(
                    hive.url, f"{server.url}/data/hive.bin", [*other_argv, f"{server.url}/data/other.bin"], root
                )
                print(json.dumps(result), flush=True)
        finally:
            hive.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
