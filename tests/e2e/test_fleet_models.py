"""The fleet's model store through the queen, end to end: real `rbee-hive` processes, a real `rbee-queen`
process and the test hub on loopback (README, "The model store", "Fleet pulls").

- `GET /v1/models` shows what every hive holds, kept current from the hives' streams;
- delete, pin and unpin go to the hives named (or every holder), a result per hive, and the queen
  relays the hives' `model` events on `/v1/downloads/stream`;
- a hive alone in a pull, or given a plain download, takes no byte from the hub while another hive
  holds the model (the test hub's CDN counts every LFS byte it sends);
- a model asked of the queen without a hive goes to the hive that holds it complete.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
from typing import Any

import httpx
from httpx_sse import connect_sse

from services.modelserver.hub_repo import Generated
from tests.e2e.fleet import AUTH, FILES, REPO, Fleet, MiB
from tests.support import Hold, wait_until


def models(fleet: Fleet) -> dict[str, Any]:
    with fleet.api() as client:
        resp = client.get("/v1/models")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def holders(fleet: Fleet, repo_id: str = REPO) -> dict[str, dict[str, Any]]:
    """hive_id -> that hive's copy of the model, as GET /v1/models shows it."""
    for model in models(fleet)["models"]:
        if model["repo_id"] == repo_id:
            return {h["hive_id"]: h for h in model["hives"]}
    return {}


def shown_complete_on(fleet: Fleet, hive_ids: set[str], timeout: float = 30) -> dict[str, dict[str, Any]]:
    def check() -> dict[str, dict[str, Any]] | None:
        found = holders(fleet)
        return found if {h for h, c in found.items() if c["complete"]} >= hive_ids else None

    return wait_until(check, timeout, interval=0.1, what=f"{REPO} complete on {sorted(hive_ids)} in GET /v1/models")


def pulled(fleet: Fleet, hive_ids: list[str]) -> dict[str, Any]:
    started = fleet.started(hive_ids)
    state = fleet.ended(started["pull_id"])
    assert state["status"] == "complete", state
    return state


class ModelEvents:
    """The `model` events of the queen's aggregated stream, read in a thread."""

    def __init__(self, url: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self._thread.start()
        assert self.ready.wait(15), "the aggregated stream did not open"

    def _read(self, url: str) -> None:
        with httpx.Client(timeout=httpx.Timeout(10, read=3)) as client:
            with connect_sse(client, "GET", url, headers=AUTH) as source:
                self.ready.set()
                with contextlib.suppress(httpx.ReadTimeout):
                    for sse in source.iter_sse():
                        if sse.event == "model":
                            self.events.append({**json.loads(sse.data), "id": sse.id})
                        if self._stop.is_set():
                            return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(15)


def test_the_fleet_inventory_delete_and_pin_through_the_queen(fleet: Fleet) -> None:
    for name in ("hive-1", "hive-2"):
        fleet.add_hive(name)
    assert fleet.queen is not None
    stream = ModelEvents(f"{fleet.queen.url}/v1/downloads/stream")
    try:
        commit = pulled(fleet, ["hive-1", "hive-2"])["commit"]
        copies = shown_complete_on(fleet, {"hive-1", "hive-2"})
        body = models(fleet)
        assert body["unreachable_hives"] == []
        assert {d["hive_id"] for d in body["hives"]} == {"hive-1", "hive-2"}
        assert all(d["used"] >= copies[d["hive_id"]]["size_on_disk"] > 0 for d in body["hives"])
        assert all(c["commits"] == [commit] and not c["pinned"] for c in copies.values())
        scraped = httpx.get(f"{fleet.queen.url}/metrics", headers=AUTH, timeout=10).text
        samples = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in scraped.splitlines() if line[:1] != "#"
        }
        for disk in body["hives"]:
            assert samples[f'rbee_queen_hive_models{{hive_id="{disk["hive_id"]}"}}'] == 1
            assert samples[f'rbee_queen_hive_cache_bytes{{hive_id="{disk["hive_id"]}"}}'] == disk["used"]
        added = wait_until(
            lambda: {e["hive_id"] for e in stream.events if e["action"] == "added"} >= {"hive-1", "hive-2"},
            15,
            what="the hives' added events relayed",
        )
        assert added and all(e["orchestrator_id"] == "queen-1" for e in stream.events)

        with fleet.api() as client:
            pin = client.put(f"/v1/models/{REPO}/pin", params={"hives": "hive-1"})
            assert pin.status_code == 200, pin.text
            assert pin.json() == {
                "repo_id": REPO,
                "results": [{"hive_id": "hive-1", "ok": True, "status": 200, "error": None}],
            }
            assert holders(fleet)["hive-1"]["pinned"] and not holders(fleet)["hive-2"]["pinned"]

            refused = client.delete(f"/v1/models/{REPO}")  # every holder: the pinned one refuses
            assert refused.status_code == 200, refused.text
            results = {r["hive_id"]: r for r in refused.json()["results"]}
            assert results["hive-2"]["ok"] and results["hive-2"]["status"] == 200
            assert not results["hive-1"]["ok"] and results["hive-1"]["status"] == 409
            assert results["hive-1"]["error"]["code"] == "MODEL_PINNED"
            assert set(holders(fleet)) == {"hive-1"}

            for bad, status in [("/v1/models/a..b/c", 422), ("/v1/models/org/fleet?hives=hive-9", 404)]:
                answer = client.delete(bad)
                assert answer.status_code == status and "error" in answer.json(), answer.text
            assert set(holders(fleet)) == {"hive-1"}  # bad input changed nothing

            assert client.delete(f"/v1/models/{REPO}/pin").json()["results"][0]["ok"]
            gone = client.delete(f"/v1/models/{REPO}", params={"hives": "all"})
            results = {r["hive_id"]: r for r in gone.json()["results"]}
            assert results["hive-1"]["ok"] and results["hive-2"]["status"] == 404  # (it holds it no more)
            assert holders(fleet) == {}
            assert not (fleet.models["hive-1"] / "hub" / "models--org--fleet").exists()
        wait_until(
            lambda: (
                {(e["hive_id"], e["action"]) for e in stream.events}
                >= {("hive-1", "pinned"), ("hive-2", "deleted"), ("hive-1", "deleted")}
            ),
            15,
            what="the pin and deletes relayed",
        )
    finally:
        stream.close()


