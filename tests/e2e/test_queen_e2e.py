"""The queen end to end over real sockets: real hives (in-process and as subprocesses), a local model
server, a real queen (in-process, and as a subprocess that gets killed), real httpx + httpx-sse clients."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse, connect_sse

from services.hive.main import create_app as create_hive
from services.hive.settings import HiveSettings
from services.modelserver.hub import Hub
from services.modelserver.hub_repo import Generated
from services.modelserver.server import Fault, ModelServer
from services.queen.main import create_app as create_queen
from services.queen.settings import QueenSettings
from tests.support import Hold, ServerThread, ServiceProcess, free_port, wait_until

KiB = 1024
MiB = 1024 * KiB
TOKEN = "e2e-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TERMINAL = {"complete", "error", "cancelled"}
FAST_HIVE: dict[str, Any] = {
    "progress_interval": 0.05,
    "keepalive_secs": 1.0,
    "stall_timeout": 2.0,
    "connect_timeout": 2.0,
    "retry_base_delay": 0.01,
    "retry_max_delay": 0.05,
    "max_attempts": 4,
}
FAST_QUEEN: dict[str, Any] = {
    "orchestrator_id": "queen-e2e",
    "api_token": TOKEN,
    "health_interval": 0.1,
    "health_timeout": 1.0,
    "relay_backoff_initial": 0.05,
    "relay_backoff_max": 0.3,
    "unreachable_budget": 5.0,
    "keepalive_secs": 1.0,
}


# --------------------------------------------------------------------------- helpers


class StreamCounter:
    """ASGI wrapper: counts the per-download stream requests a hive receives."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.download_streams = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith("/v2/downloads/dl-") and path.endswith("/stream"):
            self.download_streams += 1
        await self.app(scope, receive, send)


@dataclass
class Env:
    tmp: Path
    models: ModelServer
    stack: contextlib.ExitStack

    def file(self, name: str, size: int, rate: int | None = None) -> str:
        """A generated file on the model server (optionally rate limited); its URL."""
        self.models.add_file(f"files/{name}", size)
        if rate:
            self.models.set_fault(f"/files/{name}", Fault(rate_bps=rate))
        return f"{self.models.url}/files/{name}"

    def hive(self, hive_id: str, wrap: Callable[[Any], Any] | None = None, **overrides: Any) -> ServerThread:
        port = overrides.pop("port", None) or free_port()  # the hive advertises its real address
        fields = {"id": hive_id, "models_dir": self.tmp / hive_id, "api_token": TOKEN, "port": port}
        app = create_hive(HiveSettings(**{**fields, **FAST_HIVE, **overrides}))
        server = ServerThread(wrap(app) if wrap else app, port).start()
        self.stack.callback(server.stop)
        return server

    def queen(self, hives: dict[str, str], port: int | None = None, **overrides: Any) -> ServerThread:
        server = ServerThread(create_queen(QueenSettings(hives=hives, **{**FAST_QUEEN, **overrides})), port).start()
        self.stack.callback(server.stop)
        return server


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with ModelServer(tmp_path / "hub") as models, contextlib.ExitStack() as stack:
        yield Env(tmp_path, models, stack)  # the stack stops queens before hives (last started, first stopped)


def api(server: ServerThread | ServiceProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=AUTH, timeout=10)


def start(queen: ServerThread | ServiceProcess, ref: str, **body: Any) -> httpx.Response:
    with api(queen) as client:
        return client.post("/v1/downloads", json={"model_ref": ref, **body})


def read_to_end(
    url: str, headers: dict[str, str] | None = None, stop: Callable[[ServerSentEvent], bool] | None = None
) -> list[ServerSentEvent]:
    """A per-download stream's events (keep-alive artefacts dropped) to its end, or until `stop` says so."""
    seen: list[ServerSentEvent] = []
    with httpx.Client(timeout=httpx.Timeout(5, read=15)) as client:
        with connect_sse(client, "GET", url, headers={**AUTH, **(headers or {})}) as source:
            assert source.response.status_code == 200, source.response.read()
            for sse in source.iter_sse():
                if sse.data:
                    seen.append(sse)
                    if sse.event in TERMINAL or (stop is not None and stop(sse)) or len(seen) > 2000:
                        break
    return seen


