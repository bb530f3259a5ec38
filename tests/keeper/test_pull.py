"""rbee-keeper and fleet pulls: `pull`, `pulls`, and `watch` / `cancel` of a pull, against a real queen and
two real hives on loopback pulling one model from the test hub.

The hives are held (1 byte/s, `Hold`) from before the pull starts until the keeper follows the pull's
stream, so it sees the pull under way however fast the machine is; nothing waits on a clock.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.keeper.context import EXIT_CANCELLED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from services.keeper.format import human_bytes
from services.modelserver.hub import Hub
from services.modelserver.hub_repo import Generated
from services.queen.main import create_app as create_queen
from services.queen.settings import QueenSettings
from tests.conftest import hive_factory
from tests.keeper.support import interrupt_keeper, keeper, keeper_on_a_terminal
from tests.support import Hold, ServerThread, held_until, serve, wait_until

MODEL = "org/fleet"
FILES: dict[str, bytes | Generated] = {
    "config.json": b'{"hidden": 64}\n',
    "model-00001-of-00002.safetensors": Generated(1_500_000, seed=31),
    "model-00002-of-00002.safetensors": Generated(1_000_000, seed=32),
}
HIVES = ("hive-a", "hive-b")


@dataclass
class Fleet:
    hub: Hub
    queen: ServerThread
    app: FastAPI
    hives: dict[str, ServerThread]

    @property
    def url(self) -> str:
        return self.queen.url

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.url}{path}", timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    @contextlib.contextmanager
    def held_until_followed(self, then: Callable[[], None] | None = None) -> Iterator[None]:
        """Every hive's downloads wait at their first chunk until somebody follows a pull's stream; then
        `then` runs (if given), and the hives go on."""
        with held_until(self.hives.values(), lambda: self.app.state.pull_streams.feeds() == 1, then):
            yield


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with Hub(tmp_path / "hub-store") as hub:
        hub.add_repo(MODEL)
        hub.commit(MODEL, FILES)
        with hive_factory(tmp_path, hub.url) as make_hive:
            hives = {hive_id: make_hive(id=hive_id) for hive_id in HIVES}
            settings = QueenSettings(
                hives={h: s.url for h, s in hives.items()},
                health_interval=0.2,
                relay_backoff_initial=0.05,
                relay_backoff_max=0.3,
                unreachable_budget=1.0,  # a hive that stops answering fails its part of the pull after 1 s
                orchestrator_id="queen-test",
            )
            app = create_queen(settings)
            with serve(app) as queen:
                fleet = Fleet(hub, queen, app, hives)
                wait_until(
                    lambda: all(h["healthy"] for h in fleet.get("/v1/hives")["hives"]), 10, what="both hives healthy"
                )
                yield fleet


def hub_bytes(pull: dict[str, Any]) -> int:
    return sum(part["sources"].get("hub", 0) for part in pull["hives"])


# ---------------------------------------------------------------------------------------------- tests


def test_pull_in_a_pipe_shows_every_hive_and_the_total_then_where_the_bytes_came_from(fleet: Fleet) -> None:
    with fleet.held_until_followed():
        result = keeper("pull", f"hf:{MODEL}", "--hives", "all", queen=fleet.url)
    assert result.code == EXIT_OK, result
    assert "\x1b[" not in result.out + result.err
    lines = result.out.splitlines()
    commit = fleet.hub.repo(MODEL).resolve("main").sha  # type: ignore[union-attr]
    started = re.fullmatch(
        rf"started pull (pull-[0-9a-f]{{32}}): {MODEL} at commit {commit} onto hive-a, hive-b", lines[0]
    )
    assert started, lines
    pull_id = started[1]
    for hive_id in HIVES:  # each hive's own line: as `download` prints one, with the model's files
        first, *mine = [line for line in lines if line.startswith(f"{hive_id} {MODEL} ")]
        assert first == f"{hive_id} {MODEL} queued 0 B"  # before the stream: all the answer to the start says
        assert any(" downloading " in line for line in mine), lines
        assert all(re.search(r" files \d/4$", line) for line in mine), mine  # (.gitattributes is a file too)
    totals = [line for line in lines if line.startswith(f"total {MODEL} running ")]
    assert totals and all(re.search(r" hives [0-2]/2$", line) for line in totals), lines

    pull = fleet.get(f"/v1/pulls/{pull_id}")
    assert pull["status"] == "complete"
    size = human_bytes(pull["total"] // 2)  # one copy of the model: what each hive took
    end = lines.index(f"complete: {MODEL} {size} onto 2 hives at commit {commit} ({pull_id})")
    summary = lines[end + 1 :]
    urls = {hive.url: hive_id for hive_id, hive in fleet.hives.items()}
    for part in pull["hives"]:  # where each hive's bytes came from, peers named by their hive id
        (line,) = [s for s in summary if s.startswith(f"  {part['hive_id']}  ")]
        for source, n in part["sources"].items():
            if n:
                assert f"{urls.get(source, source)} {human_bytes(n)}" in line, (line, part["sources"])
    assert summary[-1].startswith(f"  from the hub: {human_bytes(hub_bytes(pull))} (")
    assert re.search(r"\((0\.\d\d|1\.0\d)x one copy of the model\)$", summary[-1]), summary  # about once


def test_pull_json_streams_the_pulls_events_as_the_queen_sent_them(fleet: Fleet) -> None:
    with fleet.held_until_followed():
        result = keeper("--json", "pull", f"hf:{MODEL}", "--hives", "hive-a,hive-b", queen=fleet.url)
    assert result.code == EXIT_OK, result
    events = [json.loads(line) for line in result.out.splitlines()]  # stdout: JSON lines only
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids)) and len(ids) >= 3
    *progress, end = events
    assert {e["event"] for e in progress} == {"progress"} and end["event"] == "complete"
    pull_id = end["data"]["pull_id"]
    assert all(e["data"]["pull_id"] == pull_id and e["data"]["orchestrator_id"] == "queen-test" for e in events)
    assert {e["data"]["hive_id"] for e in progress} == set(HIVES)
    assert all(set(e["data"]["pull"]) >= {"status", "bytes", "total", "hives_total", "failed_hives"} for e in events)
    assert end["data"]["hives"] == dict.fromkeys(HIVES, "complete")
    assert result.err.startswith(f"complete: {MODEL} ")  # humans read stderr


def test_a_refused_pull_names_each_hive_and_why_and_starts_nothing(fleet: Fleet) -> None:
    unknown = keeper("pull", f"hf:{MODEL}", "--hives", "hive-a,nope", "--hives", "nada", queen=fleet.url)
    assert unknown.code == EXIT_NOT_FOUND, unknown
    assert unknown.err.splitlines() == [
        "rbee-keeper: UNKNOWN_HIVE: nothing started, the preflight failed on 2 hives:",
        "  nope: UNKNOWN_HIVE: no hive 'nope' is registered with this queen",
        "  nada: UNKNOWN_HIVE: no hive 'nada' is registered with this queen",
    ]
    fleet.hub.add_repo("org/gated", gated=True)  # and neither hive has a token
    fleet.hub.commit("org/gated", FILES)
    gated = keeper("pull", "hf:org/gated", "--hives", "all", queen=fleet.url)
    assert gated.code == EXIT_USAGE, gated
    first, *why = gated.err.splitlines()  # every hive is asked, the one that resolved the commit too
    assert first == "rbee-keeper: GATED_REPO: nothing started, the preflight failed on 2 hives:"
    assert [line.split(":")[0].strip() for line in why] == ["hive-a", "hive-b"], why
    assert all(": GATED_REPO: " in line for line in why), why
    one_file = keeper("pull", f"hf:{MODEL}::file=config.json", "--hives", "all", queen=fleet.url)
    assert one_file.code == EXIT_USAGE and one_file.err.startswith("rbee-keeper: INVALID_MODEL_REF: "), one_file
    assert "Traceback" not in unknown.err + gated.err + one_file.err
    assert fleet.get("/v1/pulls")["pulls"] == []
    assert keeper("pull", f"hf:{MODEL}", "--hives", "all,hive-a", queen=fleet.url).code == EXIT_USAGE


def test_a_pull_shows_a_bar_per_hive_and_the_total_on_a_terminal(fleet: Fleet) -> None:
    argv = ["--queen", fleet.url, "pull", f"hf:{MODEL}", "--hives", "all"]
    with fleet.held_until_followed():
        shown = keeper_on_a_terminal(*argv, done=b"from the hub:", columns=160, timeout=60)
    assert shown.code == EXIT_OK, shown
    output = shown.out
    assert "\x1b[" in output and "━" in output  # a live display
    output = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)
    for hive_id in HIVES:  # the hive's name (as wide as `total`), its bar, then its figures
        assert re.search(rf"{hive_id} +━+ +\d+\.\d% • [\d.]+ [kM]?B / [\d.]+ MB • ", output), output
    assert re.search(r"hive-a +━+ +100\.0% • [\d.]+ MB / [\d.]+ MB • complete • files 4/4", output), output
    assert re.search(r"total  +━+ +100\.0% • [\d.]+ MB / [\d.]+ MB • complete • hives 2/2", output), output


def test_ctrl_c_leaves_the_pull_running_then_pulls_lists_it_cancel_stops_it_and_watch_says_so(fleet: Fleet) -> None:
    holds = [Hold(hive.url) for hive in fleet.hives.values()]  # the pull stays under way throughout
    try:
        argv = ["--queen", fleet.url, "pull", f"hf:{MODEL}", "--hives", "all"]
        result = interrupt_keeper(*argv, ready=lambda data: b"\ntotal " in data)
        assert result.code == EXIT_INTERRUPTED, result
        pull_id = re.search(r"started pull (\S+):", result.out)[1]  # type: ignore[index]
        err = result.err
        assert "Traceback" not in err
        assert f"pull {pull_id} keeps running on 2 hives (hive-a, hive-b)" in err
        assert f"rbee-keeper --queen {fleet.url} watch {pull_id}" in err
        assert f"rbee-keeper --queen {fleet.url} cancel {pull_id}" in err
        assert fleet.get(f"/v1/pulls/{pull_id}")["status"] == "running"

        listing = keeper("pulls", queen=fleet.url)
        assert listing.code == EXIT_OK, listing
        header, row = listing.out.splitlines()
        assert header.split() == ["ID", "MODEL", "STATUS", "PROGRESS", "HIVES", "SPEED"]
        assert row.split()[:3] == [pull_id, f"hf:{MODEL}", "running"] and " 0/2 " in row, row
        as_json = json.loads(keeper("--json", "pulls", queen=fleet.url).out)
        assert [p["pull_id"] for p in as_json["pulls"]] == [pull_id]

        cancelled = keeper("cancel", pull_id, queen=fleet.url)
        assert cancelled.code == EXIT_OK, cancelled
        assert cancelled.out.strip() == f"cancelled {pull_id} ({MODEL}: cancelled on 2 of 2 hives)"
    finally:
        for hold in holds:
            hold.release()
    watched = keeper("watch", pull_id, queen=fleet.url)
    assert watched.code == EXIT_CANCELLED, watched
    assert watched.err.splitlines()[-1].startswith(f"cancelled: {MODEL} ({pull_id}) at ")
    assert keeper("cancel", pull_id, queen=fleet.url).code == EXIT_OK  # cancelling twice: the same answer
    missing = keeper("watch", f"pull-{'0' * 32}", queen=fleet.url)
    assert missing.code == EXIT_NOT_FOUND and missing.err.startswith("rbee-keeper: NOT_FOUND: no pull ")


def test_a_pull_that_loses_a_hive_exits_1_naming_it_and_the_others_complete(fleet: Fleet) -> None:
    def stop_hive_b() -> None:
        pull = fleet.get("/v1/pulls")["pulls"][0]
        wait_until(
            lambda: all(p["status"] == "downloading" for p in fleet.get(f"/v1/pulls/{pull['pull_id']}")["hives"]),
            30,
            what="both hives downloading",
        )
        fleet.hives["hive-b"].stop()

    with fleet.held_until_followed(then=stop_hive_b):
        result = keeper("pull", f"hf:{MODEL}", "--hives", "all", queen=fleet.url)
    assert result.code == EXIT_FAILED, result
    assert "Traceback" not in result.err
    pull_id = re.search(r"started pull (\S+):", result.out)[1]  # type: ignore[index]
    first, why, *summary = result.err.splitlines()
    assert first == f"failed: {MODEL} on hive-b (1 of 2 hives; {pull_id})"
    assert why.startswith("  hive-b: HIVE_UNREACHABLE: "), why
    hive_a, hub = summary  # where the bytes came from, as far as the queen can tell
    assert hive_a.startswith("  hive-a  ") and hub.startswith("  from the hub: ")
    assert hub.endswith("; hive-b could not be asked"), hub
    assert f"hive-a {MODEL} complete 100.0% " in result.out
