"""Security: the API token on every route, HF_TOKEN kept to the hub and out of every output,
HIVE_ALLOWED_HOSTS, bounded bodies and fields, and ids checked before they reach anything."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from httpx_sse import connect_sse

from services.hive.main import create_app as create_hive
from services.hive.settings import HiveSettings
from services.modelserver.server import Fault, ModelServer
from services.queen.main import create_app as create_queen
from services.queen.settings import QueenSettings
from shared.auth import TokenAuthMiddleware
from shared.limits import HIVE_MAX_BODY, BodySizeLimitMiddleware
from tests import layout
from tests.conftest import FAST_HIVE
from tests.support import ServerThread, ServiceProcess, free_port, serve, wait_until

KiB = 1024
TOKEN = "sec-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
VALID_ID = "dl-" + "0" * 32
SCHEMA_ROUTES = [("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc")]


def routes_of(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app serves: its OpenAPI operations and FastAPI's own schema pages."""
    found = [(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops]
    return sorted(set(found + SCHEMA_ROUTES))


def open_paths_of(app: FastAPI) -> frozenset[str]:
    (auth,) = [m for m in app.user_middleware if m.cls is TokenAuthMiddleware]
    extra: frozenset[str] = frozenset(auth.kwargs.get("open_paths", ()))
    return frozenset({"/healthz"}) | extra


def concrete(path: str) -> str:
    path = path.replace("{download_id}", VALID_ID).replace("{hive_id}", "hive-x")
    return re.sub(r"\{[^}]+\}", "x", path)


def status_of(client: httpx.Client, method: str, url: str, **kwargs: Any) -> tuple[int, bytes]:
    """The status (and the body, unless it is an endless stream) without waiting for a stream to end."""
    with client.stream(method, url, **kwargs) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response.status_code, b""
        return response.status_code, response.read()


def assert_token_on_every_route(server: ServerThread, app: FastAPI) -> list[tuple[str, str]]:
    open_paths = open_paths_of(app)
    checked = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for method, path in sorted(set(routes_of(app)) | {("GET", p) for p in open_paths}):
            url = concrete(path)
            body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
            if path in open_paths:
                assert status_of(client, method, url, **body)[0] != 401, f"{method} {path} should be open"
                continue
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": TOKEN},
                {"Authorization": "Basic x"},
            ):
                status, raw = status_of(client, method, url, headers=headers, **body)
                assert status == 401, f"{method} {path} with {headers}: {status}"
                assert json.loads(raw)["error"]["code"] == "UNAUTHORIZED", raw
            status, _ = status_of(client, method, url, headers=AUTH, **body)
            assert status != 401, f"{method} {path} refused the right token"
            by_query = status_of(client, method, url, params={"access_token": TOKEN}, **body)[0]
            if method == "GET":
                assert by_query != 401, f"GET {path} should take ?access_token="
            else:
                assert by_query == 401, f"{method} {path} must not take ?access_token="
            checked.append((method, path))
    return checked


# --------------------------------------------------------------------------- RBEE_API_TOKEN


def test_hive_demands_the_token_on_every_route_but_healthz(model_server: ModelServer, tmp_path: Path) -> None:
    settings = HiveSettings(id="hive-s", models_dir=tmp_path / "m", hf_endpoint=model_server.url, api_token=TOKEN)
    app = create_hive(settings)
    assert open_paths_of(app) == {"/healthz"}
    with serve(app) as hive:
        checked = assert_token_on_every_route(hive, app)
        assert httpx.get(f"{hive.url}/healthz").status_code == 200
    paths = {p for _, p in checked}
    assert {"/v2/downloads", "/v2/downloads/{download_id}/stream", "/metrics", "/openapi.json"} <= paths


