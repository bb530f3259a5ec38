"""FleetInventory (pure): whole lists, one repository's entry, model events, and GET /v1/models' answer."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.queen.models.inventory import FleetInventory
from shared.wire.models import DiskBody, HiveModels, ModelAction, ModelBody, ModelEventBody, RevisionBody

C1, C2 = "a" * 40, "b" * 40


def model(repo_id: str, size: int, *revs: tuple[str, bool], pinned: bool = False) -> ModelBody:
    revisions = [RevisionBody(commit=c, refs=["main"], files=2, size_on_disk=size, complete=ok) for c, ok in revs]
    return ModelBody(
        repo_id=repo_id, size_on_disk=size, revisions=revisions, last_used=None, pinned=pinned, in_use=False
    )


def listing(hive_id: str, *models: ModelBody, free: int = 1000) -> HiveModels:
    used = sum(m.size_on_disk for m in models)
    return HiveModels(models=list(models), disk=DiskBody(used=used, budget=2000, free=free), hive_id=hive_id)


def event(hive_id: str, action: ModelAction, repo_id: str, commit: str | None = None) -> ModelEventBody:
    return ModelEventBody(action=action, repo_id=repo_id, commit=commit, hive_id=hive_id)


def test_the_fleet_is_models_by_hives_sorted_with_each_hives_disk() -> None:
    inv = FleetInventory()
    inv.load("hive-b", listing("hive-b", model("org/x", 10, (C1, True)), model("org/a", 5, (C2, False))))
    inv.load("hive-a", listing("hive-a", model("org/x", 4, (C1, False), (C2, True), pinned=True)))
    fleet = inv.fleet(["hive-a", "hive-b", "hive-c"], ["hive-c"])
    assert [m.repo_id for m in fleet.models] == ["org/a", "org/x"]
    x = fleet.models[1]
    assert [h.hive_id for h in x.hives] == ["hive-a", "hive-b"]
    assert x.hives[0].commits == [C1, C2] and x.hives[0].complete and x.hives[0].pinned
    assert not fleet.models[0].hives[0].complete  # its only revision is partial
    assert [(d.hive_id, d.used, d.budget) for d in fleet.hives] == [("hive-a", 4, 2000), ("hive-b", 15, 2000)]
    assert fleet.unreachable_hives == ["hive-c"]


def test_a_hive_not_asked_for_is_not_shown() -> None:
    inv = FleetInventory()
    inv.load("hive-a", listing("hive-a", model("org/x", 1, (C1, True))))
    assert inv.fleet([], ["hive-a"]).models == []


def test_put_replaces_one_repository_and_moves_the_disk() -> None:
    inv = FleetInventory()
    inv.load("h", listing("h", model("org/x", 10, (C1, True)), free=100))
    version = inv.version
    inv.put("h", "org/y", model("org/y", 30, (C1, True)))
    inv.put("h", "org/x", None)
    assert inv.version == version + 2
    fleet = inv.fleet(["h"], [])
    assert [m.repo_id for m in fleet.models] == ["org/y"]
    assert (fleet.hives[0].used, fleet.hives[0].free) == (30, 80)


def test_put_before_the_whole_list_is_ignored() -> None:
    inv = FleetInventory()
    inv.put("h", "org/x", model("org/x", 1, (C1, True)))
    assert not inv.loaded("h") and inv.holdings("org/x") == {}


def test_events_that_say_all_are_applied_and_the_others_ask_for_the_repository() -> None:
    inv = FleetInventory()
    inv.load("h", listing("h", model("org/x", 10, (C1, True), (C2, True))))
    assert not inv.apply(event("h", ModelAction.PINNED, "org/x"))
    assert inv.model("h", "org/x") is not None and inv.model("h", "org/x").pinned  # type: ignore[union-attr]
    assert not inv.apply(event("h", ModelAction.UNPINNED, "org/x"))
    assert not inv.model("h", "org/x").pinned  # type: ignore[union-attr]
    assert inv.apply(event("h", ModelAction.ADDED, "org/new", C1))  # what it holds: ask
    assert inv.apply(event("h", ModelAction.DELETED, "org/x", C2))  # one revision: what is left, ask
    assert not inv.apply(event("h", ModelAction.EVICTED, "org/x"))  # all of it
    assert inv.holdings("org/x") == {}
    assert not inv.apply(event("other", ModelAction.ADDED, "org/x"))  # a hive not loaded: its list will come


def test_a_whole_list_replaces_what_was_known() -> None:
    inv = FleetInventory()
    inv.load("h", listing("h", model("org/x", 10, (C1, True))))
    inv.load("h", listing("h", model("org/y", 10, (C1, True))))
    assert set(inv.holdings("org/y")) == {"h"} and inv.holdings("org/x") == {}
    inv.forget("h")
    assert not inv.loaded("h")


sizes = st.lists(st.tuples(st.sampled_from(["org/a", "org/b", "org/c"]), st.integers(0, 10**6) | st.none()))


@given(sizes)
def test_disk_used_follows_the_models_that_come_and_go(changes: list[tuple[str, int | None]]) -> None:
    inv = FleetInventory()
    inv.load("h", listing("h", free=10**9))
    held: dict[str, int] = {}
    for repo_id, size in changes:
        inv.put("h", repo_id, None if size is None else model(repo_id, size, (C1, True)))
        if size is None:
            held.pop(repo_id, None)
        else:
            held[repo_id] = size
    disk = inv.fleet(["h"], []).hives[0]
    assert disk.used == sum(held.values())
    assert disk.free == 10**9 - sum(held.values())