async def collect(
    client: httpx.AsyncClient, url: str, download_id: asyncio.Future[str] | None = None
) -> list[ServerSentEvent]:
    """Events until the terminal one; on the aggregated stream, until that of `download_id` (known later)."""
    seen: list[ServerSentEvent] = []
    async with aconnect_sse(client, "GET", url, headers=AUTH) as source:
        assert source.response.status_code == 200
        async for sse in source.aiter_sse():
            if not sse.data:
                continue
            seen.append(sse)
            if sse.event in TERMINAL and (download_id is None or sse.json()["download_id"] == await download_id):
                break
    if download_id is not None:
        seen = [e for e in seen if e.json()["download_id"] == download_id.result()]
    return seen


def assert_one_clean_stream(events: list[ServerSentEvent], hive_id: str, final: str = "complete") -> None:
    ids = [int(e.id) for e in events]
    assert ids == sorted(set(ids)), ids  # strictly increasing: no repeats
    payloads = [e.json() for e in events]
    assert all(p["orchestrator_id"] == "queen-e2e" and p["hive_id"] == hive_id for p in payloads)
    nbytes = [p["bytes"] for p in payloads]
    assert nbytes == sorted(nbytes)  # bytes never go backwards
    kinds = [e.event for e in events]
    assert kinds[-1] == final and sum(k in TERMINAL for k in kinds) == 1


def metric(server: ServerThread | ServiceProcess, name: str) -> float:
    with api(server) as client:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def hive_health(queen: ServerThread, hive_id: str) -> dict[str, Any] | None:
    with api(queen) as client:
        return next((h for h in client.get("/v1/hives").json()["hives"] if h["hive_id"] == hive_id), None)


# --------------------------------------------------------------------------- routes


def test_placement_proxying_cancel_and_errors(env: Env) -> None:
    hive_a, hive_b = env.hive("hive-a"), env.hive("hive-b")
    queen = env.queen({"hive-a": hive_a.url, "hive-b": hive_b.url})
    wait_until(lambda: all((hive_health(queen, h) or {}).get("healthy") for h in ("hive-a", "hive-b")), 5)

    hold = Hold(hive_a.url, AUTH)  # slow.bin is still running on hive-a when it is cancelled
    slow = start(queen, env.file("slow.bin", 2 * MiB, rate=256 * KiB), hive_id="hive-a")
    assert slow.status_code == 202 and slow.json()["hive_id"] == "hive-a"
    slow_id = slow.json()["download_id"]
    placed = start(queen, env.file("fast.bin", 256 * KiB))  # hive-a is busy: the least busy is hive-b
    assert placed.status_code == 202 and placed.json()["hive_id"] == "hive-b"
    fast_id = placed.json()["download_id"]

    with api(hive_b) as client:  # started on a hive directly: the queen finds it all the same
        direct = client.post("/v2/downloads", json={"model_ref": env.file("direct.bin", 64 * KiB)})
        direct_id = direct.json()["download_id"]
    with api(queen) as client:
        assert client.get(f"/v1/downloads/{slow_id}").json()["hive_id"] == "hive-a"
        assert client.get(f"/v1/downloads/{direct_id}").json()["hive_id"] == "hive-b"
        wait_until(lambda: client.get(f"/v1/downloads/{fast_id}").json()["status"] == "complete", 10)
        cancelled = client.delete(f"/v1/downloads/{slow_id}")
        assert cancelled.status_code == 200
        assert (cancelled.json()["status"], cancelled.json()["hive_id"]) == ("cancelled", "hive-a")
        assert httpx.get(f"{hive_a.url}/v2/downloads/{slow_id}", headers=AUTH).json()["status"] == "cancelled"
        hold.release()
        finished = client.delete(f"/v1/downloads/{fast_id}")  # the hive's 409, passed on as it is
        assert finished.status_code == 409
        assert finished.json()["error"]["code"] == "ALREADY_FINISHED"
        again = client.post(
            "/v1/downloads", json={"model_ref": f"{env.models.url}/files/fast.bin", "hive_id": "hive-b"}
        )
        assert again.status_code == 200 and again.json()["status"] == "complete"  # the hive's 200, passed on

        for response, status, code in [
            (client.post("/v1/downloads", json={"model_ref": "https://x/y", "hive_id": "hive-z"}), 404, "UNKNOWN_HIVE"),
            (client.post("/v1/downloads", json={"model_ref": "ftp://x/y"}), 422, "INVALID_MODEL_REF"),
            (client.post("/v1/downloads", json={"model_ref": ""}), 422, "INVALID_REQUEST"),
            (client.get("/v1/downloads/dl-nope"), 404, "NOT_FOUND"),
            (client.delete("/v1/downloads/dl-nope"), 404, "NOT_FOUND"),
            (client.get("/v1/downloads/dl-nope/stream"), 404, "NOT_FOUND"),
            (client.get("/v1/downloads", headers={"Authorization": "Bearer wrong"}), 401, "UNAUTHORIZED"),
        ]:
            assert response.status_code == status, response.text
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"]["code"] == code
    assert httpx.get(f"{queen.url}/healthz").json()["healthy_hives"] == 2  # no token needed