def test_queen_demands_the_token_on_every_route_but_health_and_static(
    model_server: ModelServer, tmp_path: Path
) -> None:
    hive_settings = HiveSettings(id="hive-s", models_dir=tmp_path / "m", hf_endpoint=model_server.url, api_token=TOKEN)
    with serve(create_hive(hive_settings)) as hive:
        app = create_queen(QueenSettings(hives={"hive-s": hive.url}, api_token=TOKEN, health_interval=0.2))
        assert all(p == "/healthz" or p == "/" or p.startswith("/static/") for p in open_paths_of(app))
        with serve(app) as queen:
            checked = assert_token_on_every_route(queen, app)
            # the queen sends the token on to the hive: a relayed call works end to end
            wait_until(
                lambda: httpx.get(f"{queen.url}/v1/hives", headers=AUTH).json()["hives"][0]["healthy"], 10, what="hive"
            )
            assert httpx.get(f"{queen.url}/v1/downloads", headers=AUTH).json()["unreachable_hives"] == []
    assert {"/v1/downloads", "/v1/hives", "/v1/downloads/stream", "/metrics"} <= {p for _, p in checked}


# --------------------------------------------------------------------------- HF_TOKEN


HF_SECRET = "hf_SeCrEt_9f8e7d6c5b4a"


def test_hf_token_goes_to_the_hub_only_and_never_shows(tmp_path: Path) -> None:
    """A hive subprocess with HF_TOKEN and debug logs: the token reaches the hub's host and nothing else,
    and appears in no log line, event, error, state, list, metric or schema (nor does RBEE_API_TOKEN)."""
    with ModelServer(tmp_path / "hub") as hub, ModelServer(tmp_path / "cdn", host="127.0.0.2") as cdn:
        hub.add_file("org/repo/ok.bin", 100 * KiB)
        hub.set_fault("/org/repo/resolve/main/ok.bin", Fault(require_auth=HF_SECRET))
        cdn_sha = cdn.add_file("blobs/big.bin", 200 * KiB)
        hub.add_file("org/repo/big.bin", 200 * KiB)
        hub.set_fault("/org/repo/resolve/main/big.bin", Fault(redirect_to=f"{cdn.url}/blobs/big.bin"))
        hub.set_fault("/org/repo/resolve/main/denied.bin", Fault(always_status=401))
        hub.set_fault("/org/repo/resolve/main/broken.bin", Fault(always_status=500))
        cdn.add_file("direct.bin", 10 * KiB)
        env = {
            "HIVE_ID": "hive-t",
            "HIVE_MODELS_DIR": str(tmp_path / "models"),
            "HF_ENDPOINT": hub.url,
            "HF_TOKEN": HF_SECRET,
            "RBEE_API_TOKEN": TOKEN,  # the hive's own token must not show either
            "HIVE_LOG_LEVEL": "DEBUG",
            "HIVE_MAX_ATTEMPTS": "2",
            **{f"HIVE_{k.upper()}": str(v) for k, v in FAST_HIVE.items() if k != "max_attempts"},
        }
        log_path = tmp_path / "hive.log"
        hive = ServiceProcess("services.hive.main", free_port(), env, log_path).start()
        seen: list[str] = []
        try:
            with httpx.Client(timeout=httpx.Timeout(5, read=20), headers=AUTH) as client:
                with connect_sse(client, "GET", f"{hive.url}/v2/downloads/stream") as everything:
                    refs = ["ok.bin", "big.bin", "denied.bin", "broken.bin", "missing.bin"]
                    ids = [
                        client.post(f"{hive.url}/v2/downloads", json={"model_ref": f"hf:org/repo::file={name}"}).json()[
                            "download_id"
                        ]
                        for name in refs
                    ]
                    direct = client.post(f"{hive.url}/v2/downloads", json={"model_ref": f"{cdn.url}/direct.bin"})
                    ids.append(direct.json()["download_id"])
                    ended: set[str] = set()
                    for sse in everything.iter_sse():
                        seen.append(f"{sse.event} {sse.id} {sse.data}")
                        if sse.event in ("complete", "error"):
                            ended.add(json.loads(sse.data)["download_id"])
                        if ended >= set(ids) or len(seen) > 500:
                            break
                states = {d: client.get(f"{hive.url}/v2/downloads/{d}").json() for d in ids}
                for download_id in ids:
                    with connect_sse(client, "GET", f"{hive.url}/v2/downloads/{download_id}/stream") as one:
                        seen.extend(f"{e.event} {e.id} {e.data}" for e in one.iter_sse())
                outputs = {
                    "list": client.get(f"{hive.url}/v2/downloads").text,
                    "metrics": client.get(f"{hive.url}/metrics").text,
                    "openapi": client.get(f"{hive.url}/openapi.json").text,
                    "health": client.get(f"{hive.url}/healthz").text,
                    "events": "\n".join(seen),
                    "states": json.dumps(states),
                }
        finally:
            hive.stop()
        outputs["log"] = log_path.read_text()
        hub_records, cdn_records = hub.records(), cdn.records()

    by_name = dict(zip(["ok", "big", "denied", "broken", "missing", "direct"], ids, strict=True))
    assert states[by_name["ok"]]["status"] == "complete"
    assert states[by_name["big"]]["status"] == "complete" and states[by_name["big"]]["sha256"] == cdn_sha
    assert states[by_name["denied"]]["error_code"] == "UNAUTHORIZED"
    assert states[by_name["broken"]]["status"] == "failed" and states[by_name["missing"]]["error_code"] == "NOT_FOUND"
    assert states[by_name["direct"]]["status"] == "complete"
    # sent to the hub's host, on every hub request; never to the CDN it redirected to
    assert hub_records and all(r.headers.get("authorization") == f"Bearer {HF_SECRET}" for r in hub_records)
    assert cdn_records and all("authorization" not in r.headers for r in cdn_records)
    log_lines = [json.loads(line) for line in outputs["log"].splitlines() if line.startswith("{")]
    assert len(log_lines) > 10, outputs["log"][:2000]  # the log was captured: there is something to search
    for name, text in outputs.items():
        assert HF_SECRET not in text, f"HF_TOKEN leaked into the {name}"
        assert HF_SECRET[3:] not in text, f"part of HF_TOKEN leaked into the {name}"
        assert TOKEN not in text, f"RBEE_API_TOKEN leaked into the {name}"


