"""The local model file server: real sockets on 127.0.0.1, driven with httpx."""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.modelserver.server import (
    Fault,
    ModelServer,
    RangeNotSatisfiable,
    RequestRecord,
    generate_file,
    parse_range,
    parse_size,
)
from tests.support import REPO as REPO_ROOT
from tests.support import wait_until

REPO = "org/repo"
NAME = "model.bin"
SIZE = 3 * 1024 * 1024 + 12_345  # several sendfile/read blocks, not a round number
HUB_PATH = f"/{REPO}/resolve/main/{NAME}"
DIRECT_PATH = f"/{REPO}/{NAME}"


def only_record(srv: ModelServer, path: str) -> RequestRecord:
    assert srv.wait_idle(5.0)
    recs = srv.records(path)
    assert len(recs) == 1, recs
    return recs[0]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def server(root: Path) -> Iterator[ModelServer]:
    with ModelServer(root) as srv:
        yield srv


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as c:
        yield c


@pytest.fixture
def model(server: ModelServer, root: Path) -> tuple[str, bytes]:
    """A file at root/org/repo/model.bin: (sha256, content)."""
    sha = server.add_file(f"{REPO}/{NAME}", SIZE, seed=7)
    return sha, (root / REPO / NAME).read_bytes()


# --------------------------------------------------------------------------- helpers and files


def test_generate_file_is_deterministic_and_returns_sha(tmp_path: Path) -> None:
    a = generate_file(tmp_path / "x" / "a.bin", 1024 * 1024 + 5, seed=1)
    b = generate_file(tmp_path / "b.bin", 1024 * 1024 + 5, seed=1)
    c = generate_file(tmp_path / "c.bin", 1024 * 1024 + 5, seed=2)
    data = (tmp_path / "x" / "a.bin").read_bytes()
    assert len(data) == 1024 * 1024 + 5
    assert a == hashlib.sha256(data).hexdigest() == b
    assert c != a
    assert generate_file(tmp_path / "empty.bin", 0) == hashlib.sha256(b"").hexdigest()


def test_parse_range_and_size() -> None:
    assert parse_range("bytes=10-", 100) == (10, 100)
    assert parse_range("bytes=10-19", 100) == (10, 20)
    assert parse_range("bytes=90-500", 100) == (90, 100)
    assert parse_range("bytes=-30", 100) == (70, 100)
    for ignored in ("bytes=1-2,5-6", "bytes=5-2", "bytes=-", "items=1-2", "bytes=a-"):
        assert parse_range(ignored, 100) is None, ignored
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=100-", 100)
    assert parse_size("123") == 123
    assert parse_size("4K") == 4096
    assert parse_size("3m") == 3 * 1024**2
    assert parse_size("2G") == 2 * 1024**3
    with pytest.raises(ValueError):
        parse_size("12X")


# --------------------------------------------------------------------------- plain HTTP


def test_full_get(server: ModelServer, client: httpx.Client, model: tuple[str, bytes]) -> None:
    sha, _ = model
    resp = client.get(server.url + DIRECT_PATH)
    assert resp.status_code == 200
    assert hashlib.sha256(resp.content).hexdigest() == sha
    assert resp.headers["content-length"] == str(SIZE)
    assert resp.headers["etag"] == f'"{sha}"'
    assert only_record(server, DIRECT_PATH).bytes_sent == SIZE
    assert server.total_bytes_sent() == SIZE


def test_head_has_the_get_headers_and_no_body(
    server: ModelServer, client: httpx.Client, model: tuple[str, bytes]
) -> None:
    sha, _ = model
    resp = client.head(server.url + DIRECT_PATH)
    assert resp.status_code == 200
    assert resp.content == b""
    assert resp.headers["content-length"] == str(SIZE)
    assert resp.headers["accept-ranges"] == "bytes"
    assert resp.headers["etag"] == f'"{sha}"'
    assert resp.headers["content-type"] == "application/octet-stream"
    assert "GMT" in resp.headers["last-modified"]
    rec = only_record(server, DIRECT_PATH)
    assert (rec.method, rec.status, rec.bytes_sent) == ("HEAD", 200, 0)


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [("bytes=1000-", 1000, SIZE), ("bytes=1000-1999", 1000, 2000), ("bytes=5-99999999", 5, SIZE)],
)
def test_range_gives_206(
    server: ModelServer, client: httpx.Client, model: tuple[str, bytes], header: str, start: int, stop: int
) -> None:
    _, data = model
    resp = client.get(server.url + DIRECT_PATH, headers={"Range": header})
    assert resp.status_code == 206
    assert resp.headers["content-range"] == f"bytes {start}-{stop - 1}/{SIZE}"
    assert resp.headers["content-length"] == str(stop - start)
    assert resp.content == data[start:stop]
    rec = only_record(server, DIRECT_PATH)
    assert rec.range == header
    assert rec.headers["range"] == header
    assert rec.bytes_sent == stop - start


