"""Hives feeding each other: `GET /v2/blobs/{digest}` and downloads told where a blob can come from.

Real hives on loopback against the test hub. A hive serves a blob it holds, and the part of one it
is still downloading that is on disk (the body follows the partial as it grows); a hive told a peer
has or is getting a blob fetches it there first, verifies it against the pinned digest, and falls
back to the next source (with Range) when the peer dies or serves damaged bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from services.hive.peers import blobs
from services.hive.peers.blobs import BadRange, parse_range
from services.modelserver.hub import Hub, HubSwitches
from services.modelserver.hub_repo import Generated
from tests.hub_fixtures import HubSetup
from tests.support import Hold, ServerThread, wait_until

MiB = 1024 * 1024
REPO = "org/fleet"
FILES: dict[str, bytes | Generated] = {
    "config.json": b'{"hidden": 64}\n',
    "model-00001-of-00002.safetensors": Generated(3 * MiB + 1, seed=11),
    "model-00002-of-00002.safetensors": Generated(2 * MiB + 3, seed=12),
}
TERMINAL = {"complete", "failed", "cancelled"}


@pytest.fixture
def hub_setup() -> HubSetup:
    hive = {"range_limit_bytes": MiB, "write_batch_bytes": 64 * 1024}
    return HubSetup((REPO,), cdn_max_unranged_bytes=MiB, switches=HubSwitches(), hive=hive)


def digests(hub: Hub) -> dict[str, str]:
    """path -> the digest the cache names its blob by."""
    commit = hub.repo(REPO).resolve("main")
    assert commit is not None
    return {p: (f.sha256 if f.lfs else f.blob_id) for p, f in commit.files.items()}


def start(url: str, **body: Any) -> str:
    resp = httpx.post(f"{url}/v2/downloads", json={"model_ref": f"hf:{REPO}", **body}, timeout=10)
    assert resp.status_code in (200, 202), resp.text
    return str(resp.json()["download_id"])


def finished(url: str, download_id: str, timeout: float = 60) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        state = httpx.get(f"{url}/v2/downloads/{download_id}", timeout=10).json()
        return state if state["status"] in TERMINAL else None

    return wait_until(ended, timeout, what=f"{download_id} to end")


def test_a_range_is_one_span_inside_the_blob() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=0-", 10) == (0, 10)
    assert parse_range("bytes=3-4", 10) == (3, 5)
    assert parse_range("bytes=3-99", 10) == (3, 10)
    bad_ranges = ("bytes=10-", "bytes=-5", "bytes=0-1,3-4", "items=0-1", "bytes=5-2", "bytes=x-")
    for bad in (*bad_ranges, "bytes=²-", "bytes=0-²"):  # Unicode digits are no digits
        with pytest.raises(BadRange):
            parse_range(bad, 10)


def test_a_hive_serves_the_blobs_it_holds_by_digest(hub: Hub, make_hub_hive: Callable[..., ServerThread]) -> None:
    hub.commit(REPO, FILES)
    seeder = make_hub_hive()
    assert finished(seeder.url, start(seeder.url))["status"] == "complete"
    for path, digest in digests(hub).items():
        want = hub.file(REPO, path).content()
        whole = httpx.get(f"{seeder.url}/v2/blobs/{digest}", timeout=10)
        assert whole.status_code == 200 and whole.content == want and whole.headers["etag"] == f'"{digest}"'
        assert whole.headers["x-rbee-blob-state"] == "complete"
        if len(want) > 10:
            part = httpx.get(f"{seeder.url}/v2/blobs/{digest}", headers={"Range": "bytes=5-9"}, timeout=10)
            assert part.status_code == 206 and part.content == want[5:10]
            assert part.headers["content-range"] == f"bytes 5-9/{len(want)}"
            # a Unicode digit is no digit of a range: 416 with the JSON error, never a 500
            odd_range = {"Range": "bytes=²-".encode("latin-1")}  # (a header's bytes are read as latin-1)
            odd = httpx.get(f"{seeder.url}/v2/blobs/{digest}", headers=odd_range, timeout=10)
            assert odd.status_code == 416 and odd.json()["error"]["code"] == "RANGE_NOT_SATISFIABLE", odd.text
    unknown = httpx.get(f"{seeder.url}/v2/blobs/{'0' * 64}", timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NOT_FOUND"
    assert httpx.get(f"{seeder.url}/v2/blobs/..%2F..%2Fhive.db", timeout=10).status_code == 404


def test_a_peer_copy_takes_no_byte_from_the_hub(hub: Hub, make_hub_hive: Callable[..., ServerThread]) -> None:
    commit = hub.commit(REPO, FILES)
    seeder, copier = make_hub_hive(), make_hub_hive()
    assert finished(seeder.url, start(seeder.url))["status"] == "complete"
    sent, resolves = hub.cdn.total_bytes_sent(), hub.resolver_calls()
    sources = {d: [seeder.url] for d in digests(hub).values()}
    state = finished(copier.url, start(copier.url, commit=commit, sources=sources))
    assert state["status"] == "complete" and state["commit"] == commit, state
    assert hub.cdn.total_bytes_sent() == sent and hub.resolver_calls() == resolves
    assert {f["source"] for f in state["files"]} == {seeder.url}
    for path in FILES:
        assert (Path(state["path"]) / path).read_bytes() == hub.file(REPO, path).content()


@pytest.mark.parametrize(
    "follower_settings",
    [{}, {"peer_min_bps": 16 * MiB, "peer_slow_secs": 0.5}],
    ids=["defaults", "a-floor-above-the-seeders-rate"],
)
def test_a_peer_still_downloading_is_followed_as_its_partial_grows(
    hub: Hub, make_hub_hive: Callable[..., ServerThread], tmp_path: Path, follower_settings: dict[str, Any]
) -> None:
    """A partial grows as fast as its seeder's own source gives it: however slow, the follower keeps
    it (HIVE_PEER_MIN_BPS judges a peer's complete blobs only) and takes no byte from the hub."""
    commit = hub.commit(REPO, FILES)
    seeder_models = tmp_path / "seeder"
    seeder = make_hub_hive(bandwidth_limit=2 * MiB, segments=1, models_dir=seeder_models)
    follower = make_hub_hive(**follower_settings)
    first = start(seeder.url)
    wait_until(lambda: any(p.stat().st_size > 0 for p in seeder_models.rglob("*.part")), 30, what="a partial")
    sources = {d: [seeder.url] for d in digests(hub).values()}
    state = finished(follower.url, start(follower.url, commit=commit, sources=sources))
    assert state["status"] == "complete", state
    assert finished(seeder.url, first)["status"] == "complete"
    lfs = sum(f.size for f in hub.repo(REPO).resolve("main").files.values() if f.lfs)  # type: ignore[union-attr]
    assert hub.cdn.total_bytes_sent() == lfs  # the follower's bytes all came from the seeder
    for path in FILES:
        assert (Path(state["path"]) / path).read_bytes() == hub.file(REPO, path).content()


def test_a_blob_body_cut_short_by_a_cancel_is_logged_as_such_without_a_traceback(
    hub: Hub, make_hub_hive: Callable[..., ServerThread], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reader told the body may end short (README, "Fleet pulls") is normal operation: one info line."""
    caplog.set_level(logging.INFO)
    hub.commit(REPO, FILES)
    seeder_models = tmp_path / "seeder"
    seeder = make_hub_hive(bandwidth_limit=MiB, segments=1, models_dir=seeder_models)
    download_id = start(seeder.url)
    big = next(d for p, d in digests(hub).items() if p.startswith("model-00001"))
    wait_until(lambda: any(p.stat().st_size > 0 for p in seeder_models.rglob(f"{big}.part")), 30, what="a partial")
    got, cancelled = bytearray(), list[httpx.Response]()
    with httpx.Client(timeout=httpx.Timeout(10, read=20)) as client:
        with client.stream("GET", f"{seeder.url}/v2/blobs/{big}") as resp:
            assert resp.headers["x-rbee-blob-state"] == "partial"
            declared = int(resp.headers["content-length"])
            with pytest.raises(httpx.RemoteProtocolError):  # the body ends short: the reader is told so
                for chunk in resp.iter_raw():
                    got += chunk
                    if len(got) >= 64 * 1024 and not cancelled:
                        cancelled.append(httpx.delete(f"{seeder.url}/v2/downloads/{download_id}", timeout=30))
    assert 0 < len(got) < declared
    # (uvicorn logs the body's end before it closes the connection the reader saw close)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [(r.name, r.getMessage(), r.exc_info) for r in errors]


def test_a_peer_whose_pull_part_has_not_started_yet_is_waited_for(
    hub: Hub, make_hub_hive: Callable[..., ServerThread]
) -> None:
    commit = hub.commit(REPO, FILES)
    hub.add_repo("org/other")
    hub.commit("org/other", {"blocker.bin": Generated(MiB, seed=5)})
    seeder = make_hub_hive(max_concurrent=1)
    follower = make_hub_hive()
    pull = {"commit": commit, "pull_id": "pull-" + "1" * 32}
    blobs = digests(hub)
    with Hold(seeder.url) as hold:
        blocker = start(seeder.url, model_ref="hf:org/other::file=blocker.bin")  # holds the seeder's one slot
        seeding = start(seeder.url, hub_first=sorted(blobs.values()), **pull)
        assert httpx.get(f"{seeder.url}/v2/downloads/{seeding}", timeout=10).json()["status"] == "queued"
        copy = start(follower.url, sources={d: [seeder.url] for d in blobs.values()}, **pull)

        def asking() -> bool:
            state = httpx.get(f"{follower.url}/v2/downloads/{copy}", timeout=10).json()
            return any(f.get("source") == seeder.url for f in state.get("files") or [])

        wait_until(asking, 10, what="the follower to ask the seeder")
        hold.release()
    assert finished(seeder.url, blocker)["status"] == "complete"
    assert finished(seeder.url, seeding)["status"] == "complete"
    state = finished(follower.url, copy)
    assert state["status"] == "complete", state
    assert {f["source"] for f in state["files"]} == {seeder.url}
    lfs = [f for f in hub.repo(REPO).resolve("main").files.values() if f.lfs]  # type: ignore[union-attr]
    sent = sum(hub.cdn.total_bytes_sent(f"/repos/{f.sha256[:2]}/{f.sha256[2:4]}/{f.sha256}") for f in lfs)
    assert sent == sum(f.size for f in lfs)  # one copy of the model


def test_a_peer_that_is_gone_is_passed_over_for_the_hub(
    hub: Hub, make_hub_hive: Callable[..., ServerThread], tmp_path: Path
) -> None:
    commit = hub.commit(REPO, FILES)
    seeder, copier = make_hub_hive(), make_hub_hive()
    assert finished(seeder.url, start(seeder.url))["status"] == "complete"
    seeder.stop()  # gone: connections refused
    sources = {d: [seeder.url] for d in digests(hub).values()}
    state = finished(copier.url, start(copier.url, commit=commit, sources=sources))
    assert state["status"] == "complete", state
    assert {f["source"] for f in state["files"]} == {"hub"}


def test_a_peer_serving_damaged_bytes_is_dropped_and_the_file_fetched_elsewhere(
    hub: Hub, make_hub_hive: Callable[..., ServerThread], tmp_path: Path
) -> None:
    commit = hub.commit(REPO, FILES)
    seeder_models = tmp_path / "seeder"
    seeder, copier = make_hub_hive(models_dir=seeder_models), make_hub_hive()
    assert finished(seeder.url, start(seeder.url))["status"] == "complete"
    shard = "model-00002-of-00002.safetensors"
    digest = digests(hub)[shard]
    (blob,) = seeder_models.rglob(f"blobs/{digest}")
    data = bytearray(blob.read_bytes())
    data[1000] ^= 0xFF
    blob.write_bytes(bytes(data))  # the seeder's copy is damaged, under the right name
    state = finished(copier.url, start(copier.url, commit=commit, sources={digest: [seeder.url]}))
    assert state["status"] == "complete", state
    got = (Path(state["path"]) / shard).read_bytes()
    assert hashlib.sha256(got).hexdigest() == digest
    by_path = {f["path"]: f for f in state["files"]}
    assert by_path[shard]["source"] == "hub"


def test_a_plan_tells_the_commit_the_files_and_what_is_missing_here(
    hub: Hub, make_hub_hive: Callable[..., ServerThread]
) -> None:
    commit = hub.commit(REPO, FILES)
    hive = make_hub_hive()
    plan = httpx.post(f"{hive.url}/v2/plans", json={"model_ref": f"hf:{REPO}"}, timeout=10).json()
    sizes = {p: f.size for p, f in hub.repo(REPO).resolve("main").files.items()}  # type: ignore[union-attr]
    assert plan["commit"] == commit and {f["path"]: f["size"] for f in plan["files"]} == sizes
    assert {f["path"]: f["digest"] for f in plan["files"]} == digests(hub)
    assert plan["needed_bytes"] == plan["total_bytes"] == sum(sizes.values()) and plan["fits"] is True
    assert plan["access_error"] is None and plan["free_bytes"] > 0
    assert hub.cdn.total_bytes_sent() == 0  # nothing fetched
    assert finished(hive.url, start(hive.url, include=["*.json", "model-00002-*"]))["status"] == "complete"
    again = httpx.post(f"{hive.url}/v2/plans", json={"model_ref": f"hf:{REPO}", "commit": commit}, timeout=10).json()
    shard = sizes["model-00001-of-00002.safetensors"]
    assert again["needed_bytes"] == shard + sizes[".gitattributes"]
    assert {f["path"] for f in again["files"] if not f["present"]} == {
        "model-00001-of-00002.safetensors",
        ".gitattributes",
    }


def test_a_plan_says_when_the_hub_refuses_this_hive(hub: Hub, make_hub_hive: Callable[..., ServerThread]) -> None:
    commit = hub.commit(REPO, FILES)
    hub.repo(REPO).gated = True
    hive = make_hub_hive()
    for pinned in ({"commit": commit}, {}):  # the resolving plan too: every hive of a pull is asked
        plan = httpx.post(f"{hive.url}/v2/plans", json={"model_ref": f"hf:{REPO}", **pinned}, timeout=10)
        assert plan.status_code == 200 and plan.json()["access_error"]["code"] == "GATED_REPO"
        assert plan.json()["commit"] == commit and plan.json()["files"]
    missing = httpx.post(f"{hive.url}/v2/plans", json={"model_ref": "hf:org/nothing"}, timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "REPO_NOT_FOUND"
    one_file = httpx.post(f"{hive.url}/v2/plans", json={"model_ref": f"hf:{REPO}::file=config.json"}, timeout=10)
    assert one_file.status_code == 422 and one_file.json()["error"]["code"] == "INVALID_MODEL_REF"


def test_a_cancelled_blob_body_never_closes_a_descriptor_under_a_running_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starlette cancels a body with an anyio cancel scope, which cancels again every await inside it:
    the descriptor must still outlive the read running on it in a thread."""
    real_pread = os.pread
    started, release, finished, bad = (threading.Event() for _ in range(4))

    def held_pread(fd: int, n: int, off: int) -> bytes:
        started.set()
        release.wait(10)  # the body is cancelled while this read runs
        try:
            return real_pread(fd, n, off)
        except OSError:
            bad.set()  # EBADF: closed under the running read
            raise
        finally:
            finished.set()

    path = tmp_path / "blob"
    path.write_bytes(os.urandom(4 * MiB))
    view = blobs.BlobView("0" * 64, path, None, path.stat().st_size)
    monkeypatch.setattr(blobs.os, "pread", held_pread)

    async def body() -> None:
        async def read() -> None:
            async for _ in blobs.follow(view, 0, None, lambda: view):
                pass

        async with anyio.create_task_group() as group:
            group.start_soon(read)
            await anyio.to_thread.run_sync(started.wait, 10)
            group.cancel_scope.cancel()  # the client went away
        release.set()
        await anyio.to_thread.run_sync(finished.wait, 10)
        await anyio.lowlevel.checkpoint()  # (the descriptor's close runs once the read is done)

    anyio.run(body)
    assert finished.is_set() and not bad.is_set()
