"""Observability: the hive's /metrics (and the queen's, by name), and the JSON log lines of a real hive process."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.modelserver.server import Fault, ModelServer
from services.queen.main import create_app as create_queen
from services.queen.settings import QueenSettings
from tests.conftest import FAST_HIVE
from tests.support import Hold, ServerThread, ServiceProcess, free_port, serve, wait_until

KiB = 1024
MiB = 1024 * KiB

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of a /metrics page, parsed by prometheus_client (so the format is checked too)."""
    response = httpx.get(f"{url}/metrics", timeout=5)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def post(hive: ServerThread, ref: str) -> str:
    response = httpx.post(f"{hive.url}/v2/downloads", json={"model_ref": ref}, timeout=5)
    assert response.status_code == 202, response.text
    return str(response.json()["download_id"])


def status(hive: ServerThread, download_id: str) -> str:
    return str(httpx.get(f"{hive.url}/v2/downloads/{download_id}", timeout=5).json()["status"])


def test_hive_metrics_count_what_happened(make_hive: Callable[..., ServerThread], model_server: ModelServer) -> None:
    size = 1 * MiB
    model_server.add_file("org/repo/flaky.bin", size)
    model_server.set_fault("/org/repo/resolve/main/flaky.bin", Fault(drop_after=300 * KiB, drop_times=2))
    model_server.add_file("org/repo/slow.bin", 2 * MiB)
    model_server.set_fault("/org/repo/resolve/main/slow.bin", Fault(rate_bps=1 * MiB))
    model_server.add_file("org/repo/q1.bin", 1000, seed=1)  # two files, not one blob fetched once
    model_server.add_file("org/repo/q2.bin", 1000, seed=2)
    hive = make_hive(max_concurrent=1)
    before = scrape(hive.url)
    assert value(before, "rbee_hive_bytes_downloaded_total") == 0 and value(before, "rbee_hive_sse_clients") == 0

    flaky = post(hive, "hf:org/repo::file=flaky.bin")
    wait_until(lambda: status(hive, flaky) == "complete", 10, what="flaky.bin")
    missing = post(hive, "hf:org/repo::file=missing.bin")
    wait_until(lambda: status(hive, missing) == "failed", 10, what="missing.bin")
    after = scrape(hive.url)
    assert value(after, "rbee_hive_downloads", status="complete") == 1
    assert value(after, "rbee_hive_downloads", status="failed") == 1
    assert value(after, "rbee_hive_retries_total") >= 2  # two dropped connections, tried again
    assert value(after, "rbee_hive_resumes_total") >= 2  # ... each from where it broke off
    assert size <= value(after, "rbee_hive_bytes_downloaded_total") < 2 * size

    slow = post(hive, "hf:org/repo::file=slow.bin")
    wait_until(lambda: scrape(hive.url)[("rbee_hive_speed_bps", ())] > 0, 10, what="slow.bin measured")
    hold = Hold(hive.url)  # slow.bin stays running, with its speed, while the queue behind it is looked at
    queued = [post(hive, "hf:org/repo::file=q1.bin"), post(hive, "hf:org/repo::file=q2.bin")]
    with httpx.Client(timeout=httpx.Timeout(5, read=10)) as client:
        with (
            client.stream("GET", f"{hive.url}/v2/downloads/{slow}/stream"),
            client.stream("GET", f"{hive.url}/v2/downloads/stream"),
        ):
            busy = wait_until(
                lambda: (s := scrape(hive.url))[("rbee_hive_speed_bps", ())] > 0 and s, 10, what="a speed"
            )
            assert value(busy, "rbee_hive_queue_length") == 2
            assert value(busy, "rbee_hive_sse_clients") == 2
            assert value(busy, "rbee_hive_downloads", status="queued") == 2
    wait_until(lambda: value(scrape(hive.url), "rbee_hive_sse_clients") == 0, 10, what="the streams to go")
    httpx.delete(f"{hive.url}/v2/downloads/{slow}", timeout=10)
    hold.release()
    wait_until(lambda: all(status(hive, d) == "complete" for d in queued), 10, what="the queue to drain")
    assert value(scrape(hive.url), "rbee_hive_queue_length") == 0


def test_queen_metrics_exist(make_hive: Callable[..., ServerThread]) -> None:
    hive = make_hive()
    with serve(create_queen(QueenSettings(hives={"hive-0": hive.url}, health_interval=0.1))) as queen:
        wait_until(lambda: value(scrape(queen.url), "rbee_queen_hives", health="healthy") == 1, 10, what="health")
        samples = scrape(queen.url)
    names = {name for name, _ in samples}
    assert {"rbee_queen_relay_reconnects_total", "rbee_queen_sse_clients", "rbee_queen_hives"} <= names, names


def test_hive_log_lines_are_json_with_hive_download_and_correlation_ids(
    tmp_path: Path, model_server: ModelServer
) -> None:
    model_server.add_file("org/repo/logged.bin", 300 * KiB)
    model_server.set_fault("/org/repo/resolve/main/logged.bin", Fault(drop_after=100 * KiB))
    env = {
        "HIVE_ID": "hive-log",
        "HIVE_MODELS_DIR": str(tmp_path / "models"),
        "HF_ENDPOINT": model_server.url,
        **{f"HIVE_{k.upper()}": str(v) for k, v in FAST_HIVE.items()},
    }
    log_path = tmp_path / "hive.log"
    hive = ServiceProcess("services.hive.main", free_port(), env, log_path).start()
    try:
        with httpx.Client(base_url=hive.url, timeout=5) as client:
            started = client.post(
                "/v2/downloads",
                json={"model_ref": "hf:org/repo::file=logged.bin"},
                headers={"X-Correlation-Id": "corr-42"},
            )
            assert started.headers["x-correlation-id"] == "corr-42"
            download_id = started.json()["download_id"]
            failed_id = client.post("/v2/downloads", json={"model_ref": "hf:org/repo::file=nope.bin"}).json()[
                "download_id"
            ]
            wait_until(lambda: client.get(f"/v2/downloads/{download_id}").json()["status"] == "complete", 10)
            wait_until(lambda: client.get(f"/v2/downloads/{failed_id}").json()["status"] == "failed", 10)
            made_up = client.get("/v2/downloads").headers["x-correlation-id"]
            assert len(made_up) == 32  # one is made when the client sends none
    finally:
        hive.stop()

    raw = log_path.read_text().splitlines()
    lines = [json.loads(line) for line in raw]  # every line is one JSON object
    assert lines and all(line["hive_id"] == "hive-log" and line["service"] == "rbee-hive" for line in lines)
    assert all({"event", "level", "timestamp"} <= set(line) for line in lines)
    for text, line in zip(raw, lines, strict=True):
        for known in (download_id, failed_id):
            if known in text:  # a line that concerns a download names it in its own field
                assert line.get("download_id") == known, text
    ours = [line for line in lines if line.get("download_id") == download_id]
    events = {line["event"] for line in ours}
    assert {"download_requested", "download_starting", "download_retry", "download_complete"} <= events, events
    assert all(line.get("correlation_id") == "corr-42" for line in ours), ours  # the task keeps its request's id
    failure = [line for line in lines if line.get("download_id") == failed_id and line["event"] == "download_failed"]
    assert failure and failure[0]["code"] == "NOT_FOUND" and failure[0]["level"] == "warning"