def test_the_files_of_one_model_started_one_by_one_land_on_one_hive(env: Env) -> None:
    hub = env.stack.enter_context(Hub(env.tmp / "hub-store"))
    hub.add_repo("org/llama")
    shards = [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    commit = hub.commit(
        "org/llama", {**{n: Generated(MiB, seed=i) for i, n in enumerate(shards)}, "config.json": b"{}"}
    )
    hub.add_repo("org/other")
    hub.commit("org/other", {"model.safetensors": Generated(MiB, seed=9)})
    hives = {h: env.hive(h, hf_endpoint=hub.url) for h in ("hive-a", "hive-b")}
    queen = env.queen({h: s.url for h, s in hives.items()})
    wait_until(lambda: all((hive_health(queen, h) or {}).get("healthy") for h in hives), 5)

    holds = [Hold(s.url, AUTH) for s in hives.values()]  # everything stays active until released
    placed = [start(queen, f"hf:org/llama::file={name}").json() for name in (*shards, "config.json")]
    homes = {p["hive_id"] for p in placed}
    assert len(homes) == 1, placed  # never spread over the hives, though the other one sits idle
    (home,) = homes
    other = start(queen, "hf:org/other::file=model.safetensors").json()
    assert other["hive_id"] != home  # another model: placed by load
    for hold in holds:
        hold.release()
    with api(queen) as client:

        def states() -> list[dict[str, Any]]:
            return [client.get(f"/v1/downloads/{p['download_id']}").json() for p in (*placed, other)]

        done = wait_until(lambda: (s := states()) and all(x["status"] == "complete" for x in s) and s, 20)
    assert [d["hive_id"] for d in done] == [home] * len(placed) + [other["hive_id"]]
    assert {d["commit"] for d in done[:-1]} == {commit}


def test_a_whole_model_through_the_queen_joins_its_running_shard_and_lists_its_files(env: Env) -> None:
    hub = env.stack.enter_context(Hub(env.tmp / "hub-store"))
    hub.add_repo("org/llama")
    shards = {f"model-0000{i}-of-00002.safetensors": Generated(MiB + i, seed=i) for i in (1, 2)}
    texts = {"config.json": b'{"hidden": 64}', "tokenizer.json": b'{"vocab": []}', "README.md": b"# llama"}
    commit = hub.commit("org/llama", {**shards, **texts, "original/consolidated.bin": Generated(MiB, seed=7)})
    hives = {h: env.hive(h, hf_endpoint=hub.url) for h in ("hive-a", "hive-b")}
    queen = env.queen({h: s.url for h, s in hives.items()})
    wait_until(lambda: all((hive_health(queen, h) or {}).get("healthy") for h in hives), 5)

    holds = [Hold(s.url, AUTH) for s in hives.values()]
    shard = start(queen, "hf:org/llama::file=model-00001-of-00002.safetensors", hive_id="hive-b").json()
    model = start(queen, "hf:org/llama", include=["*.safetensors", "*.json"], exclude=["tokenizer.*"])
    assert model.status_code == 202, model.text
    assert model.json()["hive_id"] == "hive-b"  # where its shard runs, though hive-a is idle
    model_id = model.json()["download_id"]
    for hold in holds:
        hold.release()

    events = read_to_end(f"{queen.url}/v1/downloads/{model_id}/stream")
    assert_one_clean_stream(events, "hive-b")
    payloads = [e.json() for e in events]
    wanted = {*shards, "config.json"}  # include, then exclude; README.md, the .bin and .gitattributes left out
    assert {p["files_total"] for p in payloads} == {len(wanted)}
    done = [p["files_done"] for p in payloads]
    assert done == sorted(done) and done[-1] == len(wanted)
    with api(queen) as client:
        state = client.get(f"/v1/downloads/{model_id}").json()  # the hive's state, passed through whole
        listed = {d["download_id"]: d for d in client.get("/v1/downloads").json()["downloads"]}
        shard_state = client.get(f"/v1/downloads/{shard['download_id']}").json()
    assert (state["status"], state["commit"], state["hive_id"]) == ("complete", commit, "hive-b")
    assert (state["files_total"], state["files_done"]) == (len(wanted), len(wanted))
    assert {f["path"]: (f["size"], f["bytes"], f["status"]) for f in state["files"]} == {
        path: (hub.file("org/llama", path).size,) * 2 + ("complete",) for path in wanted
    }
    assert state["path"].endswith(f"/hub/models--org--llama/snapshots/{commit}")
    assert (listed[model_id]["files_total"], listed[model_id]["files_done"]) == (len(wanted), len(wanted))
    assert shard_state["status"] == "complete" and shard_state["hive_id"] == "hive-b"


def test_list_gathers_every_hive_and_names_the_unreachable_one(env: Env) -> None:
    hive_a, hive_b = env.hive("hive-a"), env.hive("hive-b")
    dead = f"http://127.0.0.1:{free_port()}"
    queen = env.queen({"hive-a": hive_a.url, "hive-b": hive_b.url, "hive-c": dead})
    wait_until(lambda: (hive_health(queen, "hive-c") or {}).get("health") == "unhealthy", 5)
    first = start(queen, env.file("one.bin", 64 * KiB), hive_id="hive-b").json()["download_id"]
    second = start(queen, env.file("two.bin", 64 * KiB), hive_id="hive-a").json()["download_id"]

    with api(queen) as client:
        listed = wait_until(
            lambda: (
                (r := client.get("/v1/downloads", params={"status": "complete"}).json())
                and len(r["downloads"]) == 2
                and r
            ),
            10,
        )
        assert listed["unreachable_hives"] == ["hive-c"]
        assert [(d["download_id"], d["hive_id"]) for d in listed["downloads"]] == [
            (second, "hive-a"),
            (first, "hive-b"),
        ]
        assert client.get("/v1/downloads", params={"status": "queued"}).json()["downloads"] == []
        assert client.get("/v1/downloads", params={"status": "bogus"}).status_code == 422
        down = client.post("/v1/downloads", json={"model_ref": "https://x/y", "hive_id": "hive-c"})
        assert down.status_code == 503 and down.json()["error"]["code"] == "HIVE_UNREACHABLE"
        hives = {h["hive_id"]: h for h in client.get("/v1/hives").json()["hives"]}
    assert {k: (h["health"], h["url"]) for k, h in hives.items()} == {
        "hive-a": ("healthy", hive_a.url),
        "hive-b": ("healthy", hive_b.url),
        "hive-c": ("unhealthy", dead),
    }
    assert metric(queen, 'rbee_queen_hives{health="unhealthy"}') == 1


def test_self_registration_heartbeat_and_health(env: Env) -> None:
    queen_port = free_port()
    hive = env.hive("hive-self", queen_url=f"http://127.0.0.1:{queen_port}", heartbeat_secs=0.1)
    queen = env.queen({}, port=queen_port)  # the queen comes up after the hive
    found = wait_until(lambda: (h := hive_health(queen, "hive-self")) and h["healthy"] and h, 5)
    assert (found["url"], found["source"]) == (hive.url, "registered")
    first_seen = found["last_registered"]
    wait_until(lambda: (hive_health(queen, "hive-self") or {}).get("last_registered") != first_seen, 5)  # heartbeat

    hive.stop()
    wait_until(lambda: (hive_health(queen, "hive-self") or {}).get("health") == "unhealthy", 5)
    with api(queen) as client:
        none_left = client.post("/v1/downloads", json={"model_ref": "https://x/y"})
    assert none_left.status_code == 503 and none_left.json()["error"]["code"] == "HIVE_UNREACHABLE"

    moved = env.hive("hive-self", queen_url=queen.url, heartbeat_secs=0.1)  # back, at another port
    wait_until(lambda: (h := hive_health(queen, "hive-self")) and h["healthy"] and h["url"] == moved.url, 5)


# --------------------------------------------------------------------------- the relay


def test_relayed_and_aggregated_streams_with_several_clients(env: Env) -> None:
    hive_a, hive_b = env.hive("hive-a"), env.hive("hive-b")
    queen = env.queen({"hive-a": hive_a.url, "hive-b": hive_b.url})
    ref = env.file("watched.bin", MiB, rate=768 * KiB)

    async def scenario() -> tuple[list[list[ServerSentEvent]], list[list[ServerSentEvent]]]:
        async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=15)) as client:
            started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

            everyone = [
                asyncio.create_task(collect(client, f"{queen.url}/v1/downloads/stream", started)) for _ in range(3)
            ]
            await until_clients(client, queen, "all", 3)
            hold = Hold(hive_b.url, AUTH)  # the per-download clients see the download running, not only its end
            response = await client.post(
                f"{queen.url}/v1/downloads", json={"model_ref": ref, "hive_id": "hive-b"}, headers=AUTH
            )
            download_id = response.json()["download_id"]
            started.set_result(download_id)
            one = [
                asyncio.create_task(collect(client, f"{queen.url}/v1/downloads/{download_id}/stream")) for _ in range(2)
            ]
            await until_clients(client, queen, "download", 2)
            hold.release()
            return await asyncio.wait_for(asyncio.gather(*one), 20), await asyncio.wait_for(
                asyncio.gather(*everyone), 20
            )

    per_download, aggregated = asyncio.run(scenario())
    for events in per_download:
        assert_one_clean_stream(events, "hive-b")
        assert events[0].json()["bytes"] < MiB  # it saw the download running, not only its end
    for events in aggregated:
        assert_one_clean_stream(events, "hive-b")
    assert {e.json()["download_id"] for events in per_download + aggregated for e in events} == {
        per_download[0][0].json()["download_id"]
    }


