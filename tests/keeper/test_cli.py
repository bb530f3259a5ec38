"""rbee-keeper end to end: every command and exit code, plain/JSON/bar output, reconnects and Ctrl-C.

Most tests drive the keeper against the real queen, hives and model server. A small scripted fake queen is
used only where it is the honest way to force an edge case: streams that drop or resend events, a stream
that never comes back, a download that fails with a given code.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from services.keeper.cli import run
from services.keeper.context import (
    EXIT_CANCELLED,
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from services.modelserver.server import Fault, ModelServer
from services.queen.main import create_app as create_queen
from services.queen.settings import QueenSettings
from tests.keeper.support import interrupt_keeper, keeper, keeper_on_a_terminal, running_keeper
from tests.support import (
    ServerThread,
    ServiceProcess,
    free_port,
    held_until,
    read_until,
    serve,
    wait_until,
)

# --------------------------------------------------------------------------- the scripted fake queen


@dataclass
class Drop:
    """How one stream connection misbehaves: after `after` events, `raise` (abort) or `end` (close cleanly)."""

    after: int
    how: str = "raise"


@dataclass
class FakeDownload:
    state: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]  # ids are 1..n
    plan: list[Drop | int] = field(default_factory=list)  # per connection: a Drop, or an error status to answer
    live: bool = False  # after the script, keep sending progress until the download is cancelled
    resend_last: bool = True  # on reconnect, first resend the event the client last saw (as "current state")
    interval: float = 0.0
    last_event_ids: list[str | None] = field(default_factory=list)

    def terminal_id(self) -> int | None:
        for i, (kind, _) in enumerate(self.events, start=1):
            if kind != "progress":
                return i
        return None


def _sse(event_id: int, kind: str, payload: dict[str, Any]) -> bytes:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status)


class FakeQueen:
    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.downloads: dict[str, FakeDownload] = {}
        self.next_script: FakeDownload | None = None
        self.hives: list[dict[str, Any]] = [
            {"hive_id": "hive-a", "url": "http://127.0.0.1:1", "healthy": True, "active_downloads": 1}
        ]
        self.unreachable: list[str] = []
        self.started: list[dict[str, Any]] = []  # the bodies of POST /v1/downloads
        self.app = self._build()

    def add(self, download: FakeDownload) -> FakeDownload:
        self.downloads[download.state["download_id"]] = download
        return download

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def auth(request: Request, call_next: Any) -> Response:
            if self.token and request.headers.get("authorization") != f"Bearer {self.token}":
                return _error(401, "UNAUTHORIZED", "missing or wrong bearer token")
            response: Response = await call_next(request)
            return response

        @app.get("/v1/hives")
        async def hives() -> dict[str, Any]:
            return {"hives": self.hives}

        @app.post("/v1/downloads")
        async def start(body: dict[str, Any]) -> Response:
            self.started.append(body)
            ref = str(body.get("model_ref", ""))
            if not ref.startswith(("hf:", "http")):
                return _error(422, "INVALID_MODEL_REF", f"unsupported model ref {ref!r}")
            if self.next_script is None:
                return _error(503, "NO_HEALTHY_HIVE", "no healthy hive")
            download = self.add(self.next_script)
            download.state.update(model_ref=ref)
            return JSONResponse(download.state, status_code=202)

        @app.get("/v1/downloads")
        async def listing(status: str | None = None) -> dict[str, Any]:
            states = [d.state for d in self.downloads.values() if status is None or d.state["status"] == status]
            return {"downloads": states, "unreachable_hives": self.unreachable}

        @app.get("/v1/downloads/{download_id}")
        async def one(download_id: str) -> Response:
            if download_id not in self.downloads:
                return _error(404, "NOT_FOUND", f"no download {download_id!r}")
            return JSONResponse(self.downloads[download_id].state)

        @app.delete("/v1/downloads/{download_id}")
        async def cancel(download_id: str) -> Response:
            download = self.downloads.get(download_id)
            if download is None:
                return _error(404, "NOT_FOUND", f"no download {download_id!r}")
            if download.state["status"] in ("complete", "failed", "cancelled"):
                return _error(409, "ALREADY_FINISHED", "already finished", state=download.state)
            download.state["status"] = "cancelled"
            return JSONResponse(download.state)

        @app.get("/v1/downloads/{download_id}/stream")
        async def stream(download_id: str, request: Request) -> Response:
            download = self.downloads.get(download_id)
            if download is None:
                return _error(404, "NOT_FOUND", f"no download {download_id!r}")
            header = request.headers.get("last-event-id")
            connection = len(download.last_event_ids)
            download.last_event_ids.append(header)
            after = int(header) if header and header.isdigit() else None
            terminal = download.terminal_id()
            if after is not None and terminal is not None and after >= terminal:
                return Response(status_code=204)
            step = download.plan[connection] if connection < len(download.plan) else None
            if step == 204:
                return Response(status_code=204)
            if isinstance(step, int):
                return _error(step, "HIVE_UNREACHABLE", "the hive does not answer")
            return StreamingResponse(self._events(download, after, step), media_type="text/event-stream")

        return app

    async def _events(self, download: FakeDownload, after: int | None, drop: Drop | None) -> AsyncIterator[bytes]:
        start = 1 if after is None else (after if download.resend_last and after >= 1 else after + 1)
        sent = 0
        event_id = start
        for event_id, (kind, payload) in enumerate(download.events[start - 1 :], start=start):
            if drop is not None and sent >= drop.after:
                if drop.how == "raise":
                    raise ConnectionAbortedError("fake queen drops the stream")
                return
            yield _sse(event_id, kind, {"download_id": download.state["download_id"], "hive_id": "hive-a", **payload})
            sent += 1
            if kind != "progress":
                return
            if download.interval:
                await asyncio.sleep(download.interval)
        nbytes = 0
        for live_id in range(event_id + 1, event_id + 5000):  # live: bounded
            if download.state["status"] == "cancelled":
                yield _sse(live_id, "cancelled", {"download_id": download.state["download_id"], "bytes": nbytes})
                return
            nbytes += 1000
            payload = {"download_id": download.state["download_id"], "bytes": nbytes, "total": None}
            yield _sse(live_id, "progress", {**payload, "speed_bps": 10_000, "status": "downloading"})
            await asyncio.sleep(0.05)


def progress_events(n: int, total: int = 1_000_000) -> list[tuple[str, dict[str, Any]]]:
    step = total // n
    return [
        (
            "progress",
            {
                "bytes": i * step,
                "total": total,
                "speed_bps": 2_000_000,
                "eta_secs": 1,
                "percent": round(i * step * 100 / total, 2),
                "status": "downloading",
            },
        )
        for i in range(n)
    ]


def fake_download(download_id: str, events: list[tuple[str, dict[str, Any]]], **kwargs: Any) -> FakeDownload:
    state = {
        "download_id": download_id,
        "model_ref": "hf:org/repo::file=model.bin",
        "status": "downloading",
        "bytes_downloaded": 0,
        "total_bytes": 1_000_000,
        "hive_id": "hive-a",
    }
    return FakeDownload(state, events, **kwargs)


COMPLETE = ("complete", {"bytes": 1_000_000, "total": 1_000_000, "sha256": "ab" * 32, "path": "/m/model.bin"})


@pytest.fixture
def fake() -> Iterator[tuple[FakeQueen, ServerThread]]:
    queen = FakeQueen()
    with serve(queen.app) as server:
        yield queen, server


def json_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


# --------------------------------------------------------------------------- fake-queen edge cases


def test_reconnects_after_drops_with_last_event_id_without_duplicates(fake: tuple[FakeQueen, ServerThread]) -> None:
    queen, server = fake
    events = [*progress_events(10), COMPLETE]
    # first connection aborts after 3 events, the second ends cleanly after 3 more (plus the resent one)
    download = queen.add(fake_download("dl-drop", events, plan=[Drop(3, "raise"), Drop(4, "end")]))
    result = keeper("--json", "watch", "dl-drop", queen=server.url)
    assert result.code == EXIT_OK, result
    assert download.last_event_ids == [None, "3", "6"]
    lines = json_events(result.out)
    assert [e["id"] for e in lines] == list(range(1, 12))
    assert lines[-1]["event"] == "complete"
    assert "reconnect" not in result.out  # notes never pollute the JSON lines ...
    assert result.err.count("stream interrupted") == 2  # ... they go to stderr


def test_plain_watch_after_drop_prints_no_duplicate_lines(fake: tuple[FakeQueen, ServerThread]) -> None:
    queen, server = fake
    events = [*progress_events(4), ("progress", {**progress_events(4)[3][1], "status": "downloading"}), COMPLETE]
    queen.add(fake_download("dl-p", events, plan=[Drop(2, "raise")]))
    result = keeper("watch", "dl-p", queen=server.url)
    assert result.code == EXIT_OK, result
    assert "\x1b[" not in result.out + result.err
    lines = result.out.splitlines()
    assert len(lines) == len(set(lines)), lines
    assert any("stream interrupted" in line and "reconnecting" in line for line in lines)
    assert lines[-1].startswith("complete: model.bin 1.0 MB on hive-a -> /m/model.bin")


def test_stream_that_never_comes_back_gives_up_as_unreachable(fake: tuple[FakeQueen, ServerThread]) -> None:
    queen, server = fake
    download = queen.add(fake_download("dl-gone", progress_events(5), plan=[Drop(2), *[503] * 100]))
    t0 = time.monotonic()
    result = keeper("watch", "dl-gone", "--reconnect-timeout", "1", queen=server.url)
    assert result.code == EXIT_UNREACHABLE, result
    assert 0.9 < time.monotonic() - t0 < 10
    assert "could not get it back within 1s" in result.err
    assert "HIVE_UNREACHABLE" in result.err
    assert len(download.last_event_ids) >= 3  # backed off and retried, boundedly
    assert all(h == "2" for h in download.last_event_ids[1:])


def test_204_on_reconnect_falls_back_to_the_state(fake: tuple[FakeQueen, ServerThread]) -> None:
    queen, server = fake
    # The stream drops, and the reconnect says "already past the terminal event" (204): the state decides.
    download = queen.add(fake_download("dl-204", [*progress_events(2), COMPLETE], plan=[Drop(2), 204]))
    download.state.update(status="complete", bytes_downloaded=1_000_000, sha256="cd" * 32, path="/m/model.bin")
    result = keeper("--json", "watch", "dl-204", queen=server.url)
    assert result.code == EXIT_OK, result
    lines = json_events(result.out)
    assert [e["event"] for e in lines] == ["progress", "progress", "complete"]
    assert lines[-1]["id"] is None and lines[-1]["data"]["sha256"] == "cd" * 32
    assert download.last_event_ids == [None, "2"]


def test_failed_download_prints_code_and_message(fake: tuple[FakeQueen, ServerThread]) -> None:
    queen, server = fake
    error = ("error", {"bytes": 0, "total": None, "code": "NOT_FOUND", "error": "the file was not found (404)"})
    queen.next_script = fake_download("dl-fail", [*progress_events(1), error])
    result = keeper("download", "hf:org/repo::file=missing.bin", queen=server.url)
    assert result.code == EXIT_FAILED, result
    assert result.err.strip().splitlines()[-1] == "NOT_FOUND: the file was not found (404)"
    assert "Traceback" not in result.err


def test_cancelled_download_exits_3(fake: tuple[FakeQueen, ServerThread]) -> None:
    queen, server = fake
    queen.add(fake_download("dl-c", [*progress_events(2), ("cancelled", {"bytes": 10, "total": 1_000_000})]))
    result = keeper("watch", "dl-c", queen=server.url)
    assert result.code == EXIT_CANCELLED, result
    assert "cancelled: model.bin (dl-c)" in result.err


def test_token_is_sent_and_a_wrong_one_is_a_clear_error() -> None:
    queen = FakeQueen(token="s3cret")
    with serve(queen.app) as server:
        ok = keeper("hives", queen=server.url, env={"RBEE_API_TOKEN": "s3cret"})
        bad = keeper("hives", queen=server.url, env={"RBEE_API_TOKEN": "nope"})
    assert ok.code == EXIT_OK and "hive-a" in ok.out
    assert bad.code == EXIT_ERROR
    assert bad.err.strip() == (
        "rbee-keeper: UNAUTHORIZED: missing or wrong bearer token (set RBEE_API_TOKEN to the queen's token)"
    )


def test_ls_warns_about_unreachable_hives(fake: tuple[FakeQueen, ServerThread]) -> None:
    queen, server = fake
    queen.add(fake_download("dl-1", []))
    queen.unreachable = ["hive-z"]
    result = keeper("ls", queen=server.url)
    assert result.code == EXIT_OK
    assert result.out.splitlines()[0].split() == ["ID", "HIVE", "MODEL", "STATUS", "PROGRESS", "FILES", "SPEED"]
    assert "dl-1" in result.out
    assert "hive hive-z is unreachable" in result.err


def model_events(files: int, total: int = 1_000_000) -> list[tuple[str, dict[str, Any]]]:
    """A whole model's progress, one event per file done, then complete."""
    events = [
        ("progress", {**payload, "files_total": files, "files_done": i})
        for i, (_, payload) in enumerate(progress_events(files, total))
    ]
    done = {"bytes": total, "total": total, "files_total": files, "files_done": files, "path": "/m/snapshots/c0"}
    return [*events, ("complete", done)]