# --------------------------------------------------------------------------- HIVE_ALLOWED_HOSTS


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[ModelServer, ModelServer]]:
    with ModelServer(tmp_path / "hub") as hub, ModelServer(tmp_path / "other", host="127.0.0.2") as other:
        yield hub, other


def test_allowed_hosts_refuse_refs_and_redirects_elsewhere(
    hosts: tuple[ModelServer, ModelServer], tmp_path: Path
) -> None:
    hub, other = hosts
    hub_sha = hub.add_file("org/repo/ok.bin", 50 * KiB)
    away_sha = hub.add_file("org/repo/away.bin", 50 * KiB, seed=1)
    hub.set_fault("/org/repo/resolve/main/away.bin", Fault(redirect_to=f"{other.url}/away.bin"))
    other.add_file("away.bin", 50 * KiB)
    other.add_file("direct.bin", 1 * KiB)
    models = tmp_path / "models"
    settings = HiveSettings(
        id="hive-a",
        models_dir=models,
        hf_endpoint=hub.url,
        allowed_hosts=f" 127.0.0.1:{hub.port} ,*.example.org",
        **FAST_HIVE,
    )
    with serve(create_hive(settings)) as hive:

        def post(ref: str) -> httpx.Response:
            return httpx.post(f"{hive.url}/v2/downloads", json={"model_ref": ref}, timeout=10)

        for ref in (
            f"{other.url}/direct.bin",
            f"http://127.0.0.1:{other.port}/direct.bin",
            "https://example.org/x.bin",
        ):
            refused = post(ref)
            assert refused.status_code == 422, (ref, refused.text)
            assert refused.json()["error"]["code"] == "HOST_NOT_ALLOWED"
        for ref in ("ftp://127.0.0.1/x.bin", "file:///etc/passwd", "gopher://127.0.0.1/x", "data:,x"):
            refused = post(ref)
            assert refused.status_code == 422 and refused.json()["error"]["code"] == "INVALID_MODEL_REF", ref
        assert not models.joinpath("_url").exists()
        assert other.records() == []

        ok = post("hf:org/repo::file=ok.bin").json()["download_id"]
        away = post("hf:org/repo::file=away.bin").json()["download_id"]
        done = wait_until(lambda: (s := _state(hive, ok))["status"] == "complete" and s, 10, what="ok.bin")
        failed = wait_until(lambda: (s := _state(hive, away))["status"] == "failed" and s, 10, what="away.bin")
    assert done["sha256"] == hub_sha
    assert failed["error_code"] == "HOST_NOT_ALLOWED" and "127.0.0.2" in failed["error"]
    assert other.records() == [], "the redirect target outside the list must not be contacted"
    assert not list(models.rglob("away.bin*"))
    assert not layout.blob(models, away_sha).exists() and layout.leftover_partials(models) == []


