"""The downloader against a real Range-capable server on loopback: resume, restart, retries, checks."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.hive.disk.partfile import part_path
from services.hive.net.answers import parse_retry_after
from services.hive.net.retry import backoff_delay
from services.hive.refs import origin_of
from services.hive.tracker.tracker import DownloadTracker
from services.hive.transfer import Downloader, DownloaderConfig, DownloadError, DownloadJob, DownloadResult
from services.modelserver.server import Fault, ModelServer
from shared.models import DownloadStatus, ProgressEvent
from tests.support import free_port

MiB = 1024 * 1024
FAST = DownloaderConfig(
    connect_timeout=2.0, stall_timeout=0.5, max_attempts=4, retry_base_delay=0.01, retry_max_delay=0.05
)


@dataclass
class Outcome:
    result: DownloadResult | None
    error: DownloadError | None
    events: list[ProgressEvent] = field(default_factory=list)
    dest: Path = Path()


def download(
    url: str, dest: Path, config: DownloaderConfig = FAST, *, expected: str | None = None, **job: Any
) -> Outcome:
    async def go() -> Outcome:
        tracker = DownloadTracker(progress_interval=0.0)
        events: list[ProgressEvent] = []
        tracker.add_listener(lambda _s, e: events.append(e))
        tracker.start_download("dl-test", url)
        tracker.set_status("dl-test", DownloadStatus.STARTING)
        async with httpx.AsyncClient(timeout=Downloader.timeouts(config)) as client:
            downloader = Downloader(client, config)
            try:
                result = await downloader.run(DownloadJob("dl-test", url, dest, expected, **job), tracker)
                return Outcome(result, None, events, dest)
            except DownloadError as exc:
                return Outcome(None, exc, events, dest)
            finally:
                downloader.close()

    return asyncio.run(go())


def bytes_seen(events: list[ProgressEvent]) -> list[int]:
    return [int(e.data["bytes"]) for e in events]


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "models" / "m.bin"


def test_plain_download_is_verified_and_atomic(model_server: ModelServer, dest: Path) -> None:
    sha = model_server.add_file("org/repo/m.bin", 3 * MiB + 17)
    out = download(model_server.hub_url("org/repo", "m.bin"), dest)
    assert out.error is None and out.result is not None
    assert out.result.sha256 == sha == hashlib.sha256(dest.read_bytes()).hexdigest()
    assert out.result.size == 3 * MiB + 17
    assert not part_path(dest).exists()
    assert bytes_seen(out.events) == sorted(bytes_seen(out.events))
    # no Accept-Encoding games: raw bytes are file bytes
    assert model_server.records()[0].headers.get("accept-encoding") == "identity"


def test_resume_after_dropped_connection_uses_range(model_server: ModelServer, dest: Path) -> None:
    size = 4 * MiB
    sha = model_server.add_file("org/repo/m.bin", size)
    path = "/org/repo/resolve/main/m.bin"
    model_server.set_fault(path, Fault(drop_after=MiB + 123, drop_times=1))
    out = download(model_server.url + path, dest)
    assert out.error is None and out.result is not None
    assert out.result.sha256 == sha and out.result.resumed == 1
    gets = model_server.records(path)
    assert len(gets) == 2
    assert gets[0].range == "bytes=0-"  # a 206 tells that ranges work
    resumed_from = int(gets[1].range.removeprefix("bytes=").rstrip("-"))  # type: ignore[union-attr]
    assert MiB <= resumed_from <= MiB + 123
    assert gets[1].headers.get("if-range")  # the validator went along
    assert gets[1].status == 206
    # little fetched twice: at most what the server sent beyond the resume point
    assert model_server.total_bytes_sent(path) - size <= 123 + 64 * 1024
    assert bytes_seen(out.events) == sorted(bytes_seen(out.events))


def test_changed_etag_restarts_from_zero_instead_of_splicing(model_server: ModelServer, dest: Path) -> None:
    sha = model_server.add_file("org/repo/m.bin", 2 * MiB)
    path = "/org/repo/resolve/main/m.bin"
    model_server.set_fault(path, Fault(drop_after=MiB, drop_times=1, change_etag_after=1))
    out = download(model_server.url + path, dest)
    assert out.error is None and out.result is not None
    assert out.result.sha256 == sha
    second = model_server.records(path)[1]
    assert second.range is not None and second.status == 200  # If-Range failed: the whole file again
    assert dest.stat().st_size == 2 * MiB


def test_server_ignoring_range_restarts_cleanly(model_server: ModelServer, dest: Path) -> None:
    sha = model_server.add_file("org/repo/m.bin", 2 * MiB)
    path = "/org/repo/resolve/main/m.bin"
    model_server.set_fault(path, Fault(drop_after=MiB // 2, drop_times=1, ignore_range=True))
    out = download(model_server.url + path, dest)
    assert out.result is not None and out.result.sha256 == sha
    # progress never went backwards although the transfer restarted at zero
    seen = bytes_seen(out.events)
    assert seen == sorted(seen)


def test_retries_5xx_with_retry_after_then_succeeds(model_server: ModelServer, dest: Path) -> None:
    sha = model_server.add_file("org/repo/m.bin", MiB)
    path = "/org/repo/resolve/main/m.bin"
    model_server.set_fault(path, Fault(statuses=[503, 429], retry_after="0"))
    out = download(model_server.url + path, dest)
    assert out.result is not None and out.result.sha256 == sha
    assert [r.status for r in model_server.records(path)] == [503, 429, 206]


def test_retries_are_bounded(model_server: ModelServer, dest: Path) -> None:
    model_server.add_file("org/repo/m.bin", MiB)
    path = "/org/repo/resolve/main/m.bin"
    model_server.set_fault(path, Fault(always_status=500))
    out = download(model_server.url + path, dest)
    assert out.error is not None and out.error.code == "DOWNLOAD_FAILED"
    assert len(model_server.records(path)) == FAST.max_attempts
    assert not dest.exists()


def test_attempt_count_resets_when_bytes_arrive(model_server: ModelServer, dest: Path) -> None:
    """Six drops in a row would exhaust 4 attempts, but each one delivered bytes, so it completes."""
    sha = model_server.add_file("org/repo/m.bin", 2 * MiB)
    path = "/org/repo/resolve/main/m.bin"
    model_server.set_fault(path, Fault(drop_after=256 * 1024, drop_times=6))
    out = download(model_server.url + path, dest)
    assert out.result is not None and out.result.sha256 == sha
    assert len(model_server.records(path)) == 7


@pytest.mark.parametrize(("status", "code"), [(404, "NOT_FOUND"), (401, "UNAUTHORIZED"), (403, "UNAUTHORIZED")])
def test_no_retry_for_client_errors(model_server: ModelServer, dest: Path, status: int, code: str) -> None:
    path = "/org/repo/resolve/main/m.bin"
    model_server.add_file("org/repo/m.bin", 1024)
    model_server.set_fault(path, Fault(always_status=status))
    out = download(model_server.url + path, dest)
    assert out.error is not None and out.error.code == code
    assert len(model_server.records(path)) == 1


def test_stall_counts_as_dropped_connection_and_resumes(model_server: ModelServer, dest: Path) -> None:
    sha = model_server.add_file("org/repo/m.bin", 2 * MiB)
    path = "/org/repo/resolve/main/m.bin"
    model_server.set_fault(path, Fault(stall_after=MiB, stall_times=1))
    out = download(model_server.url + path, dest)
    assert out.result is not None and out.result.sha256 == sha
    second = model_server.records(path)[1]
    assert second.range is not None and second.status == 206


def test_stalling_forever_gives_download_timeout(model_server: ModelServer, dest: Path) -> None:
    model_server.add_file("org/repo/m.bin", 2 * MiB)
    path = "/org/repo/resolve/main/m.bin"
    model_server.set_fault(path, Fault(stall_after=0, stall_times=-1))
    cfg = DownloaderConfig(stall_timeout=0.2, max_attempts=2, retry_base_delay=0.01, retry_max_delay=0.02)
    out = download(model_server.url + path, dest, cfg)
    assert out.error is not None and out.error.code == "DOWNLOAD_TIMEOUT"


def test_checksum_mismatch_removes_partial(model_server: ModelServer, dest: Path) -> None:
    model_server.add_file("org/repo/m.bin", MiB)
    out = download(model_server.hub_url("org/repo", "m.bin"), dest, expected="0" * 64)
    assert out.error is not None and out.error.code == "CHECKSUM_MISMATCH"
    assert not dest.exists() and not part_path(dest).exists()


def test_a_plain_urls_64_hex_etag_is_no_digest(tmp_path: Path, dest: Path) -> None:
    """A server's ETag of 64 hex digits that is not the file's sha256 (a CDN's Xet hash) fails nothing."""
    with ModelServer(tmp_path / "cdn", etag="xet") as server:
        sha = server.add_file("blobs/m.bin", MiB)
        out = download(f"{server.url}/blobs/m.bin", dest)
        assert out.result is not None and out.result.sha256 == sha, out.error


def test_redirect_keeps_token_on_hub_only(tmp_path: Path, dest: Path) -> None:
    with ModelServer(tmp_path / "cdn") as cdn, ModelServer(tmp_path / "hub") as hub:
        sha = cdn.add_file("blobs/m.bin", MiB)
        hub.add_file("org/repo/m.bin", MiB)  # same bytes: the hub's X-Linked-Etag is the blob's sha256
        hub_path = "/org/repo/resolve/main/m.bin"
        hub.set_fault(hub_path, Fault(redirect_to=f"{cdn.url}/blobs/m.bin", require_auth="hf_secret"))
        cfg = DownloaderConfig(
            connect_timeout=2.0, stall_timeout=1.0, retry_base_delay=0.01, retry_max_delay=0.05, hf_token="hf_secret"
        )
        url = hub.url + hub_path
        out = download(url, dest, cfg, token_origin=origin_of(url))
        assert out.result is not None and out.result.sha256 == sha
        assert hub.records(hub_path)[0].headers.get("authorization") == "Bearer hf_secret"
        assert all("authorization" not in r.headers for r in cdn.records())


def test_token_not_sent_to_other_hosts(model_server: ModelServer, dest: Path) -> None:
    model_server.add_file("x/m.bin", 1024)
    cfg = DownloaderConfig(hf_token="hf_secret", retry_base_delay=0.01)
    out = download(model_server.url + "/x/m.bin", dest, cfg, token_origin="https://huggingface.co")
    assert out.result is not None
    assert "authorization" not in model_server.records()[0].headers


def test_insufficient_disk_is_refused_before_writing(model_server: ModelServer, dest: Path) -> None:
    model_server.add_file("org/repo/m.bin", 2 * MiB)

    async def go() -> DownloadError | None:
        tracker = DownloadTracker()
        tracker.start_download("dl-test", "x")
        async with httpx.AsyncClient() as client:
            downloader = Downloader(client, FAST, disk_free=lambda _d: MiB)  # less than the file needs
            try:
                url = model_server.hub_url("org/repo", "m.bin")
                await downloader.run(DownloadJob("dl-test", url, dest), tracker)
            except DownloadError as exc:
                return exc
            finally:
                downloader.close()
        return None

    err = asyncio.run(go())
    assert err is not None and err.code == "INSUFFICIENT_DISK"
    assert not dest.exists()
    assert part_path(dest).stat().st_size == 0  # nothing was written


def test_short_body_is_resumed_not_accepted(model_server: ModelServer, dest: Path) -> None:
    sha = model_server.add_file("org/repo/m.bin", 2 * MiB)
    path = "/org/repo/resolve/main/m.bin"
    model_server.set_fault(path, Fault(short_body=MiB))
    out = download(model_server.url + path, dest)
    assert out.result is not None and out.result.sha256 == sha


def test_unknown_length_download_completes(tmp_path: Path, dest: Path) -> None:
    """A chunked response with no Content-Length: total unknown, percent None, still verified."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = b"x" * 300_000

    class Chunked(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 65536):
                piece = body[i : i + 65536]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Chunked)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = download(f"http://127.0.0.1:{server.server_address[1]}/m.bin", dest)
    finally:
        server.shutdown()
        server.server_close()
    assert out.result is not None and out.result.sha256 == hashlib.sha256(body).hexdigest()
    assert all(e.data.get("percent") is None for e in out.events if e.event == "progress")


def test_retry_helpers() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    delays = [backoff_delay(n, 0.5, 30.0, rand=lambda: 1.0) for n in range(1, 9)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0] and max(delays) == 30.0
    assert backoff_delay(3, 0.5, 30.0, rand=lambda: 0.0) == 1.0  # jitter keeps at least half


SEGMENTED = DownloaderConfig(
    connect_timeout=2.0,
    stall_timeout=0.5,
    max_attempts=4,
    retry_base_delay=0.01,
    retry_max_delay=0.05,
    segments=4,
    segment_min_bytes=256 * 1024,
    write_batch_bytes=64 * 1024,
)


def range_starts(server: ModelServer, path: str) -> list[int]:
    starts = []
    for record in server.records(path):
        if record.range:
            starts.append(int(record.range.removeprefix("bytes=").split("-")[0]))
    return starts


def test_segmented_download_uses_parallel_ranges(model_server: ModelServer, dest: Path) -> None:
    size = 4 * MiB + 12345
    sha = model_server.add_file("org/repo/m.bin", size)
    path = "/org/repo/resolve/main/m.bin"
    out = download(model_server.url + path, dest, SEGMENTED)
    assert out.result is not None and out.result.sha256 == sha and out.result.size == size
    records = model_server.records(path)
    assert records[0].range == "bytes=0-0"  # the probe
    starts = range_starts(model_server, path)[1:]
    assert len(starts) >= 4 and len(set(starts)) == len(starts)  # distinct chunks over several requests
    assert all(r.status == 206 for r in records)
    assert all(r.headers.get("if-range") for r in records[1:])
    assert model_server.total_bytes_sent(path) == size  # nothing fetched twice
    seen = bytes_seen(out.events)
    assert seen == sorted(seen) and seen[-1] == size


def test_segmented_chunk_that_drops_resumes_on_its_own(model_server: ModelServer, dest: Path) -> None:
    size = 4 * MiB
    sha = model_server.add_file("org/repo/m.bin", size)
    path = "/org/repo/resolve/main/m.bin"
    model_server.set_fault(path, Fault(drop_after=100 * 1024, drop_times=3))
    out = download(model_server.url + path, dest, SEGMENTED)
    assert out.result is not None and out.result.sha256 == sha
    assert out.result.resumed >= 3
    seen = bytes_seen(out.events)
    assert seen == sorted(seen)
    assert model_server.total_bytes_sent(path) - size < 3 * 64 * 1024 + 1  # only in-flight bytes again


def test_server_ignoring_ranges_gets_one_connection(model_server: ModelServer, dest: Path) -> None:
    sha = model_server.add_file("org/repo/m.bin", 2 * MiB)
    path = "/org/repo/resolve/main/m.bin"
    model_server.set_fault(path, Fault(ignore_range=True))
    out = download(model_server.url + path, dest, SEGMENTED)
    assert out.result is not None and out.result.sha256 == sha
    assert [r.status for r in model_server.records(path)] == [200]


def test_remote_change_during_segmented_download_restarts_whole(model_server: ModelServer, dest: Path) -> None:
    sha = model_server.add_file("org/repo/m.bin", 2 * MiB)
    path = "/org/repo/resolve/main/m.bin"
    model_server.set_fault(path, Fault(change_etag_after=2))
    out = download(model_server.url + path, dest, SEGMENTED)
    assert out.result is not None and out.result.sha256 == sha
    assert 200 in [r.status for r in model_server.records(path)]  # a ranged request got the whole file
    seen = bytes_seen(out.events)
    assert seen == sorted(seen)


def test_small_file_with_ranges_stays_on_one_connection(model_server: ModelServer, dest: Path) -> None:
    sha = model_server.add_file("org/repo/m.bin", 300 * 1024)
    path = "/org/repo/resolve/main/m.bin"
    out = download(model_server.url + path, dest, SEGMENTED)
    assert out.result is not None and out.result.sha256 == sha
    assert [r.range for r in model_server.records(path)] == ["bytes=0-0", "bytes=1-"]


# far above the capped server below, so it splits
WATCHED = dataclasses.replace(SEGMENTED, stall_timeout=2.0, split_below_bps=100 * MiB)


def test_slow_connection_is_split_once_watched(model_server: ModelServer, dest: Path) -> None:
    size = 3 * MiB
    sha = model_server.add_file("org/repo/m.bin", size)
    path = "/org/repo/resolve/main/m.bin"
    model_server.set_fault(path, Fault(rate_bps=MiB))
    out = download(model_server.url + path, dest, WATCHED)
    assert out.result is not None and out.result.sha256 == sha and out.result.size == size
    records = model_server.records(path)
    assert records[0].range == "bytes=0-"  # no probe of its own: the first request is the whole file
    starts = range_starts(model_server, path)[1:]
    assert len(starts) >= 4 and len(set(starts)) == len(starts) and min(starts) > 0
    assert all(r.headers.get("if-range") for r in records[1:])
    seen = bytes_seen(out.events)
    assert seen == sorted(seen) and seen[-1] == size


def test_fast_connection_is_never_split(model_server: ModelServer, dest: Path) -> None:
    sha = model_server.add_file("org/repo/m.bin", 4 * MiB)
    path = "/org/repo/resolve/main/m.bin"
    config = DownloaderConfig(
        connect_timeout=2.0, stall_timeout=2.0, segments=4, segment_min_bytes=256 * 1024, split_below_bps=1
    )
    out = download(model_server.url + path, dest, config)
    assert out.result is not None and out.result.sha256 == sha
    assert [r.range for r in model_server.records(path)] == ["bytes=0-"]
    assert model_server.total_bytes_sent(path) == 4 * MiB


def test_watched_small_file_is_one_request(model_server: ModelServer, dest: Path) -> None:
    sha = model_server.add_file("org/repo/m.bin", 300 * 1024)
    path = "/org/repo/resolve/main/m.bin"
    model_server.set_fault(path, Fault(rate_bps=MiB))
    out = download(model_server.url + path, dest, WATCHED)
    assert out.result is not None and out.result.sha256 == sha
    assert [r.range for r in model_server.records(path)] == ["bytes=0-"]  # too small to split, however slow


def test_cancel_while_the_body_thread_waits_on_a_stalled_server(model_server: ModelServer, dest: Path) -> None:
    """The body is read on a worker thread: a cancel must wake it (the socket is shut down), not wait
    for the 30 s stall timeout, and leave the partial with what had arrived."""
    model_server.add_file("org/repo/m.bin", 2 * MiB)
    path = "/org/repo/resolve/main/m.bin"
    model_server.set_fault(path, Fault(stall_after=300 * 1024))
    config = DownloaderConfig(stall_timeout=30.0, write_batch_bytes=64 * 1024, thread_above_bps=0)

    async def go() -> None:
        tracker = DownloadTracker(progress_interval=0.0)
        arrived = asyncio.Event()
        tracker.add_listener(lambda _s, e: e.data.get("bytes", 0) >= 300 * 1024 and arrived.set())
        tracker.start_download("dl-test", model_server.url + path)
        tracker.set_status("dl-test", DownloadStatus.STARTING)
        async with httpx.AsyncClient(timeout=Downloader.timeouts(config)) as client:
            downloader = Downloader(client, config)
            try:
                job = DownloadJob("dl-test", model_server.url + path, dest)
                task = asyncio.create_task(downloader.run(job, tracker))
                await asyncio.wait_for(arrived.wait(), 10)
                task.cancel()
                done, _ = await asyncio.wait([task], timeout=10)
                assert done, "the cancel waited for the stall timeout"
                assert task.cancelled()
            finally:
                downloader.close()

    asyncio.run(go())
    assert part_path(dest).stat().st_size == 300 * 1024


def test_fast_body_moves_to_a_worker_thread_with_range(model_server: ModelServer, dest: Path) -> None:
    """A body that proves fast goes on from where it is, on a worker thread: a second request with Range
    and If-Range; nothing is lost or counted twice, and progress never goes back."""
    size = 6 * MiB
    sha = model_server.add_file("org/repo/m.bin", size)
    path = "/org/repo/resolve/main/m.bin"
    model_server.set_fault(path, Fault(rate_bps=8 * MiB))  # long enough for a window to close first
    config = dataclasses.replace(FAST, thread_above_bps=1, thread_min_rest=256 * 1024, write_batch_bytes=64 * 1024)
    out = download(model_server.url + path, dest, config)
    assert out.result is not None and out.result.sha256 == sha and out.result.resumed == 0
    records = model_server.records(path)
    assert len(records) == 2 and records[0].range == "bytes=0-"
    moved_at = range_starts(model_server, path)[1]
    assert 0 < moved_at < size and records[1].headers.get("if-range")
    seen = bytes_seen(out.events)
    assert seen == sorted(seen) and seen[-1] == size


@pytest.mark.parametrize("fault", ["drop", "stall"])
def test_threaded_body_resumes_after_a_drop_or_stall(model_server: ModelServer, dest: Path, fault: str) -> None:
    size = 3 * MiB
    sha = model_server.add_file("org/repo/m.bin", size)
    path = "/org/repo/resolve/main/m.bin"
    model_server.set_fault(path, Fault(drop_after=MiB) if fault == "drop" else Fault(stall_after=MiB, stall_times=1))
    config = dataclasses.replace(FAST, thread_above_bps=0, write_batch_bytes=64 * 1024)
    out = download(model_server.url + path, dest, config)
    assert out.result is not None and out.result.sha256 == sha and out.result.resumed == 1
    assert range_starts(model_server, path) == [0, MiB]


def test_a_large_peer_blob_is_read_on_a_worker_thread_from_its_first_byte(
    model_server: ModelServer, dest: Path
) -> None:
    """A peer's blob of at least `thread_min_rest` starts on a worker thread: one request, where a hub file
    of the same pace starts on the loop and moves to a thread with a second one (the test above)."""
    size = 6 * MiB
    sha = model_server.add_file("org/repo/p.bin", size)
    path = "/org/repo/resolve/main/p.bin"
    model_server.set_fault(path, Fault(rate_bps=8 * MiB))  # (a loop's rate window would close first)
    config = dataclasses.replace(
        FAST, stall_timeout=5.0, thread_above_bps=1, thread_min_rest=256 * 1024, write_batch_bytes=64 * 1024
    )  # (a stall would resume with a second request: not what is asserted below)
    out = download(model_server.url + path, dest, config, peer=True, total=size)
    assert out.result is not None and out.result.sha256 == sha
    assert [r.range for r in model_server.records(path)] == ["bytes=0-"]
    seen = bytes_seen(out.events)
    assert seen == sorted(seen) and seen[-1] == size


def test_a_large_peer_blob_with_mirrors_probes_one_byte_then_splits(model_server: ModelServer, dest: Path) -> None:
    """With mirrors named, a peer's large blob is split at once: the one-byte probe is read on the loop
    (not on a thread: that large blob would go there), then ranges; a mirror that refuses is no source."""
    size = 3 * MiB
    sha = model_server.add_file("org/repo/p.bin", size)
    path = "/org/repo/resolve/main/p.bin"
    config = dataclasses.replace(
        FAST, segments=4, segment_min_bytes=256 * 1024, thread_min_rest=256 * 1024, write_batch_bytes=64 * 1024
    )
    refused = f"http://127.0.0.1:{free_port()}/blob"  # (nothing listens there)
    out = download(model_server.url + path, dest, config, peer=True, total=size, pinned=True, mirrors=(refused,))
    assert out.error is None and out.result is not None and out.result.sha256 == sha
    ranges = [r.range for r in model_server.records(path)]
    assert ranges[0] == "bytes=0-0" and len(ranges) > 2, ranges