def test_a_hive_alone_in_a_pull_takes_no_byte_from_the_hub_while_others_hold_the_model(fleet: Fleet) -> None:
    for name in ("hive-1", "hive-2"):
        fleet.add_hive(name)
    commit = pulled(fleet, ["hive-1", "hive-2"])["commit"]
    shown_complete_on(fleet, {"hive-1", "hive-2"})
    before = fleet.hub.cdn.total_bytes_sent()

    fleet.add_hive("hive-3")
    wait_until(lambda: "hive-3" in {d["hive_id"] for d in models(fleet)["hives"]}, 15, what="hive-3 loaded")
    state = pulled(fleet, ["hive-3"])
    (part,) = state["hives"]
    assert part["hive_id"] == "hive-3" and part["sources"].get("hub", 0) == 0, part
    assert sum(part["sources"].values()) == sum(f.size for f in fleet.hub.repo(REPO).resolve("main").files.values())  # type: ignore[union-attr]
    assert fleet.hub.cdn.total_bytes_sent() == before
    fleet.assert_snapshot("hive-3", commit)
    shown_complete_on(fleet, {"hive-1", "hive-2", "hive-3"})


def test_a_model_goes_to_its_holder_and_a_plain_download_elsewhere_takes_it_from_the_holder(fleet: Fleet) -> None:
    for name in ("hive-1", "hive-2"):
        fleet.add_hive(name)
    commit = pulled(fleet, ["hive-2"])["commit"]
    shown_complete_on(fleet, {"hive-2"})
    before = fleet.hub.cdn.total_bytes_sent()
    with fleet.api() as client:
        # hive-1 is as idle and first by id: only presence sends it to hive-2, which has it complete
        placed = client.post("/v1/downloads", json={"model_ref": f"hf:{REPO}"})
        assert placed.status_code in (200, 202), placed.text
        assert placed.json()["hive_id"] == "hive-2" and placed.json()["status"] == "complete", placed.json()

        named = client.post("/v1/downloads", json={"model_ref": f"hf:{REPO}", "hive_id": "hive-1"})
        assert named.status_code == 202, named.text
        download_id = named.json()["download_id"]

        def ended() -> dict[str, Any] | None:
            state: dict[str, Any] = client.get(f"/v1/downloads/{download_id}").json()
            return state if state["status"] in ("complete", "failed", "cancelled") else None

        state = wait_until(ended, 60, interval=0.2, what="the download on hive-1")
    assert state["status"] == "complete", state
    assert state["commit"] == commit and len(state["files"]) >= len(FILES), state
    assert all(f["source"] != "hub" for f in state["files"]), state["files"]  # every file from hive-2
    assert fleet.hub.cdn.total_bytes_sent() == before
    fleet.assert_snapshot("hive-1", commit)


