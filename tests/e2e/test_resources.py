"""What a long-running queen and hive hold: after hundreds of relayed downloads, no more than before.

Real `rbee-hive` and `rbee-queen` subprocesses and a local model server on loopback. Every download
is followed to its end through the queen's relay (the path that once kept one socket per download),
a few are left by their client mid-stream and cancelled, clients of both aggregated streams come
and go, and then the services' open files,
asyncio tasks, relay subscriptions and SSE clients must come back to within a small constant of
where they were before. Nothing is timed: the counts are polled with a deadline until they settle.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from httpx_sse import aconnect_sse

from services.modelserver.server import Fault, ModelServer
from tests.support import ServiceProcess, free_port, wait_until

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="needs /proc/<pid>/fd to count a process's open files"
)

TERMINAL = {"complete", "error", "cancelled"}
RELAYED = 300  # downloads followed to complete through the queen
LEFT = 12  # downloads whose client leaves mid-stream, then cancelled
AT_ONCE = 20
SLACK_FDS = 8  # a connection or two the pools may hold, sqlite's files: not one per download
SLACK_TASKS = 3


@dataclass
class Stack:
    models: ModelServer
    hive: ServiceProcess
    queen: ServiceProcess


def open_fds(service: ServiceProcess) -> int:
    assert service.proc is not None
    return len(os.listdir(f"/proc/{service.proc.pid}/fd"))


def gauge(service: ServiceProcess, name: str, labels: str = "") -> float:
    text = httpx.get(f"{service.url}/metrics", timeout=5).text
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name}{labels} not in {service.module}'s /metrics"
    return float(match[1])


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    root = tmp_path / "served"
    root.mkdir()
    models = ModelServer(root).start()
    for i in range(RELAYED + AT_ONCE):
        models.add_file(f"files/f{i}.bin", 4096)
    for i in range(LEFT):
        models.add_file(f"files/slow{i}.bin", 4 * 1024 * 1024)
        models.set_fault(f"/files/slow{i}.bin", Fault(rate_bps=64 * 1024))
    hive_port = free_port()
    hive = ServiceProcess(
        "services.hive.main",
        hive_port,
        {
            "HIVE_ID": "hive-fd",
            "HIVE_MODELS_DIR": str(tmp_path / "models"),
            "HF_ENDPOINT": models.url,
            "HIVE_MAX_CONCURRENT": str(AT_ONCE + LEFT),
            "HIVE_PROGRESS_INTERVAL": "0.05",
        },
        tmp_path / "hive.log",
    )
    queen = ServiceProcess(
        "services.queen.main",
        free_port(),
        {"QUEEN_HIVES": f"hive-fd=http://127.0.0.1:{hive_port}", "QUEEN_HEALTH_INTERVAL": "0.2"},
        tmp_path / "queen.log",
    )
    try:
        hive.start()
        queen.start()
        yield Stack(models, hive, queen)
    finally:
        queen.stop()
        hive.stop()
        models.stop()


async def _follow(client: httpx.AsyncClient, queen: str, model_ref: str) -> str:
    started = await client.post(f"{queen}/v1/downloads", json={"model_ref": model_ref})
    assert started.status_code == 202, started.text
    download_id = started.json()["download_id"]
    async with aconnect_sse(client, "GET", f"{queen}/v1/downloads/{download_id}/stream") as source:
        async for sse in source.aiter_sse():
            if sse.event in TERMINAL:
                return sse.event
    raise AssertionError(f"{download_id}: the stream ended without a terminal event")


async def _leave_and_cancel(client: httpx.AsyncClient, queen: str, model_ref: str) -> int:
    started = await client.post(f"{queen}/v1/downloads", json={"model_ref": model_ref})
    download_id = started.json()["download_id"]
    async with aconnect_sse(client, "GET", f"{queen}/v1/downloads/{download_id}/stream") as source:
        async for sse in source.aiter_sse():
            if sse.event == "progress":
                break  # the client goes away with the download still running
    return (await client.delete(f"{queen}/v1/downloads/{download_id}")).status_code


async def _run(url: str, refs: Sequence[str], leave: Sequence[str] = ()) -> list[object]:
    limit = asyncio.Semaphore(AT_ONCE)
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(ref: str, follow: bool) -> object:
            async with limit:
                return await (_follow(client, url, ref) if follow else _leave_and_cancel(client, url, ref))

        return await asyncio.gather(*(one(r, True) for r in refs), *(one(r, False) for r in leave))


async def _come_and_go(urls: Sequence[str]) -> None:
    """Clients of the endless aggregated streams that subscribe and leave."""
    async with httpx.AsyncClient(timeout=10) as client:

        async def one(stream_url: str) -> None:
            async with client.stream("GET", stream_url) as response:
                assert response.status_code == 200  # subscribed; no download runs, so no event comes

        await asyncio.gather(*(one(u) for u in urls))


def test_relayed_downloads_leave_nothing_behind(stack: Stack) -> None:
    url = stack.queen.url
    files = [f"{stack.models.url}/files/f{i}.bin" for i in range(RELAYED + AT_ONCE)]
    # One round at full concurrency first, so pools, threads and the database are as big as they get.
    assert asyncio.run(_run(url, files[:AT_ONCE])) == ["complete"] * AT_ONCE
    services = (stack.queen, stack.hive)
    before = {s.module: (open_fds(s), gauge(s, "rbee_asyncio_tasks")) for s in services}

    slow = [f"{stack.models.url}/files/slow{i}.bin" for i in range(LEFT)]
    results = asyncio.run(_run(url, files[AT_ONCE:], slow))
    assert results == ["complete"] * RELAYED + [200] * LEFT
    asyncio.run(_come_and_go([f"{url}/v1/downloads/stream", f"{stack.hive.url}/v2/downloads/stream"] * 10))

    def settled() -> bool:
        return all(
            open_fds(s) <= before[s.module][0] + SLACK_FDS
            and gauge(s, "rbee_asyncio_tasks") <= before[s.module][1] + SLACK_TASKS
            for s in services
        )

    wait_until(settled, timeout=30, interval=0.2, what=f"open files and tasks back near {before}")
    assert gauge(stack.queen, "rbee_queen_upstream_subscriptions", '{stream="download"}') == 0
    assert gauge(stack.queen, "rbee_queen_sse_clients", '{stream="download"}') == 0
    assert gauge(stack.queen, "rbee_queen_sse_clients", '{stream="all"}') == 0
    assert gauge(stack.hive, "rbee_hive_downloads", '{status="downloading"}') == 0
    assert gauge(stack.hive, "rbee_hive_sse_clients") == 1  # the queen's own stream of every download