async def until_clients(client: httpx.AsyncClient, queen: ServerThread, stream: str, count: int) -> None:
    """Poll the queen's metrics (bounded) until `count` SSE clients of that stream are connected."""
    name = f'rbee_queen_sse_clients{{stream="{stream}"}} '
    for _ in range(500):
        text = (await client.get(f"{queen.url}/metrics", headers=AUTH)).text
        if any(line.startswith(name) and float(line.split()[1]) >= count for line in text.splitlines()):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} {stream} clients never connected")


def test_fifty_clients_of_one_download_open_no_hive_connection(env: Env) -> None:
    """The queen serves them from the hive's aggregated stream, which it holds anyway."""
    counters: list[StreamCounter] = []

    def counted(app: Any) -> StreamCounter:
        counters.append(StreamCounter(app))
        return counters[-1]

    hive = env.hive("hive-b", wrap=counted)
    queen = env.queen({"hive-b": hive.url})
    hold = Hold(hive.url, AUTH)  # the download runs until all fifty are connected, however long that takes
    download_id = start(queen, env.file("popular.bin", MiB, rate=512 * KiB), hive_id="hive-b").json()["download_id"]
    clients = 50
    shown = read_to_end(f"{queen.url}/v1/downloads/stream", stop=lambda e: e.json().get("download_id") == download_id)
    assert shown[-1].json()["download_id"] == download_id  # the queen shows it live: no race with its first event

    async def scenario() -> tuple[list[list[ServerSentEvent]], str]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=clients)
        async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=15), limits=limits) as client:
            url = f"{queen.url}/v1/downloads/{download_id}/stream"
            tasks = [asyncio.create_task(collect(client, url)) for _ in range(clients)]
            await until_clients(client, queen, "download", clients)
            during = (await client.get(f"{queen.url}/metrics", headers=AUTH)).text
            hold.release()
            return await asyncio.wait_for(asyncio.gather(*tasks), 20), during

    results, during = asyncio.run(scenario())
    assert 'rbee_queen_upstream_subscriptions{stream="download"} 0.0' in during
    assert f'rbee_queen_sse_clients{{stream="download"}} {clients}.0' in during
    assert counters[0].download_streams == 0  # fifty clients, no connection to the hive of their own
    terminal_ids = set()
    for events in results:
        assert_one_clean_stream(events, "hive-b")
        terminal_ids.add(events[-1].id)
    assert len(terminal_ids) == 1
    wait_until(lambda: metric(queen, 'rbee_queen_upstream_subscriptions{stream="download"}') == 0, 5)