def test_a_hive_down_is_unreachable_and_what_changed_meanwhile_shows_once_it_is_back(fleet: Fleet) -> None:
    for name in ("hive-1", "hive-2"):
        fleet.add_hive(name)
    pulled(fleet, ["hive-1", "hive-2"])
    shown_complete_on(fleet, {"hive-1", "hive-2"})
    hive = fleet.hives["hive-1"]
    hive.kill()

    def hidden() -> bool:
        body = models(fleet)
        return body["unreachable_hives"] == ["hive-1"] and set(holders(fleet)) == {"hive-2"}

    wait_until(hidden, 15, interval=0.1, what="hive-1 unreachable in GET /v1/models, its copy not shown")
    assert [d["hive_id"] for d in models(fleet)["hives"]] == ["hive-2"]
    with fleet.api() as client:  # a change there: its result says it could not be reached
        (result,) = client.put(f"/v1/models/{REPO}/pin", params={"hives": "hive-1"}).json()["results"]
    assert result["ok"] is False and result["status"] is None and result["error"]["code"] == "HIVE_UNREACHABLE"
    # meanwhile another tool removes the model from hive-1's cache: no event will ever say so
    shutil.rmtree(fleet.models["hive-1"] / "hub" / "models--org--fleet")
    hive.start()

    def back() -> bool:
        body = models(fleet)
        return body["unreachable_hives"] == [] and len(body["hives"]) == 2

    wait_until(back, 20, interval=0.1, what="hive-1 back in GET /v1/models")
    assert set(holders(fleet)) == {"hive-2"}  # its whole list, loaded again when its stream came back


def test_a_download_running_on_a_holder_shows_it_in_use_until_it_ends(fleet: Fleet) -> None:
    fleet.add_hive("hive-1")
    first = pulled(fleet, ["hive-1"])["commit"]
    shown_complete_on(fleet, {"hive-1"})
    second = fleet.hub.commit(REPO, {"config.json": b'{"hidden": 128}\n', "extra.bin": Generated(MiB, seed=5)})
    with Hold(fleet.hives["hive-1"].url, AUTH), fleet.api() as client:
        started = client.post("/v1/downloads", json={"model_ref": f"hf:{REPO}", "hive_id": "hive-1"})
        assert started.status_code == 202, started.text
        wait_until(lambda: holders(fleet)["hive-1"]["in_use"], 15, interval=0.1, what="hive-1's copy in use")
    # released: the download ends, the hive adds the new revision and it is no longer in use
    copy = wait_until(
        lambda: sorted((c := holders(fleet)["hive-1"])["commits"]) == sorted([first, second]) and not c["in_use"] and c,
        30,
        interval=0.1,
        what="the second revision in place, not in use",
    )
    assert copy["complete"]


def test_a_model_no_hive_holds_complete_goes_to_the_hive_holding_most_of_it(fleet: Fleet) -> None:
    for name in ("hive-1", "hive-2"):
        fleet.add_hive(name)
    pulled(fleet, ["hive-2"])
    shown_complete_on(fleet, {"hive-2"})
    # while hive-2 is down, one blob of its copy goes (a disk cleanup): its copy is partial when it is back
    fleet.hives["hive-2"].kill()
    blobs = fleet.models["hive-2"] / "hub" / "models--org--fleet" / "blobs"
    max(blobs.iterdir(), key=lambda p: p.stat().st_size).unlink()
    fleet.hives["hive-2"].start()
    wait_until(
        lambda: holders(fleet).get("hive-2", {"complete": True})["complete"] is False,
        15,
        interval=0.1,
        what="hive-2's copy shown partial",
    )
    with fleet.api() as client:  # hive-1 is as idle and first by id: only what hive-2 holds sends it there
        placed = client.post("/v1/downloads", json={"model_ref": f"hf:{REPO}"})
    assert placed.status_code == 202, placed.text
    assert placed.json()["hive_id"] == "hive-2", placed.json()
    shown_complete_on(fleet, {"hive-2"})  # the missing file fetched again, there