def test_download_of_a_whole_model_sends_the_patterns_and_shows_its_files(
    fake: tuple[FakeQueen, ServerThread],
) -> None:
    queen, server = fake
    queen.next_script = fake_download("dl-m", model_events(3))
    queen.next_script.state.update(files_total=3, files_done=0)
    argv = ["download", "hf:org/llama", "--include", "*.safetensors", "--include", "*.json", "--exclude", "*.bin"]
    result = keeper(*argv, queen=server.url)
    assert result.code == EXIT_OK, result
    assert queen.started == [
        {"model_ref": "hf:org/llama", "include": ["*.safetensors", "*.json"], "exclude": ["*.bin"]}
    ]
    lines = result.out.splitlines()
    assert lines[0] == "started org/llama on hive-a (id dl-m)"
    assert lines[1].startswith("hive-a org/llama downloading 0.0%") and lines[1].endswith(" files 0/3"), lines
    assert lines[-1] == "complete: org/llama 1.0 MB (3 files) on hive-a -> /m/snapshots/c0"

    queen.downloads.clear()
    queen.next_script = fake_download("dl-j", model_events(2))
    result = keeper("--json", "download", "hf:org/llama", queen=server.url)
    assert result.code == EXIT_OK, result
    assert queen.started[-1] == {"model_ref": "hf:org/llama"}  # no patterns: none sent
    data = [e["data"] for e in json_events(result.out)]
    assert [(d["files_done"], d["files_total"]) for d in data] == [(0, 2), (1, 2), (2, 2)]  # the events as sent