@pytest.mark.parametrize("target", ["ftp://127.0.0.1/x.bin", "file:///etc/passwd", "gopher://127.0.0.1:70/x"])
def test_redirects_to_other_schemes_fail(
    make_hive: Callable[..., ServerThread], model_server: ModelServer, target: str, tmp_path: Path
) -> None:
    model_server.add_file("org/repo/scheme.bin", 1000)
    model_server.set_fault("/org/repo/resolve/main/scheme.bin", Fault(redirect_to=target))
    models = tmp_path / "scheme-models"
    hive = make_hive(models_dir=models)
    download_id = httpx.post(f"{hive.url}/v2/downloads", json={"model_ref": "hf:org/repo::file=scheme.bin"}).json()[
        "download_id"
    ]
    failed = wait_until(lambda: (s := _state(hive, download_id))["status"] == "failed" and s, 10, what="failure")
    assert failed["error_code"] == "DOWNLOAD_FAILED" and "non-http(s)" in failed["error"]
    assert not [p for p in models.rglob("*") if p.name.startswith("scheme.bin")]
    assert not layout.blob(models, model_server.sha256_of("org/repo/scheme.bin")).exists()
    assert layout.leftover_partials(models) == []


def test_allowed_hosts_setting_is_checked() -> None:
    with pytest.raises(ValueError):
        HiveSettings(allowed_hosts="good.example,bad:port")
    assert HiveSettings(allowed_hosts="").allowed_host_set is None
    assert HiveSettings(allowed_hosts="[::1]:8080,Hub.Example").allowed_host_set == {
        ("::1", 8080),
        ("hub.example", None),
    }


def _state(hive: ServerThread, download_id: str) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"{hive.url}/v2/downloads/{download_id}", timeout=5).json()
    return result


# --------------------------------------------------------------------------- bodies, fields, ids


@pytest.fixture
def hive(make_hive: Callable[..., ServerThread]) -> ServerThread:
    return make_hive()


def _chunks(total: int) -> Iterator[bytes]:
    yield b'{"model_ref": "'
    sent = 0
    while sent < total:
        yield b"a" * 8192
        sent += 8192
    yield b'"}'


def test_bodies_are_bounded(hive: ServerThread) -> None:
    with httpx.Client(base_url=hive.url, timeout=10) as client:
        over = HIVE_MAX_BODY + KiB  # (a hive's limit leaves room for a fleet pull's sources)
        big = json.dumps({"model_ref": "hf:org/repo::file=" + "a" * over})
        for response in (
            client.post("/v2/downloads", content=big, headers={"Content-Type": "application/json"}),
            client.post("/v2/downloads", content=_chunks(over), headers={"Content-Type": "application/json"}),
            client.put("/v2/settings/bandwidth", content=b" " * over, headers={"Content-Type": "application/json"}),
        ):
            assert response.status_code == 413, response.text
            assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
        too_long = client.post("/v2/downloads", json={"model_ref": "hf:org/repo::file=" + "a" * 2048})
        assert too_long.status_code == 422 and too_long.json()["error"]["code"] == "INVALID_REQUEST"
        bad_sha = client.post("/v2/downloads", json={"model_ref": "hf:org/repo::file=a.bin", "sha256": "0" * 65})
        assert bad_sha.status_code == 422
        assert client.get("/v2/downloads").json()["downloads"] == []
        assert client.get("/healthz").status_code == 200  # the connection-closing 413s left the server fine


