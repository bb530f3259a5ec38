"""rbee-keeper and the fleet's model store: `models`, `rm`, `pin`, `unpin` against a real queen and two
real hives on loopback holding a model from the test hub; and the matrix they print (pure)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.keeper.context import EXIT_ERROR, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from services.keeper.format import human_bytes
from services.keeper.models import disk_rows, model_matrix, repo_id_of
from services.modelserver.hub_repo import Generated
from services.queen.main import create_app as create_queen
from services.queen.settings import QueenSettings
from tests.conftest import hive_factory
from tests.hub_fixtures import running_hub
from tests.keeper.support import keeper, keeper_on_a_terminal
from tests.support import ServerThread, serve, wait_until

MODEL = "org/kept"
FILES: dict[str, bytes | Generated] = {
    "config.json": b'{"hidden": 8}\n',
    "model.safetensors": Generated(700_000, seed=41),
}


def holder(hive_id: str, size: int, complete: bool, pinned: bool = False) -> dict[str, Any]:
    return {"hive_id": hive_id, "size_on_disk": size, "complete": complete, "pinned": pinned, "in_use": False}


def test_the_matrix_is_a_model_per_row_and_a_column_per_hive() -> None:
    fleet = {
        "models": [
            {
                "repo_id": "org/a",
                "hives": [holder("hive-b", 2_000_000, True, pinned=True), holder("hive-c", 500_000, False)],
            },
            {"repo_id": "org/b", "hives": [holder("hive-a", 1_000, False)]},
        ],
        "hives": [
            {"hive_id": h, "used": 2_000_000, "budget": b, "free": 8_000_000}
            for h, b in (("hive-c", None), ("hive-a", 4_000_000), ("hive-b", 0))
        ],
    }
    headers, rows = model_matrix(fleet)
    assert headers == ["MODEL", "SIZE", "HIVE-A", "HIVE-B", "HIVE-C"]
    assert rows == [
        ["org/a", "2.0 MB", "-", "complete 2.0 MB, pinned", "partial 25% 500.0 kB"],
        ["org/b", "?", "partial 1.0 kB", "-", "-"],
    ]
    assert disk_rows(fleet) == [
        ["hive-a", "2.0 MB", "4.0 MB (50%)", "8.0 MB"],
        ["hive-b", "2.0 MB", "0 B", "8.0 MB"],
        ["hive-c", "2.0 MB", "none", "8.0 MB"],
    ]


@pytest.mark.parametrize(
    ("text", "repo_id"),
    [("hf:org/m", "org/m"), ("org/m", "org/m"), ("hf:gpt2", "gpt2"), ("hf:a/b/c", None), ("hf:org/m@v1", None)],
)
def test_repo_id_of(text: str, repo_id: str | None) -> None:
    assert repo_id_of(text) == repo_id


@dataclass
class Fleet:
    queen: ServerThread

    @property
    def url(self) -> str:
        return self.queen.url

    def models(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/v1/models", timeout=10).json()
        return body


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with running_hub(tmp_path) as hub:
        hub.add_repo(MODEL)
        hub.commit(MODEL, FILES)
        with hive_factory(tmp_path, hub.url) as make_hive:
            hives = {hive_id: make_hive(id=hive_id) for hive_id in ("hive-a", "hive-b")}
            settings = QueenSettings(hives={h: s.url for h, s in hives.items()}, health_interval=0.2)
            with serve(create_queen(settings)) as queen:
                fleet = Fleet(queen)
                wait_until(lambda: len(fleet.models()["hives"]) == 2, 10, what="both hives' models loaded")
                started = httpx.post(
                    f"{queen.url}/v1/pulls", json={"model_ref": f"hf:{MODEL}", "hive_ids": ["hive-a"]}, timeout=30
                )
                assert started.status_code == 202, started.text
                wait_until(
                    lambda: [[h["complete"] for h in m["hives"]] for m in fleet.models()["models"]] == [[True]],
                    30,
                    what="the model complete on hive-a",
                )
                yield fleet


def test_models_rm_pin_and_unpin_through_the_queen(fleet: Fleet) -> None:
    size = fleet.models()["models"][0]["hives"][0]["size_on_disk"]
    shown = keeper("models", queen=fleet.url)
    assert shown.code == EXIT_OK, shown
    lines = shown.out.splitlines()
    assert lines[0].split() == ["MODEL", "SIZE", "HIVE-A", "HIVE-B"]
    assert lines[1].split("  ")[0] == MODEL and f"complete {human_bytes(size)}" in lines[1] and lines[1].endswith("-")
    assert lines[2].split() == ["HIVE", "USED", "BUDGET", "FREE"]
    assert lines[3].startswith("hive-a") and human_bytes(size) in lines[3] and "none" in lines[3]

    on_a_terminal = keeper_on_a_terminal("models", "--queen", fleet.url, done=b"FREE", columns=100)
    assert on_a_terminal.code == EXIT_OK and MODEL in on_a_terminal.out and "complete" in on_a_terminal.out

    as_json = keeper("models", "--json", queen=fleet.url)
    assert json.loads(as_json.out)["models"][0]["repo_id"] == MODEL

    pinned = keeper("pin", f"hf:{MODEL}", "--hives", "hive-a", queen=fleet.url)
    assert (pinned.code, pinned.out) == (EXIT_OK, f"pinned {MODEL} on hive-a\n"), pinned
    assert ", pinned" in keeper("models", queen=fleet.url).out

    refused = keeper("rm", f"hf:{MODEL}", queen=fleet.url)  # every holder; pinned there
    assert refused.code == EXIT_ERROR and "hive-a: MODEL_PINNED: " in refused.err, refused
    assert fleet.models()["models"] != []

    assert keeper("pin", f"hf:{MODEL}", "--hives", "nope", queen=fleet.url).code == EXIT_NOT_FOUND
    assert keeper("rm", "hf:a/b/c", queen=fleet.url).code == EXIT_USAGE

    unpinned = keeper("unpin", f"hf:{MODEL}", queen=fleet.url)
    assert (unpinned.code, unpinned.out) == (EXIT_OK, f"unpinned {MODEL} on hive-a\n"), unpinned
    removed = keeper("rm", f"hf:{MODEL}", "--hives", "hive-a", queen=fleet.url)
    assert (removed.code, removed.out) == (EXIT_OK, f"removed {MODEL} from hive-a\n"), removed
    assert fleet.models()["models"] == []
    assert "no models on any hive" in keeper("models", queen=fleet.url).out