def test_ls_shows_a_models_files(fake: tuple[FakeQueen, ServerThread]) -> None:
    queen, server = fake
    queen.add(fake_download("dl-file", []))
    whole = queen.add(fake_download("dl-model", []))
    whole.state.update(model_ref="hf:org/llama", files_total=7, files_done=3)
    result = keeper("ls", queen=server.url)
    assert result.code == EXIT_OK, result
    header, *rows = result.out.splitlines()
    column = header.index("FILES")
    files = {row.split()[0]: row[column:].split()[0] for row in rows}
    assert files == {"dl-file": "-", "dl-model": "3/7"}


# --------------------------------------------------------------------------- usage and unreachable queen


def test_usage_errors_exit_2() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    assert keeper(queen=dead).code == EXIT_USAGE
    assert keeper("frobnicate", queen=dead).code == EXIT_USAGE
    assert keeper("download", "hf:o/r::file=m", "--sha256", "xyz", queen=dead).code == EXIT_USAGE
    assert keeper("ls", "--status", "weird", queen=dead).code == EXIT_USAGE
    bad_url = keeper("ls", queen="ftp://x")
    assert bad_url.code == EXIT_USAGE and "http(s)://" in bad_url.err


def test_queen_down_is_exit_4_with_one_line(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    for argv in (["ls"], ["hives"], ["watch", "dl-x"], ["cancel", "dl-x"], ["download", "hf:o/r::file=m.bin"]):
        result = keeper(*argv, queen=dead)
        assert result.code == EXIT_UNREACHABLE, (argv, result)
        assert result.err.count("\n") == 1 and f"cannot reach the queen at {dead}" in result.err
        assert "Traceback" not in result.err


def test_queen_url_from_environment() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    out, err = io.StringIO(), io.StringIO()
    assert run(["hives"], out, err, {"RBEE_QUEEN_URL": dead}) == EXIT_UNREACHABLE
    assert dead in err.getvalue()


# --------------------------------------------------------------------------- against the real queen and hives


@dataclass
class Cluster:
    queen: ServerThread
    hive: ServerThread
    model_server: ModelServer

    def ref(self, name: str, size: int, rate: int | None = None) -> tuple[str, str]:
        """A hub file of `size` bytes served at `rate` bytes/s: (its hf: ref, its sha256)."""
        sha = self.model_server.add_file(f"org/repo/{name}", size)
        if rate:
            self.model_server.set_fault(f"/org/repo/resolve/main/{name}", Fault(rate_bps=rate))
        return f"hf:org/repo::file={name}", sha

    def state(self, download_id: str) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.queen.url}/v1/downloads/{download_id}", timeout=5).json()
        return result

    @contextlib.contextmanager
    def held_until_followed(self) -> Iterator[None]:
        """The hive's downloads wait at their first chunk until the keeper follows one through the queen,
        so the keeper sees it under way however long it takes to start (not a fixed-rate race)."""

        def followed() -> bool:
            metrics = httpx.get(f"{self.queen.url}/metrics", timeout=5).text
            return 'rbee_queen_sse_clients{stream="download"} 1.0' in metrics

        with held_until([self.hive], followed):
            yield

    def start(self, ref: str) -> str:
        response = httpx.post(f"{self.queen.url}/v1/downloads", json={"model_ref": ref}, timeout=5)
        assert response.status_code == 202, response.text
        return str(response.json()["download_id"])


