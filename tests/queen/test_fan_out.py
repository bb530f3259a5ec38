"""Calls the queen makes to every hive at once answer with what came back, never waiting on one hive.

`services/queen/hives/fan_out.py` on its own first, then through the queen's routes: a hive that
accepts connections and never answers gets the fan-out deadline (QUEEN_FANOUT_TIMEOUT) and is named
in `unreachable_hives`; a hive the health checker already knows to be down is not asked at all. The
bound on each request below is the client's own timeout, far above the deadline and far below the
queen's ordinary per-call timeout (10 s), not a measurement.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from services.queen.hives.fan_out import ask_every_hive, fan_out
from services.queen.hives.registry import HiveInfo, HiveRegistry
from shared.errors import ApiError
from shared.models import DownloadState, DownloadStatus, ErrorCode
from tests.queen.support import AUTH, FakeHive, queen_for
from tests.support import free_port, wait_until

# --------------------------------------------------------------------------- the helper on its own


async def _answer_by_name(hive: HiveInfo) -> str:
    """A hive's call that answers, fails, never answers or breaks, as its id says."""
    if hive.hive_id.startswith("slow"):
        await asyncio.Event().wait()
    if hive.hive_id.startswith("refusing"):
        raise ApiError(404, "NOT_FOUND", "no such download")
    if hive.hive_id.startswith("broken"):
        raise RuntimeError("a bug, not a hive's answer")
    return f"answer of {hive.hive_id}"


def test_fan_out_gives_each_hive_its_answer_or_its_error_and_a_slow_one_the_deadline() -> None:
    hives = [HiveInfo(h, f"http://{h}", "static") for h in ("good", "refusing", "slow")]
    answers = asyncio.run(asyncio.wait_for(fan_out(hives, _answer_by_name, 0.05), 5))
    assert answers["good"] == "answer of good"
    refused, slow = answers["refusing"], answers["slow"]
    assert isinstance(refused, ApiError) and refused.code == "NOT_FOUND"
    assert isinstance(slow, ApiError) and (slow.status, slow.code) == (503, ErrorCode.HIVE_UNREACHABLE)
    assert "no answer within 0.05s" in slow.message


def test_fan_out_without_a_deadline_waits_and_raises_what_is_not_a_hive_error() -> None:
    hives = [HiveInfo(h, f"http://{h}", "static") for h in ("good", "broken")]
    with pytest.raises(RuntimeError, match="a bug"):
        asyncio.run(asyncio.wait_for(fan_out(hives, _answer_by_name, None), 5))


def test_ask_every_hive_skips_the_hives_known_to_be_down_and_names_them_first() -> None:
    registry = HiveRegistry()
    for hive_id in ("good", "refusing", "slow", "down"):
        registry.add(hive_id, f"http://{hive_id}", "static")
    registry.mark_unhealthy("down", "refused")
    asked: list[str] = []

    async def call(hive: HiveInfo) -> str:
        asked.append(hive.hive_id)
        return await _answer_by_name(hive)

    answers, unreachable = asyncio.run(asyncio.wait_for(ask_every_hive(registry, call, 0.05), 5))
    assert sorted(asked) == ["good", "refusing", "slow"]
    assert [(h.hive_id, a) for h, a in answers] == [("good", "answer of good")]
    assert unreachable == ["down", "refusing", "slow"]


# --------------------------------------------------------------------------- through the queen


class SilentHive:
    """Accepts every connection, reads nothing, answers nothing; counts the connections."""

    def __init__(self, hive_id: str) -> None:
        self.hive_id = hive_id
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._sock.settimeout(0.05)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            self._held.append(conn)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._held:
            conn.close()
        self._sock.close()


@pytest.fixture
def hives() -> Iterator[tuple[FakeHive, SilentHive]]:
    good, silent = FakeHive("hive-good"), SilentHive("hive-silent")
    good.states["dl-61000000000000000000000000000000"] = DownloadState(
        "dl-61000000000000000000000000000000", "hf:org/repo::file=model.bin", DownloadStatus.DOWNLOADING
    ).to_dict()
    yield good, silent
    good.stop()
    silent.stop()


@contextlib.contextmanager
def client_of_queen(hives: tuple[FakeHive, SilentHive], timeout: float, **settings: Any) -> Iterator[httpx.Client]:
    """A queen in front of both hives, its health checks ten minutes apart, and a client of it; `timeout` is the
    client's bound on each request."""
    queen = queen_for(*hives, health_interval=600, **settings)
    try:
        with httpx.Client(base_url=queen.url, headers=AUTH, timeout=timeout) as client:
            yield client
    finally:
        queen.stop()


def test_a_silent_hive_gets_the_fanout_deadline_and_is_named(hives: tuple[FakeHive, SilentHive]) -> None:
    # health checks far apart and slow to give up: the silent hive is still "unknown" when asked
    with client_of_queen(hives, 5, fanout_timeout=0.3, health_timeout=60) as client:
        listed = client.get("/v1/downloads")
        assert listed.status_code == 200
        body = listed.json()
        assert [d["download_id"] for d in body["downloads"]] == ["dl-61000000000000000000000000000000"]
        assert body["unreachable_hives"] == ["hive-silent"]
        # finding an unknown download's hive asks everyone under the same deadline: 503, naming it
        lookup = client.get("/v1/downloads/dl-62000000000000000000000000000000")
        assert lookup.status_code == 503
        assert lookup.json()["error"]["unreachable_hives"] == ["hive-silent"]


def test_a_hive_known_to_be_down_is_not_asked(hives: tuple[FakeHive, SilentHive]) -> None:
    _, silent = hives
    with client_of_queen(hives, 3, fanout_timeout=5, health_timeout=0.2) as client:

        def silent_is_down() -> bool:
            health = {h["hive_id"]: h["health"] for h in client.get("/v1/hives").json()["hives"]}
            return health.get("hive-silent") == "unhealthy"

        wait_until(silent_is_down, timeout=10, what="the health check to give up on the silent hive")
        asked_before = silent.accepted
        body = client.get("/v1/downloads").json()
        assert body["unreachable_hives"] == ["hive-silent"]
        assert len(body["downloads"]) == 1
        assert silent.accepted == asked_before