def test_a_slow_client_does_not_hold_back_a_fast_one(env: Env) -> None:
    hive = env.hive("hive-b", progress_interval=0.01)
    queen = env.queen({"hive-b": hive.url})
    hold = Hold(hive.url, AUTH)  # still running when the slow client has connected
    download_id = start(queen, env.file("big.bin", 2 * MiB, rate=MiB), hive_id="hive-b").json()["download_id"]
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window, and it never reads
    slow.connect(("127.0.0.1", queen.port))
    request = f"GET /v1/downloads/{download_id}/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    slow.sendall(request.encode())
    try:
        wait_until(lambda: metric(queen, 'rbee_queen_sse_clients{stream="download"}') == 1, 5)
        hold.release()
        began = time.monotonic()
        fast = read_to_end(f"{queen.url}/v1/downloads/{download_id}/stream")
        assert_one_clean_stream(fast, "hive-b")
        assert time.monotonic() - began < 2 * MiB / MiB + 3  # about the download's own time
        slow.settimeout(10)
        received = b""
        while b"event: complete" not in received and (chunk := slow.recv(65536)):
            received += chunk  # the slow client still gets its terminal event when it reads at last
        assert b"event: complete" in received
    finally:
        slow.close()


# --------------------------------------------------------------------------- restarts