@pytest.fixture
def cluster(make_hive: Callable[..., ServerThread], model_server: ModelServer) -> Iterator[Cluster]:
    hive = make_hive(id="hive-a")
    settings = QueenSettings(hives={"hive-a": hive.url}, health_interval=0.2, orchestrator_id="queen-test")
    with serve(create_queen(settings)) as queen:

        def healthy() -> bool:
            hives = httpx.get(f"{queen.url}/v1/hives", timeout=5).json()["hives"]
            return any(h["hive_id"] == "hive-a" and h["healthy"] for h in hives)

        wait_until(healthy, 10, what="hive-a healthy in the queen")
        yield Cluster(queen, hive, model_server)


def test_download_plain_output_in_a_pipe(cluster: Cluster) -> None:
    ref, sha = cluster.ref("plain.bin", 3_000_000, rate=3_000_000)
    with cluster.held_until_followed():
        result = keeper("download", ref, queen=cluster.queen.url)
    assert result.code == EXIT_OK, result
    assert "\x1b[" not in result.out + result.err
    lines = result.out.splitlines()
    assert re.fullmatch(r"started plain\.bin on hive-a \(id \S+\)", lines[0]), lines
    progress = [line for line in lines if line.startswith("hive-a plain.bin downloading ")]
    assert progress, lines
    assert all(re.search(r"\d+\.\d% [\d.]+ [kM]?B/3\.0 MB [\d.]+ [kM]?B/s ETA \S+$", line) for line in progress)
    assert len(progress) <= 4  # throttled to about one a second over ~1 s
    assert lines[-1].startswith("complete: plain.bin 3.0 MB in ")
    assert lines[-1].endswith(f"(sha256 {sha})")


