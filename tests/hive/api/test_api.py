"""The hive's /v2 API over a real socket: routes, errors, dedupe, cancel, and every SSE rule."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from services.modelserver.server import Fault, ModelServer
from tests import layout
from tests.support import Hold, ServerThread, wait_until

MiB = 1024 * 1024
HubRef = Callable[..., str]


def start(hive: ServerThread, ref: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{hive.url}/v2/downloads", json={"model_ref": ref, **body}, timeout=10)


def state(hive: ServerThread, download_id: str) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"{hive.url}/v2/downloads/{download_id}", timeout=10).json()
    return result


def wait_status(hive: ServerThread, download_id: str, *statuses: str, timeout: float = 20) -> dict[str, Any]:
    return wait_until(
        lambda: (s := state(hive, download_id))["status"] in statuses and s, timeout, what=f"status in {statuses}"
    )


def events(
    url: str,
    headers: dict[str, str] | None = None,
    limit: int = 10_000,
    on_first: Callable[[], None] | None = None,
) -> list[ServerSentEvent]:
    """Read a per-download stream to its end (bounded); `on_first` runs once the first event is in."""
    seen: list[ServerSentEvent] = []
    with httpx.Client(timeout=httpx.Timeout(10, read=30)) as client:
        with connect_sse(client, "GET", url, headers=headers or {}) as source:
            for sse in source.iter_sse():
                if not sse.data:  # httpx-sse yields an empty event after a keep-alive comment
                    continue
                seen.append(sse)
                if len(seen) == 1 and on_first is not None:
                    on_first()
                if len(seen) >= limit:
                    break
    return seen


def started_moving(hive: ServerThread, download_id: str) -> None:
    """Wait until the download has its first bytes (under a Hold it stays there)."""
    wait_until(lambda: state(hive, download_id)["bytes_downloaded"] > 0, what="bytes arrive")


@pytest.fixture
def hive(make_hive: Callable[..., ServerThread]) -> ServerThread:
    return make_hive()


@pytest.fixture
def hub_ref(model_server: ModelServer) -> HubRef:
    seeds = itertools.count(1)  # files of one test differ (same bytes would be one blob, fetched once)

    def _ref(name: str = "m.bin", size: int = MiB, rate: int | None = None) -> str:
        model_server.add_file(f"org/repo/{name}", size, seed=next(seeds))
        if rate:
            model_server.set_fault(f"/org/repo/resolve/main/{name}", Fault(rate_bps=rate))
        return f"hf:org/repo::file={name}"

    return _ref


def test_download_to_complete_with_stream(hive: ServerThread, model_server: ModelServer, hub_ref: HubRef) -> None:
    ref = hub_ref(size=2 * MiB, rate=8 * MiB)
    with Hold(hive.url) as hold:  # so the stream sees the download under way, however late it connects
        resp = start(hive, ref)
        assert resp.status_code == 202
        body = resp.json()
        assert body["download_id"].startswith("dl-") and body["hive_id"] == "hive-0"
        assert body["status"] in ("queued", "starting")
        started_moving(hive, body["download_id"])
        seen = events(f"{hive.url}/v2/downloads/{body['download_id']}/stream", on_first=hold.release)
    kinds = [e.event for e in seen]
    assert kinds[-1] == "complete" and kinds.count("complete") == 1
    assert set(kinds[:-1]) == {"progress"}
    ids = [int(e.id) for e in seen]
    assert ids == sorted(set(ids))  # strictly increasing
    data = [json.loads(e.data) for e in seen]
    assert [d["bytes"] for d in data] == sorted(d["bytes"] for d in data)
    assert any(d.get("status") == "downloading" and 0 < d["bytes"] < 2 * MiB for d in data[:-1])
    progress = next(d for d in data if d.get("status") == "downloading")
    assert {"download_id", "bytes", "total", "speed_bps", "eta_secs", "percent", "status"} <= progress.keys()
    final = data[-1]
    assert final["bytes"] == final["total"] == 2 * MiB
    assert {"duration_secs", "sha256", "path"} <= final.keys()
    path = Path(final["path"])
    assert path.read_bytes() == (model_server.root / "org/repo/m.bin").read_bytes()
    got = state(hive, body["download_id"])
    assert got["status"] == "complete" and got["percent"] == 100.0 and got["sha256"] == final["sha256"]
    assert got["completed_at"].endswith("Z")


def test_same_file_while_active_returns_existing(hive: ServerThread, hub_ref: HubRef) -> None:
    ref = hub_ref(size=2 * MiB, rate=2 * MiB)
    with Hold(hive.url):  # still active when the second request comes, however slow the machine
        first = start(hive, ref)
        second = start(hive, ref)
    assert first.status_code == 202 and second.status_code == 200
    assert second.json()["download_id"] == first.json()["download_id"]
    httpx.delete(f"{hive.url}/v2/downloads/{first.json()['download_id']}")


def test_file_already_on_disk_is_complete_at_once(hive: ServerThread, hub_ref: HubRef) -> None:
    ref = hub_ref()
    first = start(hive, ref).json()
    done = wait_status(hive, first["download_id"], "complete")
    again = start(hive, ref)
    assert again.status_code == 200
    body = again.json()
    assert body["status"] == "complete" and body["download_id"] != first["download_id"]
    assert body["sha256"] == done["sha256"]


def assert_nothing_left(models: Path, digest: str, final: Path) -> None:
    """Neither the file nor its blob nor its partial (or the partial's notes) is on disk."""
    assert not final.exists() and not final.is_symlink()
    assert not layout.blob(models, digest).exists()
    assert not layout.partial(models, digest).exists() and not layout.notes(models, digest).exists()
    assert layout.leftover_partials(models) == []


def test_cancel_stops_and_removes_partial(
    hive: ServerThread, model_server: ModelServer, hub_ref: HubRef, tmp_path: Path
) -> None:
    ref = hub_ref(size=8 * MiB, rate=MiB)
    models, digest = tmp_path / "models-0", model_server.sha256_of("org/repo/m.bin")
    with Hold(hive.url):  # cancelled mid-transfer, however slow the machine
        body = start(hive, ref).json()
        download_id = body["download_id"]
        started_moving(hive, download_id)
        assert layout.partial(models, digest).is_file()  # the partial is where the cancel must remove it from
        resp = httpx.delete(f"{hive.url}/v2/downloads/{download_id}", timeout=10)
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    final = layout.hub_file(models, "m.bin")
    assert resp.json()["path"] == str(final)
    assert_nothing_left(models, digest, final)
    seen = events(f"{hive.url}/v2/downloads/{download_id}/stream")
    assert [e.event for e in seen] == ["cancelled"]
    # the transfer stopped: the server's byte count no longer grows
    sent = model_server.total_bytes_sent()
    assert sent < 8 * MiB
    # cancelling again is idempotent; cancelling a finished download is a conflict
    assert httpx.delete(f"{hive.url}/v2/downloads/{download_id}").status_code == 200


def test_cancel_of_a_segmented_download_stops_every_connection(
    make_hive: Callable[..., ServerThread], model_server: ModelServer, hub_ref: HubRef, tmp_path: Path
) -> None:
    """The segment workers end with the cancel: none goes on fetching (or writing to a closed file)."""
    hive = make_hive(segments=4, segment_min_bytes=256 * 1024)
    ref = hub_ref(name="seg.bin", size=16 * MiB, rate=256 * 1024)  # each connection capped: 16 s at 4
    models, digest = tmp_path / "models-0", model_server.sha256_of("org/repo/seg.bin")
    body = start(hive, ref).json()
    download_id = body["download_id"]
    wait_until(  # (the one-byte probes aside)
        lambda: sum(1 for r in model_server.records() if r.status == 206 and r.range != "bytes=0-0") >= 2,
        10,
        what="several connections",
    )
    assert layout.partial(models, digest).is_file() and layout.read_notes(models, digest).get("segments")
    resp = httpx.delete(f"{hive.url}/v2/downloads/{download_id}", timeout=10)
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    assert model_server.wait_idle(timeout=5), "a segment kept downloading after the cancel"
    seg_path = "/org/repo/resolve/main/seg.bin"
    requests = len(model_server.records(seg_path))
    assert_nothing_left(models, digest, layout.hub_file(models, "seg.bin"))
    again = start(hive, hub_ref(name="after.bin", size=64 * 1024))  # the hive is well: a new download completes
    wait_status(hive, again.json()["download_id"], "complete")
    assert len(model_server.records(seg_path)) == requests  # and the cancelled one asked for nothing more


def test_cancel_finished_is_conflict(hive: ServerThread, hub_ref: HubRef) -> None:
    download_id = start(hive, hub_ref()).json()["download_id"]
    wait_status(hive, download_id, "complete")
    resp = httpx.delete(f"{hive.url}/v2/downloads/{download_id}")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "ALREADY_FINISHED"


def test_failed_download_reports_code_and_leaves_nothing(
    hive: ServerThread, model_server: ModelServer, hub_ref: HubRef, tmp_path: Path
) -> None:
    ref = hub_ref()
    model_server.set_fault("/org/repo/resolve/main/m.bin", Fault(always_status=404))
    models, digest = tmp_path / "models-0", model_server.sha256_of("org/repo/m.bin")
    body = start(hive, ref).json()
    seen = events(f"{hive.url}/v2/downloads/{body['download_id']}/stream")
    assert seen[-1].event == "error"
    err = json.loads(seen[-1].data)
    assert err["code"] == "NOT_FOUND" and {"download_id", "error", "bytes", "total"} <= err.keys()
    got = state(hive, body["download_id"])
    assert got["status"] == "failed" and got["error_code"] == "NOT_FOUND"
    assert_nothing_left(models, digest, layout.hub_file(models, "m.bin"))
    assert not layout.repo_dir(models).exists() or not any(layout.repo_dir(models).rglob("*"))


def test_list_newest_first_and_filter(hive: ServerThread, hub_ref: HubRef) -> None:
    ids = [start(hive, hub_ref(f"f{i}.bin", 64 * 1024)).json()["download_id"] for i in range(3)]
    for download_id in ids:
        wait_status(hive, download_id, "complete")
    listed = httpx.get(f"{hive.url}/v2/downloads").json()["downloads"]
    assert [d["download_id"] for d in listed] == list(reversed(ids))
    assert httpx.get(f"{hive.url}/v2/downloads", params={"status": "failed"}).json()["downloads"] == []
    bad = httpx.get(f"{hive.url}/v2/downloads", params={"status": "bogus"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "INVALID_REQUEST"


BAD_REFS = [
    "hf:org/repo::file=../../etc/passwd",
    "hf:org/repo::file=/etc/passwd",
    "hf:org/repo::file=a\\b",
    "hf:org/repo::file=a\x00b",
    "hf:org/repo::file=a\nb",
    "http://127.0.0.1:1/a/%2e%2e/b",
    "http://127.0.0.1:1/a%2fb",
    "ftp://example.com/x",
    "file:///etc/passwd",
    "hf:a/b/c::file=x",  # (hf:org::file=x is the repo `org` without a namespace, as huggingface_hub has it)
    "just-a-name",
    "x" * 5000,
]


@pytest.mark.parametrize("ref", BAD_REFS)
def test_bad_refs_are_refused_without_side_effects(
    hive: ServerThread, model_server: ModelServer, tmp_path: Path, ref: str
) -> None:
    resp = start(hive, ref)
    assert resp.status_code == 422
    assert set(resp.json()["error"]) >= {"code", "message"}
    assert "Traceback" not in resp.text
    assert model_server.records() == []
    assert httpx.get(f"{hive.url}/v2/downloads").json()["downloads"] == []
    assert not any(p.is_file() for p in (tmp_path / "models-0").rglob("*") if ".rbee" not in p.parts)


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"sha256": "abc"}',
        b'{"model_ref": 7}',
        b'{"model_ref": "hf:o/r::file=a", "sha256": "xyz"}',
    ],
)
def test_malformed_bodies_get_json_errors(hive: ServerThread, content: bytes) -> None:
    resp = httpx.post(f"{hive.url}/v2/downloads", content=content, headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "INVALID_REQUEST"


def test_unknown_ids_are_404_json(hive: ServerThread) -> None:
    for method, path in [("GET", "dl-0000"), ("DELETE", "dl-0000"), ("GET", "dl-0000/stream")]:
        resp = httpx.request(method, f"{hive.url}/v2/downloads/{path}")
        assert resp.status_code == 404, path
        assert resp.headers["content-type"].startswith("application/json")
        assert resp.json()["error"]["code"] == "NOT_FOUND"


def test_last_event_id_resume_and_204_after_terminal(hive: ServerThread, hub_ref: HubRef) -> None:
    with Hold(hive.url):  # the first connection sees the download running, not already ended
        download_id = start(hive, hub_ref(size=2 * MiB, rate=4 * MiB)).json()["download_id"]
        url = f"{hive.url}/v2/downloads/{download_id}/stream"
        started_moving(hive, download_id)
        first = events(url, limit=1)
    assert first[-1].event == "progress"
    last_id = first[-1].id
    rest = events(url, headers={"Last-Event-ID": last_id})
    assert all(int(e.id) > int(last_id) for e in rest)
    assert rest[-1].event == "complete"
    terminal_id = rest[-1].id
    with httpx.Client() as client:
        assert client.get(url, headers={"Last-Event-ID": terminal_id}).status_code == 204
        assert client.get(url, headers={"Last-Event-ID": str(int(terminal_id) + 5)}).status_code == 204
    # one id short of the terminal: exactly the terminal event, no repeats
    again = events(url, headers={"Last-Event-ID": str(int(terminal_id) - 1)})
    assert [(e.event, e.id) for e in again] == [("complete", terminal_id)]
    # a fresh connection after the end gets just the terminal event
    assert [e.event for e in events(url)] == ["complete"]
    # a Last-Event-ID that is not ours is ignored as junk is: Unicode digits too ('²'.isdigit() is True;
    # a header's bytes are read as latin-1, so b"\xb2" is '²' to the server)
    for junk in ("²", "1²", "¹²³", "abc"):
        assert [e.event for e in events(url, headers={"Last-Event-ID": junk.encode("latin-1")})] == ["complete"], junk
    all_url = f"{hive.url}/v2/downloads/stream"
    with httpx.Client(timeout=10) as client, client.stream("GET", all_url, headers={"Last-Event-ID": b"\xb2"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")


def test_new_connection_gets_current_state_at_once(hive: ServerThread, hub_ref: HubRef) -> None:
    with Hold(hive.url):  # still downloading when the connection comes
        download_id = start(hive, hub_ref(size=4 * MiB, rate=MiB)).json()["download_id"]
        started_moving(hive, download_id)
        with httpx.Client(timeout=5) as client:
            with connect_sse(client, "GET", f"{hive.url}/v2/downloads/{download_id}/stream") as source:
                first = next(source.iter_sse())
    data = json.loads(first.data)
    assert first.event == "progress" and data["status"] == "downloading" and data["bytes"] > 0
    httpx.delete(f"{hive.url}/v2/downloads/{download_id}")


def test_keepalive_comment_on_idle_stream(make_hive: Callable[..., ServerThread], hub_ref: HubRef) -> None:
    hive = make_hive(keepalive_secs=0.2)
    lines: list[str] = []
    with Hold(hive.url):  # the stream stays open and idle until the comment comes
        download_id = start(hive, hub_ref(size=MiB, rate=64 * 1024)).json()["download_id"]
        with httpx.Client(timeout=5) as client:
            with client.stream("GET", f"{hive.url}/v2/downloads/{download_id}/stream") as resp:
                assert resp.headers["content-type"].startswith("text/event-stream")
                for line in resp.iter_lines():
                    lines.append(line)
                    if line.startswith(":") or len(lines) > 500:
                        break
    assert any(line.startswith(":") for line in lines)
    httpx.delete(f"{hive.url}/v2/downloads/{download_id}")


def test_progress_interval_limits_event_rate(make_hive: Callable[..., ServerThread], hub_ref: HubRef) -> None:
    hive = make_hive(progress_interval=0.5)
    with Hold(hive.url) as hold:  # the stream is connected before the ~1 s of transfer begins
        download_id = start(hive, hub_ref(size=2 * MiB, rate=2 * MiB)).json()["download_id"]
        started_moving(hive, download_id)
        seen = events(f"{hive.url}/v2/downloads/{download_id}/stream", on_first=hold.release)
    moving = [e for e in seen if e.event == "progress" and json.loads(e.data)["status"] == "downloading"]
    # ~1 s of transfer at one event per 0.5 s: a handful, not one per chunk
    assert 1 <= len(moving) <= 8, len(moving)


def test_hive_wide_stream(hive: ServerThread, hub_ref: HubRef) -> None:
    hold = Hold(hive.url)  # `a` is still active when the reader connects, however late that is
    a = start(hive, hub_ref("a.bin", 2 * MiB, rate=MiB)).json()["download_id"]
    got: list[ServerSentEvent] = []
    done = threading.Event()

    def reader() -> None:
        with httpx.Client(timeout=httpx.Timeout(5, read=20)) as client:
            with connect_sse(client, "GET", f"{hive.url}/v2/downloads/stream") as source:
                for sse in source.iter_sse():
                    if not sse.data:
                        continue
                    got.append(sse)
                    ids = {json.loads(e.data)["download_id"] for e in got if e.event == "complete"}
                    if len(ids) == 2 or len(got) > 5000:
                        break
        done.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    wait_until(lambda: got, what="first event on hive-wide stream")
    assert json.loads(got[0].data)["download_id"] == a  # current state of the active download first
    b = start(hive, hub_ref("b.bin", 64 * 1024)).json()["download_id"]
    hold.release()
    assert done.wait(30)
    completes = {json.loads(e.data)["download_id"] for e in got if e.event == "complete"}
    assert completes == {a, b}


def test_slow_reader_does_not_slow_download(hive: ServerThread, hub_ref: HubRef) -> None:
    """A client that connects and never reads: the download still completes. (What such a reader may hold,
    one pending event per download, is asserted in tests/hive/tracker/test_subscribers.py.)"""
    download_id = start(hive, hub_ref(size=4 * MiB, rate=8 * MiB)).json()["download_id"]
    with httpx.Client(timeout=5) as client:
        with client.stream("GET", f"{hive.url}/v2/downloads/{download_id}/stream"):
            wait_status(hive, download_id, "complete")


@pytest.fixture
def token_hive(make_hive: Callable[..., ServerThread]) -> Iterator[ServerThread]:
    yield make_hive(api_token="s3cret")


def test_api_token_enforced(token_hive: ServerThread) -> None:
    assert httpx.get(f"{token_hive.url}/healthz").status_code == 200
    resp = httpx.get(f"{token_hive.url}/v2/downloads")
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "UNAUTHORIZED"
    wrong = httpx.get(f"{token_hive.url}/v2/downloads", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = httpx.get(f"{token_hive.url}/v2/downloads", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert httpx.get(f"{token_hive.url}/metrics").status_code == 401


def test_health_and_metrics(hive: ServerThread, hub_ref: HubRef) -> None:
    download_id = start(hive, hub_ref()).json()["download_id"]
    wait_status(hive, download_id, "complete")
    health = httpx.get(f"{hive.url}/healthz").json()
    assert health["status"] == "ok" and health["hive_id"] == "hive-0"
    text = httpx.get(f"{hive.url}/metrics").text
    assert 'rbee_hive_downloads{status="complete"} 1.0' in text