def test_a_client_resumes_across_a_queen_restart(env: Env) -> None:
    hive_a, hive_b = env.hive("hive-a"), env.hive("hive-b")
    port = free_port()
    queen_env = {
        "QUEEN_HIVES": f"hive-a={hive_a.url},hive-b={hive_b.url}",
        "RBEE_API_TOKEN": TOKEN,
        **{f"QUEEN_{k.upper()}": str(v) for k, v in FAST_QUEEN.items() if k != "api_token"},
    }
    queen = ServiceProcess("services.queen.main", port, queen_env, env.tmp / "queen.log").start()
    env.stack.callback(lambda: queen.stop())
    download_id = start(queen, env.file("long.bin", 2 * MiB, rate=640 * KiB), hive_id="hive-b").json()["download_id"]
    url = f"{queen.url}/v1/downloads/{download_id}/stream"

    before = read_to_end(url, stop=lambda e: e.json()["bytes"] > 0)
    queen.kill()  # SIGKILL: the new queen knows nothing of this download
    queen = ServiceProcess("services.queen.main", port, queen_env, env.tmp / "queen.log").start()
    after = read_to_end(url, {"Last-Event-ID": before[-1].id})

    assert after and int(after[0].id) > int(before[-1].id)
    assert_one_clean_stream(before + after, "hive-b")


def test_the_relay_across_a_hive_restart(env: Env) -> None:
    port = free_port()
    hive_env = {
        "HIVE_ID": "hive-r",
        "HIVE_MODELS_DIR": str(env.tmp / "hive-r"),
        "RBEE_API_TOKEN": TOKEN,
        **{f"HIVE_{k.upper()}": str(v) for k, v in FAST_HIVE.items()},
    }
    hive = ServiceProcess("services.hive.main", port, hive_env, env.tmp / "hive.log").start()
    env.stack.callback(lambda: hive.stop())
    # long enough for a restart on a busy machine (python start-up and recovery took over 4 s there)
    budget = 15.0
    queen = env.queen({"hive-r": hive.url}, unreachable_budget=budget)
    Hold(hive.url, AUTH)  # running when the hive is killed; the restarted hive starts without the cap
    download_id = start(queen, env.file("restart.bin", 2 * MiB, rate=512 * KiB)).json()["download_id"]
    events: list[ServerSentEvent] = []
    running, ended = threading.Event(), threading.Event()

    def client() -> None:
        def stop(e: ServerSentEvent) -> bool:
            if e.json()["bytes"] > 0:
                running.set()
            return False

        try:
            events.extend(read_to_end(f"{queen.url}/v1/downloads/{download_id}/stream", stop=stop))
        finally:
            ended.set()

    with api(hive) as hive_api:  # held at its first chunk: a stream that connects now gets those bytes at once
        wait_until(lambda: hive_api.get(f"/v2/downloads/{download_id}").json()["bytes_downloaded"] > 0, 10)
    reader = threading.Thread(target=client)
    reader.start()
    assert running.wait(10)
    hive.kill()
    killed = time.monotonic()
    hive.start()  # the same port and models dir
    reader.join(30)
    assert ended.is_set()
    with api(hive) as client_:
        known = client_.get(f"/v2/downloads/{download_id}").status_code == 200
    if known:  # the restarted hive recovered the download: the client sees one stream to `complete`
        assert_one_clean_stream(events, "hive-r")
        assert metric(queen, "rbee_queen_relay_reconnects_total") >= 1
    else:  # it did not: after the budget the client gets HIVE_UNREACHABLE, id = last + 1, and the end
        assert_one_clean_stream(events, "hive-r", final="error")
        assert events[-1].json()["code"] == "HIVE_UNREACHABLE"
        assert int(events[-1].id) == int(events[-2].id) + 1
        assert time.monotonic() - killed >= budget
        assert metric(queen, "rbee_queen_relay_reconnect_failures_total") >= 1
