"""The inventory agrees with huggingface_hub's scan_cache_dir, and notices what other tools change
(services/hive/store/{scan,inventory}.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.hive.store.inventory import Inventory
from services.hive.store.sizes import RepoScan
from tests.hive.store.cache_trees import View, commit_of, hf_view, write_repo

CONTENTS = [b"", b"a", b"bb" * 10, b"ccc" * 100, b"{}\n"]
PATHS = ["config.json", "model.safetensors", "sub/dir/notes.txt", ".hidden", "sub/x.bin"]


def view_of(inventory: Inventory) -> View:
    def revisions(scan: RepoScan) -> dict[str, tuple[tuple[str, ...], int, int]]:
        return {r.commit: (r.refs, r.files, sum(scan.blob_sizes[b] for b in r.blobs)) for r in scan.revisions}

    return {s.repo_id: (s.size_on_disk, revisions(s)) for s in inventory.all()}


files = st.dictionaries(st.sampled_from(PATHS), st.sampled_from(CONTENTS), max_size=len(PATHS))
repos = st.dictionaries(
    st.sampled_from(["org/a", "org/b", "gpt2", "x/y-z.1"]),
    st.dictionaries(st.sampled_from(["r1", "r2", "r3"]), files, min_size=1, max_size=3),
    max_size=4,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(repos, st.data())
def test_the_inventory_agrees_with_scan_cache_dir(
    layout: dict[str, dict[str, dict[str, bytes]]], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        hub = Path(tmp) / "hub"
        hub.mkdir()
        for repo_id, revisions in layout.items():
            by_commit = {commit_of(name): revision_files for name, revision_files in revisions.items()}
            named = data.draw(st.lists(st.sampled_from(sorted(by_commit)), max_size=2))
            refs = dict(zip(["main", "refs/pr/1"], named, strict=False))
            write_repo(hub, repo_id, by_commit, refs)
        inventory = Inventory(Path(tmp))
        inventory.load()
        assert view_of(inventory) == hf_view(hub)


def test_a_missing_blob_makes_its_revision_incomplete_and_its_size_leaves_it_out(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    root = write_repo(hub, "org/m", {commit_of("1"): {"a": b"aaaa", "b": b"bb"}}, {"main": commit_of("1")})
    (root / "blobs" / hashlib.sha256(b"bb").hexdigest()).unlink()
    inventory = Inventory(tmp_path)
    inventory.load()
    scan = inventory.get("org/m")
    assert scan is not None
    (revision,) = scan.revisions
    assert revision.broken and revision.files == 1 and scan.size_on_disk == 4


def test_refresh_notices_what_other_tools_add_and_remove_and_rereads_only_those(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    write_repo(hub, "org/kept", {commit_of("k"): {"a": b"a"}})
    gone = write_repo(hub, "org/gone", {commit_of("g"): {"a": b"a"}})
    grows = write_repo(hub, "org/grows", {commit_of("1"): {"a": b"a"}})
    inventory = Inventory(tmp_path)
    inventory.load()
    kept = inventory.get("org/kept")
    assert inventory.refresh() == []  # nothing changed
    shutil.rmtree(gone)
    write_repo(hub, "org/grows", {commit_of("2"): {"b": b"bbb"}}, {"main": commit_of("2")})
    write_repo(hub, "gpt2", {commit_of("n"): {"w": b"www"}})
    changes = {repo_id: (before is not None, after is not None) for repo_id, before, after in inventory.refresh()}
    assert changes == {"org/gone": (True, False), "org/grows": (True, True), "gpt2": (False, True)}
    assert inventory.get("org/kept") is kept  # unchanged: not read again
    assert grows.exists() and view_of(inventory) == hf_view(hub)
    assert inventory.used() == sum(size for size, _ in hf_view(hub).values())


def test_a_look_does_not_undo_what_the_hive_changed_meanwhile(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    root = write_repo(hub, "org/m", {commit_of("1"): {"a": b"a"}})
    inventory = Inventory(tmp_path)
    inventory.load()
    looked = inventory.look({}, 0)  # (a look that began before the index knew org/m)
    shutil.rmtree(root)
    inventory.rescan("org/m")  # the hive deleted it meanwhile
    assert inventory.apply(looked) == [] and inventory.get("org/m") is None


def test_a_look_leaves_alone_a_model_the_hive_is_changing(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "hub", "org/m", {commit_of("1"): {"a": b"a"}})
    inventory = Inventory(tmp_path)
    inventory.load()
    with inventory.changing("org/m"):
        assert inventory.is_changing("org/m")
        shutil.rmtree(root)  # half way through, as a look might see it
        assert inventory.refresh() == [] and inventory.get("org/m") is not None
        inventory.rescan("org/m")
    assert not inventory.is_changing("org/m") and inventory.get("org/m") is None


def test_a_link_added_deep_in_a_snapshot_to_a_blob_already_there_is_noticed(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    commit = commit_of("1")
    root = write_repo(hub, "org/m", {commit: {"w.bin": b"www", "sub/dir/a.txt": b"a"}})
    inventory = Inventory(tmp_path)
    inventory.load()
    assert inventory.refresh() == []
    blob = next((root / "blobs").iterdir())
    deep = root / "snapshots" / commit / "sub" / "dir" / "b.txt"  # only sub/dir's mtime changes
    deep.symlink_to(os.path.relpath(blob, deep.parent))
    (change,) = inventory.refresh()
    assert change[0] == "org/m" and view_of(inventory) == hf_view(hub)
    scan = inventory.get("org/m")
    assert scan is not None and scan.revisions[0].files == 3