def test_download_json_lines_are_the_relayed_events(cluster: Cluster) -> None:
    ref, sha = cluster.ref("json.bin", 1_000_000, rate=2_000_000)
    with cluster.held_until_followed():
        result = keeper("--json", "download", ref, queen=cluster.queen.url)
    assert result.code == EXIT_OK, result
    lines = json_events(result.out)
    ids = [e["id"] for e in lines]
    assert ids == sorted(set(ids)) and len(ids) >= 2
    assert {e["event"] for e in lines[:-1]} == {"progress"}
    last = lines[-1]
    assert last["event"] == "complete" and last["data"]["sha256"] == sha
    assert all(e["data"]["orchestrator_id"] == "queen-test" and e["data"]["hive_id"] == "hive-a" for e in lines)
    assert result.err.startswith("complete: json.bin") and result.err.count("\n") == 1  # humans read stderr


def test_download_shows_a_live_bar_on_a_terminal(cluster: Cluster) -> None:
    ref, _ = cluster.ref("bar.bin", 2_000_000, rate=2_000_000)
    with cluster.held_until_followed():
        shown = keeper_on_a_terminal(
            "--queen", cluster.queen.url, "download", ref, done=b"complete: bar.bin", columns=140
        )
    assert shown.code == EXIT_OK, shown
    output = shown.out
    assert "\x1b[" in output  # cursor movement / colour: a live display
    assert "bar.bin" in output and "━" in output
    assert re.search(r"\d+\.\d% • [\d.]+ [kM]?B / 2\.0 MB • [\d.]+ [kM]?B/s • ETA \S+ • hive-a", output), output
    assert "100.0% • 2.0 MB / 2.0 MB" in output


