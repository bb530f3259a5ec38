"""Bad input on real servers: unknown fields and bad byte rates are refused with 422 naming them and
change nothing; the queen validates and passes on every field the hive takes from a user; a request
h11 cannot parse (`Content-Length: abc`) still gets the JSON error body."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.modelserver.server import ModelServer
from services.queen.main import create_app as create_queen
from services.queen.settings import QueenSettings
from shared.models import DownloadState
from tests.support import ServerThread, ServiceProcess, free_port, serve, wait_until

DOWNLOAD_ID = "dl-" + "ab" * 16
BAD_RATES: list[Any] = [True, 1.5, -1, 0, 10**30, "100"]


def test_the_hive_refuses_unknown_fields_and_bad_rates_and_starts_nothing(
    make_hive: Callable[..., ServerThread], model_server: ModelServer
) -> None:
    hive = make_hive()
    ref = f"{model_server.url}/files/tiny.bin"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model_ref": "hf:org/m", "excludes": ["*.bin"]}, "excludes"),
        ({"model_ref": ref, "sha": "0" * 64}, "sha"),
        *[({"model_ref": ref, "max_bps": rate}, "max_bps") for rate in BAD_RATES],
    ]
    with httpx.Client(base_url=hive.url, timeout=10) as client:
        for body, field in cases:
            resp = client.post("/v2/downloads", json=body)
            assert resp.status_code == 422, (body, resp.text)
            error = resp.json()["error"]
            assert error["code"] == "INVALID_REQUEST" and field in error["message"], (body, error)
        plan = client.post("/v2/plans", json={"model_ref": "hf:org/m", "include_patterns": ["*"]})
        assert plan.status_code == 422 and "include_patterns" in plan.json()["error"]["message"]
        limit = client.put("/v2/settings/bandwidth", json={"bandwidth_limit": True})
        assert limit.status_code == 422, limit.text
        assert client.get("/v2/downloads").json()["downloads"] == []


class RecordingHive:
    """A hive that records what the queen asks it to start and answers as a hive would."""

    def __init__(self) -> None:
        self.started: list[dict[str, Any]] = []

        async def start(request: Request) -> JSONResponse:
            body = await request.json()
            self.started.append(body)
            state = {**DownloadState(DOWNLOAD_ID, body["model_ref"]).to_dict(), "hive_id": "rec"}
            return JSONResponse(state, status_code=202)

        async def health(_: Request) -> JSONResponse:
            return JSONResponse({"status": "ok", "hive_id": "rec", "active_downloads": 0})

        async def downloads(_: Request) -> JSONResponse:
            return JSONResponse({"hive_id": "rec", "downloads": []})

        self.app = Starlette(
            routes=[
                Route("/v2/downloads", start, methods=["POST"]),
                Route("/v2/downloads", downloads, methods=["GET"]),
                Route("/healthz", health),
            ]
        )


@pytest.fixture
def queen_and_hive() -> Iterator[tuple[ServerThread, RecordingHive]]:
    hive = RecordingHive()
    with serve(hive.app) as hive_server:
        settings = QueenSettings(hives={"rec": hive_server.url}, health_interval=0.2)
        with serve(create_queen(settings)) as queen:
            wait_until(
                lambda: httpx.get(f"{queen.url}/v1/hives", timeout=5).json()["hives"][0]["healthy"] or None,
                10,
                what="the recording hive healthy",
            )
            yield queen, hive


def test_the_queen_validates_max_bps_and_passes_it_on(queen_and_hive: tuple[ServerThread, RecordingHive]) -> None:
    queen, hive = queen_and_hive
    ref = "https://files.example/model.bin"
    with httpx.Client(base_url=queen.url, timeout=10) as client:
        for rate in BAD_RATES:
            resp = client.post("/v1/downloads", json={"model_ref": ref, "max_bps": rate})
            assert resp.status_code == 422 and "max_bps" in resp.json()["error"]["message"], (rate, resp.text)
        typo = client.post("/v1/downloads", json={"model_ref": ref, "hiveid": "rec"})
        assert typo.status_code == 422 and "hiveid" in typo.json()["error"]["message"], typo.text
        pull_typo = client.post("/v1/pulls", json={"model_ref": "hf:org/m", "hive_ids": "all", "exclude_patterns": []})
        assert pull_typo.status_code == 422 and "exclude_patterns" in pull_typo.json()["error"]["message"]
        assert hive.started == []  # nothing reached the hive
        ok = client.post("/v1/downloads", json={"model_ref": ref, "max_bps": 65536, "sha256": "a" * 64})
        assert ok.status_code == 202, ok.text
    assert hive.started == [{"model_ref": ref, "max_bps": 65536, "sha256": "a" * 64}]


def raw_request(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (no client would send them) and read the answer to the connection's end."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("module", ["services.hive.main", "services.queen.main"])
def test_a_request_h11_cannot_parse_gets_the_json_error_body(module: str, tmp_path: Path) -> None:
    env = {"HIVE_MODELS_DIR": str(tmp_path / "models")}
    service = ServiceProcess(module, free_port(), env, tmp_path / "service.log").start()
    try:
        path = b"/v2/downloads" if "hive" in module else b"/v1/downloads"
        head = b"Host: x\r\nContent-Type: application/json\r\nContent-Length: abc\r\n"
        request = b"POST " + path + b" HTTP/1.1\r\n" + head + b"\r\n{}"
        status, headers, body = raw_request(service.port, request)
        assert status == 400 and headers["content-type"] == "application/json", (status, headers, body)
        error = json.loads(body)["error"]
        assert error["code"] == "BAD_REQUEST" and "malformed HTTP request" in error["message"], error
        assert httpx.get(f"{service.url}/healthz", timeout=5).status_code == 200  # and the service goes on
    finally:
        service.stop()
