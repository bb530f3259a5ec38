"""A complete blob served zero-copy (README, "Fleet pulls", the serving path): the same bytes, whole
or ranged, as the file holds; the sendfile extension of the services' uvicorn protocol paced piece by
piece, and the connection good for the next request after it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.types import Receive, Scope, Send

from services.hive.metrics import HiveStats
from services.hive.peers import blobs
from services.hive.peers.serve import BlobFileResponse, BucketThrottle, ServeThrottle
from services.hive.transfer.throttle import TokenBucket
from shared.http_protocol import SENDFILE, JsonErrorH11Protocol
from tests.conftest import hive_factory
from tests.support import ServerThread

MiB = 1024 * 1024
SIZE = 3 * MiB + 17
DIGEST = "ab" * 32


@pytest.fixture(scope="module")
def blob_bytes() -> bytes:
    return os.urandom(SIZE)


@pytest.fixture(scope="module")
def hive_with_blob(
    tmp_path_factory: pytest.TempPathFactory, blob_bytes: bytes, make_module_hive: Callable[..., ServerThread]
) -> ServerThread:
    models = tmp_path_factory.mktemp("models")
    blobs = models / "hub" / "models--org--served" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / DIGEST).write_bytes(blob_bytes)
    return make_module_hive(models_dir=models)


@pytest.fixture(scope="module")
def make_module_hive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerThread]]:
    with hive_factory(tmp_path_factory.mktemp("hives"), "http://127.0.0.1:9") as make:
        yield make


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c


def test_a_complete_blob_is_sent_whole(hive_with_blob: ServerThread, blob_bytes: bytes, client: httpx.Client) -> None:
    resp = client.get(f"{hive_with_blob.url}/v2/blobs/{DIGEST}")
    assert resp.status_code == 200 and resp.content == blob_bytes
    assert resp.headers["x-rbee-blob-state"] == "complete" and resp.headers["content-length"] == str(SIZE)
    again = client.get(f"{hive_with_blob.url}/v2/blobs/{DIGEST}", headers={"Range": "bytes=0-0"})
    assert again.status_code == 206 and again.content == blob_bytes[:1]  # (the same connection, kept alive)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.integers(0, SIZE - 1), length=st.one_of(st.none(), st.integers(1, SIZE)))
def test_a_range_of_a_complete_blob_is_those_bytes(
    hive_with_blob: ServerThread, blob_bytes: bytes, client: httpx.Client, start: int, length: int | None
) -> None:
    spec = f"bytes={start}-" if length is None else f"bytes={start}-{start + length - 1}"
    resp = client.get(f"{hive_with_blob.url}/v2/blobs/{DIGEST}", headers={"Range": spec})
    stop = SIZE if length is None else min(SIZE, start + length)
    assert resp.status_code == 206 and resp.content == blob_bytes[start:stop]
    assert resp.headers["content-range"] == f"bytes {start}-{stop - 1}/{SIZE}"


@pytest.mark.parametrize("spec", ["bytes=99999999-", "bytes=5-2", "bytes=0-1,3-4", "bytes=-5"])
def test_a_range_outside_a_complete_blob_is_a_416(
    hive_with_blob: ServerThread, client: httpx.Client, spec: str
) -> None:
    resp = client.get(f"{hive_with_blob.url}/v2/blobs/{DIGEST}", headers={"Range": spec})
    assert resp.status_code == 416 and resp.json()["error"]["code"] == "RANGE_NOT_SATISFIABLE"
    assert resp.headers["content-range"] == f"bytes */{SIZE}"


class _Counting(ServeThrottle):
    def __init__(self) -> None:
        self.taken: list[int] = []

    async def take(self, n: int) -> None:
        self.taken.append(n)


@pytest.mark.parametrize("with_extension", [True, False], ids=["sendfile", "reads"])
def test_the_throttle_is_asked_before_each_piece_and_the_connection_stays_good(
    tmp_path: Path, blob_bytes: bytes, with_extension: bool
) -> None:
    path = tmp_path / "blob"
    path.write_bytes(blob_bytes)
    throttle = _Counting()
    stats = HiveStats()
    seen: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        seen.append(SENDFILE in scope.get("extensions", {}))
        headers = {"Content-Length": str(SIZE - 5)}
        await BlobFileResponse(
            path.open("rb"), 5, SIZE, status_code=200, headers=headers, throttle=throttle, stats=stats, piece=MiB
        )(scope, receive, send)

    server = ServerThread(app, http=JsonErrorH11Protocol if with_extension else "h11").start()
    try:
        with httpx.Client(timeout=30) as c:
            for _ in range(2):  # the second on the same connection: h11 counted the bytes sent around it
                assert c.get(server.url).content == blob_bytes[5:]
    finally:
        server.stop()
    assert seen == [with_extension] * 2
    assert throttle.taken == [MiB, MiB, MiB, SIZE - 5 - 3 * MiB] * 2
    assert stats.bytes_served == 2 * (SIZE - 5)


def test_a_followed_partial_asks_the_throttle_before_each_chunk(tmp_path: Path, blob_bytes: bytes) -> None:
    path = tmp_path / "blob"
    path.write_bytes(blob_bytes)
    view = blobs.BlobView(DIGEST, path, None, SIZE)
    taken: list[int] = []

    async def take(n: int) -> None:
        taken.append(n)

    async def body() -> bytes:
        return b"".join([c async for c in blobs.follow(view, 7, None, lambda: view, take=take)])

    assert asyncio.run(body()) == blob_bytes[7:]
    assert taken == [MiB, MiB, MiB, SIZE - 7 - 3 * MiB]


def test_a_bucket_cap_sends_pieces_of_a_fifth_of_a_second_and_takes_from_the_bucket() -> None:
    bucket = TokenBucket(0)
    throttle = BucketThrottle(bucket)
    assert throttle.piece(16 * MiB) == 16 * MiB  # no cap: the piece as it is
    bucket.set_rate(10 * MiB)
    assert throttle.piece(16 * MiB) == 2 * MiB
    bucket.set_rate(100_000)
    assert throttle.piece(16 * MiB) == BucketThrottle.MIN_PIECE
    asyncio.run(throttle.take(1000))
    assert bucket.taken == 1000  # what the NIC controller counts as the hive's own upload