def test_range_past_the_end_is_416(server: ModelServer, client: httpx.Client, model: tuple[str, bytes]) -> None:
    resp = client.get(server.url + DIRECT_PATH, headers={"Range": f"bytes={SIZE}-"})
    assert resp.status_code == 416
    assert resp.headers["content-range"] == f"bytes */{SIZE}"
    assert resp.content == b""


@pytest.mark.parametrize("header", ["bytes=0-1,5-9", "bytes=9-3", "pages=1-2"])
def test_multi_or_malformed_range_is_ignored(
    server: ModelServer, client: httpx.Client, model: tuple[str, bytes], header: str
) -> None:
    _, data = model
    resp = client.get(server.url + DIRECT_PATH, headers={"Range": header})
    assert resp.status_code == 200
    assert "content-range" not in resp.headers
    assert resp.content == data


def test_if_range(server: ModelServer, client: httpx.Client, model: tuple[str, bytes]) -> None:
    sha, data = model
    url = server.url + DIRECT_PATH
    last_modified = client.head(url).headers["last-modified"]

    stale = client.get(url, headers={"Range": "bytes=100-", "If-Range": '"not-the-etag"'})
    assert stale.status_code == 200
    assert stale.content == data

    for validator in (f'"{sha}"', last_modified):
        fresh = client.get(url, headers={"Range": "bytes=100-", "If-Range": validator})
        assert fresh.status_code == 206, validator
        assert fresh.content == data[100:]
    assert server.wait_idle()
    assert server.records(DIRECT_PATH)[1].headers["if-range"] == '"not-the-etag"'


def test_etag_modes(root: Path, client: httpx.Client) -> None:
    for mode in ("mtime", "none"):
        with ModelServer(root, etag=mode) as srv:
            srv.add_file("f.bin", 10)
            headers = client.head(srv.url + "/f.bin").headers
            if mode == "mtime":
                st = (root / "f.bin").stat()
                assert headers["etag"] == f'W/"10-{st.st_mtime_ns}"'
            else:
                assert "etag" not in headers
            assert "last-modified" in headers
    with pytest.raises(ValueError):
        ModelServer(root, etag="md5")


def test_resolve_url_maps_into_the_repo(server: ModelServer, client: httpx.Client, model: tuple[str, bytes]) -> None:
    sha, _ = model
    assert server.hub_url(REPO, NAME) == server.url + HUB_PATH
    for url in (server.hub_url(REPO, NAME), server.hub_url(REPO, NAME, rev="0123abcd") + "?download=true"):
        resp = client.get(url)
        assert resp.status_code == 200, url
        assert hashlib.sha256(resp.content).hexdigest() == sha
    assert server.wait_idle()
    assert [r.path for r in server.records()] == [HUB_PATH, f"/{REPO}/resolve/0123abcd/{NAME}"]


