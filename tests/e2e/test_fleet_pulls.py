"""Fleet pulls end to end: real `rbee-hive` processes and a real `rbee-queen` process on loopback,
pulling one multi-file model from the test hub (README, "Fleet pulls").

What is measured: the CDN's bytes against the model's LFS bytes (the hub is asked for each blob
about once, the hives feed each other), and every hive's snapshot as huggingface_hub reads it
(`snapshot_download(local_files_only=True)`), byte for byte. Transfers are held open with
HIVE_BANDWIDTH_LIMIT where a test needs a transfer in flight; everything waits with deadlines.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, connect_sse

from tests.e2e.fleet import AUTH, FILES, REPO, SHARD, WRITE_BATCH, Fleet, MiB
from tests.support import Hold, free_port, wait_until


def read_stream(
    url: str,
    headers: dict[str, str] | None = None,
    stop: Callable[[ServerSentEvent], bool] | None = None,
    seen: list[ServerSentEvent] | None = None,
) -> list[ServerSentEvent]:
    """A pull stream's events (keep-alive artefacts dropped) to its end, or until `stop` says so;
    appended to `seen` as they come, when given."""
    seen = [] if seen is None else seen
    with httpx.Client(timeout=httpx.Timeout(10, read=30)) as client:
        with connect_sse(client, "GET", url, headers={**AUTH, **(headers or {})}) as source:
            assert source.response.status_code == 200, source.response.read()
            for sse in source.iter_sse():
                if not sse.data:
                    continue
                seen.append(sse)
                if stop is not None and stop(sse):
                    break
    return seen


def assert_one_clean_stream(events: list[ServerSentEvent], final: str) -> None:
    ids = [int(e.id) for e in events]
    assert ids == sorted(set(ids)), ids  # strictly increasing
    kinds = [e.event for e in events]
    assert kinds[-1] == final and sum(k != "progress" for k in kinds) == 1, kinds


def test_a_pull_onto_four_hives_takes_each_blob_from_the_hub_about_once(fleet: Fleet) -> None:
    for name in ("hive-a", "hive-b", "hive-c", "hive-d"):
        fleet.add_hive(name, HIVE_BANDWIDTH_LIMIT=str(4 * MiB))
    commit = fleet.hub.repo(REPO).resolve("main").sha  # type: ignore[union-attr]
    started = fleet.started("all")
    assert started["commit"] == commit and set(started["downloads"]) == {"hive-a", "hive-b", "hive-c", "hive-d"}
    pull_id = started["pull_id"]

    events = read_stream(f"{fleet.queen.url}/v1/pulls/{pull_id}/stream")  # type: ignore[union-attr]
    assert_one_clean_stream(events, "complete")
    payloads = [json.loads(e.data) for e in events]
    assert all(p["pull_id"] == pull_id for p in payloads)
    last = {p["hive_id"]: p for p in payloads[:-1]}
    assert {h: p["status"] for h, p in last.items()} == dict.fromkeys(started["downloads"], "complete")
    assert payloads[-1]["pull"]["status"] == "complete" and payloads[-1]["bytes"] == payloads[-1]["total"]
    bytes_seen = [p["pull"]["bytes"] for p in payloads]
    assert bytes_seen == sorted(bytes_seen)  # the pull's bytes never go back on the stream

    state = fleet.ended(pull_id)
    model = sum(f.size for f in fleet.hub.repo(REPO).resolve("main").files.values())  # type: ignore[union-attr]
    assert state["status"] == "complete" and state["bytes"] == state["total"] == 4 * model
    for part in state["hives"]:
        assert part["status"] == "complete" and sum(part["sources"].values()) == model, part
    hub_bytes = sum(p["sources"].get("hub", 0) for p in state["hives"])
    peer_bytes = sum(n for p in state["hives"] for src, n in p["sources"].items() if src.startswith("http"))
    assert hub_bytes < 1.1 * model and peer_bytes > 2.9 * model
    ratio = fleet.hub.cdn.total_bytes_sent() / fleet.lfs_bytes()
    print(f"CDN bytes / the model's LFS bytes: {ratio:.3f} (4 hives)")
    assert ratio <= 1.1
    for name in started["downloads"]:
        fleet.assert_snapshot(name, commit)

    url = f"{fleet.queen.url}/v1/pulls/{pull_id}/stream"  # type: ignore[union-attr]
    with fleet.api() as client:
        assert client.get(url, headers={"Last-Event-ID": events[-1].id}).status_code == 204
        assert [p["pull_id"] for p in client.get("/v1/pulls").json()["pulls"]] == [pull_id]
        missing = client.get(f"/v1/pulls/pull-{'0' * 32}/stream")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", headers=AUTH, timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def cdn_path(sha256: str) -> str:
    return f"/repos/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def test_a_serving_peer_killed_mid_transfer_is_replaced_and_the_others_complete(fleet: Fleet) -> None:
    # slow enough that a follower (asking a seeder that has not begun again each second) catches the
    # seeder well before its end on a busy machine too
    names = ["hive-a", "hive-b", "hive-c", "hive-d"]
    started = fleet.started_held(names, 512 * 1024)
    downloads = started["downloads"]
    shard = fleet.hub.file(REPO, SHARD)

    def serving() -> tuple[str, str] | None:
        """(seeder, follower): the seeder of the big shard well short of its end, a follower reading it."""
        files = {h: fleet.files(h, d)[SHARD] for h, d in downloads.items()}
        seeders = [h for h, f in files.items() if f.get("source") == "hub" and f["bytes"] < shard.size * 3 // 4]
        for seeder in seeders:
            url = fleet.hives[seeder].url
            followers = [h for h, f in files.items() if f.get("source") == url and f["bytes"] > 0]
            if followers:
                return seeder, followers[0]
        return None

    seeder, follower = wait_until(serving, 60, interval=0.05, what="a peer serving the shard mid-transfer")
    Hold(fleet.hives[seeder].url, AUTH)  # 1 byte/s from here: the seeder stays mid-transfer
    assert fleet.files(seeder, downloads[seeder])[SHARD]["status"] == "downloading"
    fleet.hives[seeder].kill()  # SIGKILL

    state = fleet.ended(started["pull_id"])
    assert state["status"] == "failed" and state["failed_hives"] == [seeder], state
    survivors = [h for h in names if h != seeder]
    parts = {p["hive_id"]: p for p in state["hives"]}
    assert all(parts[h]["status"] == "complete" for h in survivors), parts
    for name in survivors:
        fleet.assert_snapshot(name, started["commit"])
    model = sum(f.size for f in fleet.hub.repo(REPO).resolve("main").files.values())  # type: ignore[union-attr]
    for name in survivors:  # nothing lost: each byte of the model received once, what a source gave kept
        assert metric(fleet.hives[name].url, "rbee_hive_bytes_downloaded_total") <= model + WRITE_BATCH, name
    assert metric(fleet.hives[follower].url, "rbee_hive_resumes_total") >= 1  # it went on with Range
    shard_requests = [r for r in fleet.hub.cdn.records() if r.path == cdn_path(shard.sha256)]
    sent = sum(r.bytes_sent for r in shard_requests)
    # Fewer copies from the hub than independent pulls would take (one a hive): the follower went on from
    # its partial with Range (from the hub or another peer; its resumes are counted above). Not "under
    # two copies": the CDN counts as sent what the kernel buffered for the seeder (up to the whole
    # shard), and a hive that had not begun the shard from the killed seeder when it died has no byte
    # of it and rightly takes it whole from the hub.
    assert sent < len(names) * shard.size, [(r.range, r.bytes_sent) for r in shard_requests]
    ratio = fleet.hub.cdn.total_bytes_sent() / fleet.lfs_bytes()
    print(f"CDN bytes / the model's LFS bytes with a seeder killed: {ratio:.3f}")
    assert fleet.files(follower, downloads[follower])[SHARD]["status"] == "complete"

    events = read_stream(f"{fleet.queen.url}/v1/pulls/{started['pull_id']}/stream")  # type: ignore[union-attr]
    assert_one_clean_stream(events, "error")
    end = json.loads(events[-1].data)
    assert end["pull"]["failed_hives"] == [seeder] and end["hives"][seeder] == "failed"
    assert end["code"] == "HIVE_UNREACHABLE" and seeder in end["error"]


def test_a_peer_serving_damaged_bytes_is_dropped_and_the_file_comes_from_elsewhere(fleet: Fleet) -> None:
    holder = fleet.add_hive("hive-a")
    first = fleet.started(["hive-a"])
    assert fleet.ended(first["pull_id"])["status"] == "complete"
    shard = fleet.hub.file(REPO, SHARD)
    (blob,) = fleet.models["hive-a"].rglob(f"blobs/{shard.sha256}")
    damaged = bytearray(blob.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    blob.write_bytes(bytes(damaged))  # hive-a holds the shard under its digest, one byte wrong
    fleet.add_hive("hive-b")
    fleet.add_hive("hive-c")
    sent = fleet.hub.cdn.total_bytes_sent()

    pull = fleet.started(["hive-a", "hive-b", "hive-c"])
    state = fleet.ended(pull["pull_id"])
    assert state["status"] == "complete", state
    for name in ("hive-b", "hive-c"):
        fleet.assert_snapshot(name, pull["commit"])
        files = fleet.files(name, pull["downloads"][name])
        assert files[SHARD]["source"] != holder.url, files[SHARD]  # dropped: taken from the hub or hive-b
        assert {f["source"] for p, f in files.items() if p != SHARD} == {holder.url}  # the rest from hive-a
    assert fleet.hub.cdn.total_bytes_sent() - sent <= 2 * shard.size  # only the damaged shard again


def test_a_hive_added_after_a_pull_finished_copies_the_model_from_its_peers_alone(fleet: Fleet) -> None:
    fleet.add_hive("hive-a")
    fleet.add_hive("hive-b")
    first = fleet.started("all")
    assert fleet.ended(first["pull_id"])["status"] == "complete"
    sent, resolves = fleet.hub.cdn.total_bytes_sent(), fleet.hub.resolver_calls()

    fleet.add_hive("hive-e")
    fleet.register("ghost", f"http://127.0.0.1:{free_port()}")  # down: "all" leaves it out once that is known

    def down() -> bool:
        hives = fleet.api().get("/v1/hives").json()["hives"]
        return any(h["hive_id"] == "ghost" and h["health"] == "unhealthy" for h in hives)

    wait_until(down, 10, what="the queen to find the ghost down")
    pull = fleet.started("all")
    assert pull["commit"] == first["commit"] and set(pull["downloads"]) == {"hive-a", "hive-b", "hive-e"}
    state = fleet.ended(pull["pull_id"])
    assert state["status"] == "complete", state
    assert fleet.hub.cdn.total_bytes_sent() == sent and fleet.hub.resolver_calls() == resolves  # no hub byte
    part = {p["hive_id"]: p for p in state["hives"]}["hive-e"]
    peers = {fleet.hives["hive-a"].url, fleet.hives["hive-b"].url}
    assert set(part["sources"]) <= peers and sum(part["sources"].values()) == part["total"], part
    fleet.assert_snapshot("hive-e", pull["commit"])


def nothing_started(fleet: Fleet) -> bool:
    return all(not fleet.hive_downloads(h) for h in fleet.hives) and fleet.hub.cdn.total_bytes_sent() == 0


def test_each_preflight_failure_starts_nothing_and_names_the_hive(fleet: Fleet, tmpfs: Path) -> None:
    fleet.hub.add_token("hf_allowed")
    fleet.add_hive("hive-a", HF_TOKEN="hf_allowed")
    fleet.add_hive("hive-b")  # no token
    fleet.add_hive("small", models=tmpfs, HF_TOKEN="hf_allowed")  # 3 MiB: the model does not fit

    unknown = fleet.pull(["hive-a", "nope"])
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["error"]["code"] == "UNKNOWN_HIVE" and unknown.json()["error"]["hive_id"] == "nope"

    full = fleet.pull(["hive-a", "small"])
    assert full.status_code == 507, full.text
    error = full.json()["error"]
    assert error["code"] == "INSUFFICIENT_DISK" and error["hive_id"] == "small" and "small" in error["message"]
    assert nothing_started(fleet)

    fleet.register("ghost", f"http://127.0.0.1:{free_port()}")  # nobody listens there
    gone = fleet.pull(["hive-a", "ghost"])
    assert gone.status_code == 503, gone.text
    assert gone.json()["error"]["code"] == "HIVE_UNREACHABLE" and gone.json()["error"]["hive_id"] == "ghost"
    assert nothing_started(fleet)

    fleet.hub.add_repo("org/gated", gated=True)
    fleet.hub.commit("org/gated", FILES)
    fleet.hub.grant("org/gated", "hf_allowed")
    gated = fleet.pull(["hive-a", "hive-b"], model_ref="hf:org/gated")
    assert gated.status_code == 422, gated.text
    error = gated.json()["error"]
    assert error["code"] == "GATED_REPO" and error["hive_id"] == "hive-b"
    assert [f["hive_id"] for f in error["failures"]] == ["hive-b"]
    assert nothing_started(fleet)

    missing = fleet.pull(["hive-a"], model_ref="hf:org/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "REPO_NOT_FOUND", missing.text
    one_file = fleet.pull(["hive-a"], model_ref=f"hf:{REPO}::file=config.json")
    assert one_file.status_code == 422 and one_file.json()["error"]["code"] == "INVALID_MODEL_REF", one_file.text
    assert nothing_started(fleet)


def test_a_pull_survives_a_queen_restart_and_is_cancelled_on_every_hive(fleet: Fleet) -> None:
    names = ["hive-a", "hive-b", "hive-c", "hive-d"]
    started = fleet.started_held(names, 256 * 1024)
    pull_id = started["pull_id"]
    assert fleet.queen is not None
    url = f"{fleet.queen.url}/v1/pulls/{pull_id}/stream"
    before = read_stream(url, stop=lambda e: json.loads(e.data)["pull"]["bytes"] > 0)

    port = fleet.queen.port
    fleet.queen.kill()  # SIGKILL: the new queen has never heard of the pull
    fleet.start_queen(port)
    for name in names:  # the hives are registered again (as they would with HIVE_QUEEN_URL)
        fleet.register(name, fleet.hives[name].url)
    state = fleet.state(pull_id)
    assert state["status"] == "running" and state["commit"] == started["commit"]
    assert {p["hive_id"]: p["download_id"] for p in state["hives"]} == started["downloads"]
    assert [p["pull_id"] for p in fleet.api().get("/v1/pulls").json()["pulls"]] == [pull_id]

    after: list[ServerSentEvent] = []
    reader = threading.Thread(target=read_stream, args=(url, {"Last-Event-ID": before[-1].id}, None, after))
    reader.start()
    wait_until(lambda: after or None, 20, what="an event after the restart")
    with fleet.api() as client:
        cancelled = client.delete(f"/v1/pulls/{pull_id}")
    assert cancelled.status_code == 200, cancelled.text
    reader.join(timeout=30)
    assert int(after[0].id) > int(before[-1].id)
    assert_one_clean_stream(before + after, "cancelled")
    state = fleet.state(pull_id)
    assert state["status"] == "cancelled" and {p["status"] for p in state["hives"]} == {"cancelled"}
    for name in names:
        assert [d["status"] for d in fleet.hive_downloads(name)] == ["cancelled"]


def test_a_cancel_that_cannot_reach_a_hive_says_so_and_is_applied_when_the_hive_is_back(fleet: Fleet) -> None:
    """DELETE /v1/pulls/{id} with one hive stopped (SIGSTOP): the answer names it in `cancel_pending`,
    and the queen cancels its part once it answers again; it never completes a cancelled pull."""
    started = fleet.started_held(["hive-a", "hive-b"], 256 * 1024)
    pull_id = started["pull_id"]
    wait_until(lambda: fleet.state(pull_id)["bytes"] > 0 or None, 30, what="bytes moving")
    stopped = fleet.hives["hive-b"]
    assert stopped.proc is not None
    stopped.proc.send_signal(signal.SIGSTOP)
    try:
        with fleet.api() as client:
            answer = client.delete(f"/v1/pulls/{pull_id}")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["cancel_pending"] == ["hive-b"], body
        parts = {p["hive_id"]: p["status"] for p in body["hives"]}
        assert parts == {"hive-a": "cancelled", "hive-b": "unknown"}, parts
    finally:
        stopped.proc.send_signal(signal.SIGCONT)

    def reapplied() -> dict[str, Any] | None:
        state = fleet.state(pull_id)
        return state if not state["cancel_pending"] and state["status"] != "running" else None

    state = wait_until(reapplied, 30, interval=0.2, what="the cancel to reach hive-b")
    assert state["status"] == "cancelled", state
    assert {p["hive_id"]: p["status"] for p in state["hives"]} == {"hive-a": "cancelled", "hive-b": "cancelled"}
    assert [d["status"] for d in fleet.hive_downloads("hive-b")] == ["cancelled"]
    assert not list((fleet.models["hive-b"] / "hub").glob("models--*/snapshots/*/*"))  # no snapshot written


def test_a_pull_stream_ignores_a_last_event_id_of_unicode_digits(fleet: Fleet) -> None:
    fleet.add_hive("hive-a")
    started = fleet.started(["hive-a"])
    assert fleet.queen is not None
    for path in (f"/v1/pulls/{started['pull_id']}/stream", f"/v1/downloads/{started['downloads']['hive-a']}/stream"):
        with httpx.Client(timeout=httpx.Timeout(10, read=30)) as client:
            # '²'.isdigit() is True but int('²') fails; a header's bytes are read as latin-1
            with client.stream("GET", f"{fleet.queen.url}{path}", headers={**AUTH, "Last-Event-ID": b"\xb2"}) as resp:
                assert resp.status_code in (200, 204), (path, resp.read())
                assert resp.headers.get("content-type", "").startswith("text/event-stream") or resp.status_code == 204