def test_ls_hives_cancel_watch_and_their_exit_codes(cluster: Cluster) -> None:
    queen = cluster.queen.url
    ref, _ = cluster.ref("slow.bin", 50_000_000, rate=1_000_000)
    download_id = cluster.start(ref)
    wait_until(lambda: cluster.state(download_id)["status"] == "downloading", 10, what="downloading")

    hives = keeper("hives", queen=queen)
    assert hives.code == EXIT_OK
    assert hives.out.splitlines()[0].split() == ["ID", "URL", "HEALTH", "ACTIVE"]
    assert hives.out.splitlines()[1].split() == ["hive-a", cluster.hive.url, "healthy", "1"]

    listing = keeper("ls", queen=queen)
    assert listing.code == EXIT_OK
    (row,) = [line for line in listing.out.splitlines() if line.startswith(download_id)]
    assert row.split()[1:4] == ["hive-a", ref, "downloading"]
    assert re.search(r"\d+\.\d% [\d.]+ [kM]?B/50\.0 MB\s+-\s+[\d.]+ [kM]?B/s$", row), row  # FILES: - (a file)
    assert download_id not in keeper("ls", "--status", "complete", queen=queen).out
    as_json = json.loads(keeper("--json", "ls", "--status", "downloading", queen=queen).out)
    assert [d["download_id"] for d in as_json["downloads"]] == [download_id]

    cancelled = keeper("cancel", download_id, queen=queen)
    assert cancelled.code == EXIT_OK, cancelled
    assert cancelled.out.strip() == f"cancelled {download_id} (slow.bin on hive-a)"
    watched = keeper("watch", download_id, queen=queen)
    assert watched.code == EXIT_CANCELLED
    assert f"cancelled: slow.bin ({download_id})" in watched.err
    assert keeper("cancel", download_id, queen=queen).code == EXIT_OK  # cancelling twice is idempotent

    small, _ = cluster.ref("small.bin", 1000)
    done = json.loads(keeper("--json", "download", small, queen=queen).out.splitlines()[-1])
    finished = keeper("cancel", done["data"]["download_id"], queen=queen)
    assert finished.code == EXIT_ERROR
    assert (
        finished.err
        == f"rbee-keeper: download {done['data']['download_id']} already finished (complete); nothing to cancel\n"
    )

    for argv in (["watch", "dl-nope"], ["cancel", "dl-nope"]):
        missing = keeper(*argv, queen=queen)
        assert missing.code == EXIT_NOT_FOUND, missing
        assert missing.err.startswith("rbee-keeper: NOT_FOUND: ") and missing.err.count("\n") == 1