def _raw_get(url: str, target: str) -> bytes:
    """Send a request line verbatim (clients normalise `..` away) and return the status line."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return sock.makefile("rb").readline()


def test_path_traversal_is_404(server: ModelServer, client: httpx.Client, tmp_path: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(b"secret")
    server.add_file("inside.bin", 10)
    assert _raw_get(server.url, "/inside.bin").startswith(b"HTTP/1.1 200")  # the raw client works
    for target in ("/../secret.bin", "/%2e%2e/secret.bin", "/..%2Fsecret.bin", "/a/b/resolve/main/../../../secret.bin"):
        assert _raw_get(server.url, target).startswith(b"HTTP/1.1 404"), target
    assert client.get(server.url + "/%2E%2E/secret.bin").status_code == 404


def test_missing_file_and_directory_are_404(
    server: ModelServer, client: httpx.Client, model: tuple[str, bytes]
) -> None:
    for path in ("/nope.bin", f"/{REPO}/resolve/main/nope.bin", f"/{REPO}", "/", f"/{REPO}/resolve/main/"):
        assert client.get(server.url + path).status_code == 404, path
    assert client.get(server.url + DIRECT_PATH).status_code == 200


# --------------------------------------------------------------------------- faults


def test_drop_after_truncates_once(server: ModelServer, client: httpx.Client, model: tuple[str, bytes]) -> None:
    sha, _ = model
    server.set_fault(HUB_PATH, Fault(drop_after=100_000))
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.get(server.hub_url(REPO, NAME))
    assert only_record(server, HUB_PATH).bytes_sent == 100_000

    resp = client.get(server.hub_url(REPO, NAME))  # drop_times=1: served normally now
    assert hashlib.sha256(resp.content).hexdigest() == sha
    assert server.total_bytes_sent(HUB_PATH) == 100_000 + SIZE


def test_drop_always_also_cuts_ranges(server: ModelServer, client: httpx.Client, model: tuple[str, bytes]) -> None:
    server.set_fault(HUB_PATH, Fault(drop_after=10, drop_times=-1))
    for _ in range(3):
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            client.get(server.hub_url(REPO, NAME), headers={"Range": "bytes=500-"})
    assert server.wait_idle()
    assert [(r.status, r.bytes_sent) for r in server.records(HUB_PATH)] == [(206, 10)] * 3


def test_short_body_announces_full_length(server: ModelServer, client: httpx.Client, model: tuple[str, bytes]) -> None:
    server.set_fault(HUB_PATH, Fault(short_body=1234))
    with client.stream("GET", server.hub_url(REPO, NAME)) as resp:
        assert resp.headers["content-length"] == str(SIZE)
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            resp.read()
    assert only_record(server, HUB_PATH).bytes_sent == 1234


def test_statuses_then_normal_with_retry_after(
    server: ModelServer, client: httpx.Client, model: tuple[str, bytes]
) -> None:
    sha, _ = model
    server.set_fault(HUB_PATH, Fault(statuses=[503, 429], retry_after="1"))
    first, second, third = (client.get(server.hub_url(REPO, NAME)) for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (503, 429, 200)
    assert first.headers["retry-after"] == second.headers["retry-after"] == "1"
    assert "503" in first.text
    assert "retry-after" not in third.headers
    assert hashlib.sha256(third.content).hexdigest() == sha


@pytest.mark.parametrize("status", [401, 404])
def test_always_status(server: ModelServer, client: httpx.Client, model: tuple[str, bytes], status: int) -> None:
    server.set_fault(HUB_PATH, Fault(always_status=status))
    for _ in range(3):
        assert client.get(server.hub_url(REPO, NAME)).status_code == status
    assert client.get(server.url + DIRECT_PATH).status_code == 200  # faults are per path
    server.clear_faults()
    assert client.get(server.hub_url(REPO, NAME)).status_code == 200


def test_change_etag_after(server: ModelServer, client: httpx.Client, model: tuple[str, bytes]) -> None:
    sha, data = model
    server.set_fault(HUB_PATH, Fault(change_etag_after=1))
    url = server.hub_url(REPO, NAME)
    before = client.head(url).headers
    after = client.head(url).headers
    assert before["etag"] == f'"{sha}"'
    assert after["etag"] != before["etag"]
    assert after["last-modified"] != before["last-modified"]
    resumed = client.get(url, headers={"Range": "bytes=10-", "If-Range": before["etag"]})
    assert resumed.status_code == 200  # the remote "changed": the whole file again
    assert resumed.content == data


def test_ignore_range(server: ModelServer, client: httpx.Client, model: tuple[str, bytes]) -> None:
    server.set_fault(HUB_PATH, Fault(ignore_range=True))
    resp = client.get(server.hub_url(REPO, NAME), headers={"Range": "bytes=10-"})
    assert resp.status_code == 200
    assert len(resp.content) == SIZE


def test_rate_cap_per_fault_and_per_server(root: Path, client: httpx.Client) -> None:
    size = 200 * 1024
    with ModelServer(root) as srv:
        srv.add_file("fast.bin", size)
        srv.add_file("slow.bin", size)
        srv.set_fault("/slow.bin", Fault(rate_bps=400 * 1024))
        t0 = time.monotonic()
        assert len(client.get(srv.url + "/slow.bin").content) == size
        assert time.monotonic() - t0 >= 0.3
    with ModelServer(root, rate_bps=400 * 1024) as srv:
        t0 = time.monotonic()
        assert len(client.get(srv.url + "/fast.bin").content) == size
        assert time.monotonic() - t0 >= 0.3


def test_stall_hangs_until_stop(root: Path) -> None:
    srv = ModelServer(root).start()
    srv.add_file("f.bin", 1_000_000)
    srv.set_fault("/f.bin", Fault(stall_after=1000))
    got = bytearray()
    with httpx.Client(timeout=httpx.Timeout(5.0, read=0.5)) as client:
        with client.stream("GET", srv.url + "/f.bin") as resp:
            wait_until(lambda: srv.total_bytes_sent("/f.bin") == 1000, 5.0, what="the first 1000 bytes")
            with pytest.raises(httpx.ReadTimeout):  # stalled: no more bytes arrive
                for chunk in resp.iter_raw():
                    got += chunk
    assert bytes(got) == (root / "f.bin").read_bytes()[:1000]
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 2.0
    assert srv.wait_idle(0.1)  # the stalled handler is gone
    assert srv.records("/f.bin")[0].bytes_sent == 1000


def test_stall_is_cut_by_stop_while_client_waits(root: Path) -> None:
    srv = ModelServer(root).start()
    srv.add_file("f.bin", 100_000)
    srv.set_fault("/f.bin", Fault(stall_after=10, stall_secs=3600))
    with httpx.Client(timeout=10.0) as client, client.stream("GET", srv.url + "/f.bin") as resp:
        wait_until(lambda: srv.total_bytes_sent("/f.bin") == 10, 5.0, what="the first 10 bytes")
        t0 = time.monotonic()
        srv.stop()
        assert time.monotonic() - t0 < 2.0
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            resp.read()


def test_stall_secs_ends_the_stall(server: ModelServer, client: httpx.Client) -> None:
    server.add_file("f.bin", 100_000)
    server.set_fault("/f.bin", Fault(stall_after=10, stall_secs=0.3))
    t0 = time.monotonic()
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.get(server.url + "/f.bin")
    assert time.monotonic() - t0 >= 0.25
    assert client.get(server.url + "/f.bin").status_code == 200  # stall_times=1


def test_redirect_to_cdn(server: ModelServer, client: httpx.Client, model: tuple[str, bytes]) -> None:
    sha, data = model
    cdn_sha = server.add_file("cdn/blob", SIZE, seed=7)
    assert cdn_sha == sha
    server.set_fault(HUB_PATH, Fault(redirect_to=server.url + "/cdn/blob?sig=abc"))
    resp = client.get(server.hub_url(REPO, NAME))
    assert resp.status_code == 302
    assert resp.headers["location"] == server.url + "/cdn/blob?sig=abc"
    assert resp.headers["x-linked-etag"] == f'"{sha}"'
    assert resp.headers["x-linked-size"] == str(SIZE)
    followed = client.get(server.hub_url(REPO, NAME), follow_redirects=True)
    assert followed.status_code == 200
    assert followed.content == data
    assert server.wait_idle()
    assert [r.path for r in server.records()] == [HUB_PATH, HUB_PATH, "/cdn/blob"]


def test_require_auth(server: ModelServer, client: httpx.Client, model: tuple[str, bytes]) -> None:
    server.set_fault(HUB_PATH, Fault(require_auth="hf_secret", statuses=[503]))
    url = server.hub_url(REPO, NAME)
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    good = {"Authorization": "Bearer hf_secret"}
    assert client.get(url, headers=good).status_code == 503  # statuses are only spent on authorised requests
    assert client.get(url, headers=good).status_code == 200
    assert server.wait_idle()
    seen = [r.headers.get("authorization") for r in server.records(HUB_PATH)]
    assert seen == [None, "Bearer wrong", "Bearer hf_secret", "Bearer hf_secret"]


def test_stop_is_prompt_with_idle_keepalive_connections(root: Path, client: httpx.Client) -> None:
    srv = ModelServer(root).start()
    srv.add_file("f.bin", 10)
    assert client.get(srv.url + "/f.bin").status_code == 200  # leaves a pooled keep-alive connection
    t0 = time.monotonic()
    srv.stop()
    srv.stop()  # idempotent
    assert time.monotonic() - t0 < 2.0
    with pytest.raises(httpx.TransportError):
        client.get(srv.url + "/f.bin")


# --------------------------------------------------------------------------- CLI


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    line = b""
    try:
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                raise AssertionError(f"no JSON line within {timeout}s (got {line!r})")
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"stdout closed early (got {line!r}, rc={proc.poll()})")
            line += chunk
    finally:
        sel.close()
    return line


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_json_and_exits_on_signal(tmp_path: Path, client: httpx.Client, sig: signal.Signals) -> None:
    root = tmp_path / "models"
    (root / "org" / "kept").mkdir(parents=True)
    (root / "org" / "kept" / "k.bin").write_bytes(b"x" * 4096)
    cmd = [sys.executable, "-m", "services.modelserver.server", "--root", str(root)]
    cmd += ["--generate", "org/repo/a.bin:3K", "org/kept/k.bin:4K", "--generate", "org/repo/b.bin:1000"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = _read_line(proc, timeout=10.0)
        assert line.count(b"\n") == 1
        info = json.loads(line)
        assert info["url"].startswith("http://127.0.0.1:")
        assert set(info["files"]) == {"org/repo/a.bin", "org/kept/k.bin", "org/repo/b.bin"}
        assert (root / "org" / "kept" / "k.bin").read_bytes() == b"x" * 4096  # kept, not regenerated
        for rel, sha in info["files"].items():
            assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == sha
        assert (root / "org/repo/a.bin").stat().st_size == 3072
        resp = client.get(info["url"] + "/org/repo/resolve/main/b.bin")
        assert resp.status_code == 200
        assert hashlib.sha256(resp.content).hexdigest() == info["files"]["org/repo/b.bin"]
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        assert proc.stderr.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
