"""Placement by presence and sources beyond a pull: the pure rules (`placement.present_hive`,
`presence.complete_holders`) and what `plan_pull` makes of holders outside the pull."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.queen.hives.placement import present_hive, repo_id_of
from services.queen.models.inventory import FleetInventory
from services.queen.models.presence import complete_holders
from services.queen.pulls.plan import Blob, PeerHive, plan_pull
from shared.wire.models import DiskBody, HiveModels, ModelBody, RevisionBody

C1, C2 = "1" * 40, "2" * 40


def held(size: int, *revs: tuple[str, list[str], bool]) -> ModelBody:
    revisions = [RevisionBody(commit=c, refs=r, files=1, size_on_disk=size, complete=ok) for c, r, ok in revs]
    return ModelBody(
        repo_id="org/m", size_on_disk=size, revisions=revisions, last_used=None, pinned=False, in_use=False
    )


def test_repo_id_of_an_hf_ref() -> None:
    assert repo_id_of("hf:org/m") == ("org/m", "main")
    assert repo_id_of("hf:org/m@v1::file=a.bin") == ("org/m", "v1")
    assert repo_id_of("https://example.com/x") is None


def test_a_complete_holder_of_the_revision_wins_ties_by_id() -> None:
    holdings = {
        "hive-c": held(100, (C1, ["main"], True)),
        "hive-b": held(100, (C1, ["main"], True)),
        "hive-a": held(900, (C1, ["main"], False)),
    }
    assert present_hive("hf:org/m", holdings, complete=True) == "hive-b"
    assert present_hive(f"hf:org/m@{C1}::file=x", holdings, complete=True) == "hive-b"  # by commit
    assert present_hive("hf:org/m@v2", holdings, complete=True) is None  # another revision
    assert present_hive("https://example.com/m", holdings, complete=True) is None


def test_else_the_hive_holding_most_of_it() -> None:
    holdings = {
        "hive-a": held(300, (C1, ["main"], False)),
        "hive-b": held(700, (C2, [], False), (C1, ["main"], False)),
        "hive-c": held(0, (C1, ["main"], False)),
    }
    assert present_hive("hf:org/m", holdings, complete=True) is None
    assert present_hive("hf:org/m", holdings, complete=False) == "hive-b"
    assert present_hive("hf:org/m", {"hive-c": holdings["hive-c"]}, complete=False) is None  # nothing of it


def test_complete_holders_are_those_of_the_commit() -> None:
    inv = FleetInventory()
    for hive_id, model in [
        ("h1", held(10, (C1, ["main"], True))),
        ("h2", held(10, (C1, ["main"], False), (C2, [], True))),
        ("h3", held(10, (C1, ["main"], True))),
    ]:
        inv.load(hive_id, HiveModels(models=[model], disk=DiskBody(used=10, budget=None, free=1), hive_id=hive_id))
    assert complete_holders(inv, "org/m", C1, {"h1", "h2", "h3"}) == ["h1", "h3"]
    assert complete_holders(inv, "org/m", C1, {"h2", "h3"}) == ["h3"]
    assert complete_holders(inv, "org/m", C2, {"h1", "h2", "h3"}) == ["h2"]
    assert complete_holders(inv, "org/m", C1, {"h1", "h2", "h3"}, files=2) == []  # each holds 1 file of it


def test_a_hive_alone_in_a_pull_takes_every_blob_from_the_holders_beyond_it() -> None:
    blobs = [Blob("d1", 100), Blob("d2", 50)]
    digests = frozenset(b.digest for b in blobs)
    beyond = [PeerHive("hive-1", "http://h1", digests), PeerHive("hive-2", "http://h2", digests)]
    parts = plan_pull([*beyond, PeerHive("hive-3", "http://h3")], blobs, hub_fetches_per_blob=1)
    mine = parts["hive-3"]
    assert mine.hub_first == set()
    assert set(mine.sources) == {"d1", "d2"}
    assert all(set(urls) == {"http://h1", "http://h2"} for urls in mine.sources.values())
    assert parts["hive-1"].sources == {} and parts["hive-1"].hub_first == set()


copies = st.dictionaries(
    st.sampled_from(["h1", "h2", "h3", "h4"]),
    st.tuples(st.integers(0, 1000), st.sampled_from([C1, C2]), st.booleans()),
)


@given(copies)
def test_the_chosen_hive_holds_the_revision_complete_or_the_most_of_it(found: dict[str, tuple[int, str, bool]]) -> None:
    holdings = {h: held(size, (commit, [], ok)) for h, (size, commit, ok) in found.items()}
    complete = present_hive(f"hf:org/m@{C1}", holdings, complete=True)
    whole = sorted(h for h, (_, commit, ok) in found.items() if commit == C1 and ok)
    assert complete == (whole[0] if whole else None)
    most = present_hive(f"hf:org/m@{C1}", holdings, complete=False)
    if most is None:
        assert all(size == 0 for size, _, _ in found.values())
    else:
        assert found[most][0] == max(size for size, _, _ in found.values())