def test_refused_ref_and_failed_download(cluster: Cluster) -> None:
    queen = cluster.queen.url
    refused = keeper("download", "hf:org/repo::file=../escape.bin", queen=queen)
    assert refused.code == EXIT_USAGE
    assert refused.err.startswith("rbee-keeper: INVALID_MODEL_REF: ") and refused.err.count("\n") == 1
    no_hive = keeper("download", "hf:org/repo::file=x.bin", "--hive", "hive-nope", queen=queen)
    assert no_hive.code == EXIT_NOT_FOUND and no_hive.err.startswith("rbee-keeper: UNKNOWN_HIVE: ")
    failed = keeper("download", "hf:org/repo::file=missing.bin", queen=queen)
    assert failed.code == EXIT_FAILED, failed
    assert failed.err.strip().startswith("NOT_FOUND: ")
    assert "404" in failed.err and "Traceback" not in failed.err


@pytest.mark.parametrize("cancel", [False, True], ids=["leave-running", "cancel-on-interrupt"])
def test_ctrl_c_leaves_the_download_running_or_cancels_it(cluster: Cluster, cancel: bool) -> None:
    ref, _ = cluster.ref(f"sigint-{cancel}.bin", 50_000_000, rate=1_000_000)
    argv = ["--queen", cluster.queen.url, "download", ref, *(["--cancel-on-interrupt"] if cancel else [])]
    result = interrupt_keeper(*argv, ready=lambda data: b" downloading " in data, timeout=20)
    assert result.code == EXIT_INTERRUPTED, result
    download_id = re.search(r"\(id (\S+)\)", result.out).group(1)  # type: ignore[union-attr]
    err = result.err
    assert "Traceback" not in err
    if cancel:
        assert f"interrupted; cancelled download {download_id}" in err
        assert cluster.state(download_id)["status"] == "cancelled"
    else:
        assert f"download {download_id} keeps running on hive-a" in err
        assert f"rbee-keeper --queen {cluster.queen.url} watch {download_id}" in err
        assert f"rbee-keeper --queen {cluster.queen.url} cancel {download_id}" in err
        assert cluster.state(download_id)["status"] == "downloading"
        httpx.delete(f"{cluster.queen.url}/v1/downloads/{download_id}", timeout=5)


def test_keeper_rides_out_a_queen_restart(
    make_hive: Callable[..., ServerThread], model_server: ModelServer, tmp_path: Path
) -> None:
    hive = make_hive(id="hive-a")
    sha = model_server.add_file("org/repo/restart.bin", 16_000_000)
    model_server.set_fault("/org/repo/resolve/main/restart.bin", Fault(rate_bps=4_000_000))
    env = {"QUEEN_HIVES": f"hive-a={hive.url}", "QUEEN_HEALTH_INTERVAL": "0.2"}
    queen = ServiceProcess("services.queen.main", free_port(), env, tmp_path / "queen.log").start()
    try:
        wait_until(
            lambda: any(h["healthy"] for h in httpx.get(f"{queen.url}/v1/hives", timeout=5).json()["hives"]),
            10,
            what="hive-a healthy",
        )
        argv = ["--queen", queen.url, "--json", "download", "hf:org/repo::file=restart.bin"]
        with running_keeper(*argv) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            before = read_until(proc.stdout.fileno(), lambda data: data.count(b"\n") >= 2, 20)
            queen.kill()
            queen.start()
            after = read_until(proc.stdout.fileno(), lambda data: b'"event":"complete"' in data, 30)
            assert proc.wait(timeout=10) == EXIT_OK, proc.stderr.read()
            err = proc.stderr.read().decode()
    finally:
        queen.stop()
    assert "stream interrupted" in err and "reconnecting" in err
    lines = json_events((before + after).decode())
    ids = [e["id"] for e in lines]
    assert ids == sorted(set(ids)), ids  # resumed with Last-Event-ID: nothing repeated
    assert lines[-1]["event"] == "complete" and lines[-1]["data"]["sha256"] == sha
    progress = [e["data"]["bytes"] for e in lines if e["event"] == "progress"]
    assert progress == sorted(progress)
