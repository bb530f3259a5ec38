"""Peers that never give a blob, or give it a few bytes at a time (issue #28): a real hive on loopback,
the test hub, and a hostile peer as a stdlib HTTP server. The file comes from the hub within a bound the
settings set (HIVE_PEER_WAIT_SECS; HIVE_PEER_MIN_BPS over HIVE_PEER_SLOW_SECS), verified, and what the
peer gave is kept: the hub is asked for the rest with Range.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.modelserver.hub import Hub
from tests.conftest import hive_factory
from tests.hub_fixtures import REPO, build_repo, running_hub
from tests.support import wait_until

SHARD = "model.safetensors"
TRICKLE = 8  # bytes a connection gets before the peer closes it, one every _PACE seconds
_PACE = 0.25


class HostilePeer(ThreadingHTTPServer):
    """Answers every blob with `503 planned` and `retry_after` (when set), else trickles `content` from
    the asked offset (Range honoured) and closes the connection short."""

    daemon_threads = True

    def __init__(self, content: bytes, retry_after: str | None) -> None:
        super().__init__(("127.0.0.1", 0), _Hostile)
        self.content, self.retry_after = content, retry_after
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.sent = 0  # body bytes written
        self.stopping = threading.Event()


class _Hostile(BaseHTTPRequestHandler):
    server: HostilePeer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        peer = self.server
        if peer.retry_after is not None:
            self.send_response(503)
            for name, value in (("X-Rbee-Blob-State", "planned"), ("Retry-After", peer.retry_after)):
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size, asked = len(peer.content), self.headers.get("Range", "bytes=0-")
        start = int(asked.removeprefix("bytes=").split("-")[0])
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        self.close_connection = True
        try:
            for i in range(start, min(start + TRICKLE, size)):
                self.wfile.write(peer.content[i : i + 1])
                self.wfile.flush()
                peer.sent += 1
                if peer.stopping.wait(_PACE):
                    return
        except OSError:
            return  # the hive hung up

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def hostile_peer(content: bytes, retry_after: str | None = None) -> Iterator[HostilePeer]:
    server = HostilePeer(content, retry_after)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    with running_hub(tmp_path) as h:
        build_repo(h)
        yield h


def pull_part(hive_url: str, commit: str, digest: str, peer_url: str) -> str:
    body = {"model_ref": f"hf:{REPO}", "commit": commit, "sources": {digest: [peer_url]}}
    resp = httpx.post(f"{hive_url}/v2/downloads", json=body, timeout=10)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["download_id"])


def state_of(hive_url: str, download_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{hive_url}/v2/downloads/{download_id}", timeout=10).json())


def ended(hive_url: str, download_id: str, timeout: float) -> dict[str, Any]:
    def terminal() -> dict[str, Any] | None:
        state = state_of(hive_url, download_id)
        return state if state["status"] in ("complete", "failed", "cancelled") else None

    return wait_until(terminal, timeout, what=f"{download_id} to end")


def assert_from_the_hub(state: dict[str, Any], digest: str) -> None:
    assert state["status"] == "complete", state
    assert {f["path"]: f["source"] for f in state["files"]}[SHARD] == "hub"
    assert hashlib.sha256((Path(state["path"]) / SHARD).read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("retry_after", ["86400", "1"])
def test_a_peer_that_never_begins_the_blob_is_waited_for_hive_peer_wait_secs_then_the_hub_gives_it(
    hub: Hub, tmp_path: Path, retry_after: str
) -> None:
    commit, shard = hub.repo(REPO).resolve("main"), hub.file(REPO, SHARD)
    assert commit is not None
    with hostile_peer(shard.content(), retry_after) as peer, hive_factory(tmp_path, hub.url, peer_wait_secs=2) as make:
        hive = make()
        began = time.monotonic()
        download_id = pull_part(hive.url, commit.sha, shard.sha256, peer.url)

        def waiting_reason() -> str | None:
            reason = state_of(hive.url, download_id)["waiting_reason"]
            return reason if reason and "peer" in reason else None

        reason = wait_until(waiting_reason, 10, what="the state to show the wait for the peer")
        assert peer.url in reason and "HIVE_PEER_WAIT_SECS" in reason
        state = ended(hive.url, download_id, 20)
        took = time.monotonic() - began
    assert_from_the_hub(state, shard.sha256)
    assert state["waiting_until"] is None and state["waiting_reason"] is None
    assert 2 <= took < 2 + 10, took  # HIVE_PEER_WAIT_SECS, then the hub (a day's Retry-After or not)


def test_a_peer_that_trickles_bytes_is_dropped_and_the_hub_resumes_after_its_bytes(hub: Hub, tmp_path: Path) -> None:
    commit, shard = hub.repo(REPO).resolve("main"), hub.file(REPO, SHARD)
    assert commit is not None
    slow = {"peer_min_bps": 1024, "peer_slow_secs": 1.0}
    with hostile_peer(shard.content()) as peer, hive_factory(tmp_path, hub.url, **slow) as make:
        hive = make()
        began = time.monotonic()
        state = ended(hive.url, pull_part(hive.url, commit.sha, shard.sha256, peer.url), 20)
        took = time.monotonic() - began
    assert_from_the_hub(state, shard.sha256)
    assert took < 1 + 10, took  # one window of HIVE_PEER_SLOW_SECS, then the hub
    asked = [r for r in hub.cdn.records() if r.path.endswith(shard.sha256)]
    assert peer.sent > 0 and len(asked) == 1, asked
    start = int(asked[0].headers["range"].removeprefix("bytes=").split("-")[0])
    assert 0 < start <= peer.sent  # what the peer gave was kept (pinned by the digest), the rest from the hub
    assert asked[0].bytes_sent == shard.size - start