def test_token_is_checked_before_a_body_is_read(make_hive: Callable[..., ServerThread]) -> None:
    hive = make_hive(api_token=TOKEN)
    response = httpx.post(f"{hive.url}/v2/downloads", content=b"x" * 100 * KiB, timeout=10)
    assert response.status_code == 401


@pytest.mark.parametrize(
    "bad_id",
    [
        "nope",
        "dl-" + "g" * 32,
        "dl-" + "A" * 32,
        "dl-" + "0" * 31,
        "dl-" + "0" * 33,
        "..%2F..%2Fetc%2Fpasswd",
        "x" * 5000,
    ],
)
def test_malformed_download_ids_are_404_json(hive: ServerThread, bad_id: str) -> None:
    with httpx.Client(base_url=hive.url, timeout=10) as client:
        for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/stream"), ("DELETE", "/history")):
            response = client.request(method, f"/v2/downloads/{bad_id}{suffix}")
            assert response.status_code == 404, (method, suffix, response.status_code)
            assert response.json()["error"]["code"] == "NOT_FOUND"
            assert len(response.text) < 1000  # the id is not echoed back in full


def test_queen_validates_hive_ids_and_field_lengths(model_server: ModelServer, tmp_path: Path) -> None:
    with serve(create_queen(QueenSettings())) as queen, httpx.Client(base_url=queen.url, timeout=10) as client:
        for hive_id in ("../x", "a b", "", "x" * 65, "hive/1", "-lead"):
            register = client.post("/v1/hives", json={"hive_id": hive_id, "url": "http://127.0.0.1:1"})
            assert register.status_code == 422, hive_id
            assert register.json()["error"]["code"] == "INVALID_REQUEST"
            start = client.post("/v1/downloads", json={"model_ref": "hf:o/r::file=a", "hive_id": hive_id})
            assert start.status_code == 422, hive_id
        long_ref = client.post("/v1/downloads", json={"model_ref": "hf:o/r::file=" + "a" * 3000})
        assert long_ref.status_code == 422
        bad_url = client.post("/v1/hives", json={"hive_id": "h", "url": "file:///etc/passwd"})
        assert bad_url.status_code == 422


def test_queen_bounds_bodies() -> None:
    app = create_queen(QueenSettings())
    assert any(m.cls is BodySizeLimitMiddleware for m in app.user_middleware)
    with serve(app) as queen:
        response = httpx.post(f"{queen.url}/v1/downloads", content=b"x" * 100 * KiB, timeout=10)
    assert response.status_code == 413 and response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize(
    "model_ref",
    [
        '"hf:org/repo::file=\\ud800.bin"',  # a lone surrogate: valid JSON, but no file can have that name
        json.dumps("hf:org/repo::file=" + "\u00e9" * 200),  # 200 characters, 400 bytes: too long a name
        json.dumps("hf:org/repo@" + "a" * 256 + "::file=x.bin"),  # a revision too long to name refs/{rev}
        json.dumps("hf:org/repo::file=invoice\u202egnp.exe"),  # a bidi override to disguise the name
        json.dumps("https://files.example/a%E2%80%AEb.bin"),
    ],
)
def test_refs_that_cannot_name_a_file_safely_are_422(hive: ServerThread, model_ref: str) -> None:
    response = httpx.post(
        f"{hive.url}/v2/downloads",
        content=f'{{"model_ref": {model_ref}}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] in ("INVALID_MODEL_REF", "INVALID_REQUEST")
