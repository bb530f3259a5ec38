"""The pure parts of whole-model downloads: the hub's answers read, a model's progress summed, notes kept."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from services.hive.cache.partials import PartialNotes
from services.hive.hub.api import RepoFile, parse_revision, parse_tree_page
from services.hive.hub.progress import FileProgress, ModelProgress
from services.hive.hub.trees import TreeCache
from services.hive.tracker.tracker import DownloadTracker
from shared.models import DownloadStatus

SHA = "a" * 64
OID = "b" * 40
COMMIT = "c" * 40


def test_the_revision_answer_names_the_commit_and_whether_the_repo_is_gated() -> None:
    assert parse_revision({"sha": COMMIT, "gated": False}).gated is False
    assert parse_revision({"sha": COMMIT, "gated": "manual"}).gated is True
    assert parse_revision({"sha": COMMIT}).commit == COMMIT
    for bad in ({}, {"sha": "main"}, {"sha": COMMIT.upper()}, [], None, {"sha": 7}):
        with pytest.raises(ValueError):
            parse_revision(bad)


def test_a_tree_page_gives_files_with_the_digest_the_cache_names_blobs_by() -> None:
    page = [
        {"type": "directory", "oid": OID, "size": 0, "path": "sub"},
        {"type": "file", "oid": OID, "size": 12, "path": "config.json"},
        {"type": "file", "oid": OID, "size": 134, "path": "sub/model.safetensors", "lfs": {"oid": SHA, "size": 10**9}},
    ]
    assert parse_tree_page(page) == [RepoFile("config.json", 12, OID), RepoFile("sub/model.safetensors", 10**9, SHA)]


def test_a_gated_repos_masked_digest_is_no_digest() -> None:
    masked = {"oid": "*" * 64, "size": 10**9, "pointerSize": 134}
    entry = {"type": "file", "oid": OID, "size": 134, "path": "w.safetensors", "lfs": masked, "xetHash": "*" * 64}
    assert parse_tree_page([entry]) == [RepoFile("w.safetensors", 10**9, "")]


@pytest.mark.parametrize(
    "entry",
    [
        {"type": "file", "oid": OID, "size": 1, "path": "../escape"},
        {"type": "file", "oid": OID, "size": 1, "path": "/etc/passwd"},
        {"type": "file", "oid": OID, "size": 1, "path": "a//b"},
        {"type": "file", "oid": OID, "size": 1, "path": "a\\b"},
        {"type": "file", "oid": OID, "size": 1, "path": "a\x00b"},
        {"type": "file", "oid": "not-hex", "size": 1, "path": "x"},
        {"type": "file", "oid": OID, "size": -1, "path": "x"},
        {"type": "file", "oid": OID, "path": "x"},
        {"type": "file", "oid": OID, "size": 1, "path": "x", "lfs": {"oid": "zz"}},
    ],
)
def test_a_tree_entry_that_could_escape_or_names_no_digest_is_refused(entry: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        parse_tree_page([entry])


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_models_bytes_are_summed_over_its_files_and_never_go_backwards() -> None:
    clock = _Clock()
    tracker = DownloadTracker(progress_interval=0.0, clock=clock)
    tracker.start_download("dl-1", "hf:org/repo")
    files = [RepoFile("a", 100, OID), RepoFile("b", 50, SHA), RepoFile("c", 10, OID)]
    model = ModelProgress(tracker, "dl-1", files, whole=True)
    model.show_plan()
    model.finished("c")  # already in the cache
    a, b = FileProgress(model, "a"), FileProgress(model, "b")
    a.set_status("dl-1", DownloadStatus.DOWNLOADING)
    for step in range(1, 5):
        clock.now += 1
        a.update_progress("dl-1", step * 20)
        b.update_progress("dl-1", step * 5)
    state = tracker.get_download("dl-1")
    assert state is not None
    assert (state.bytes_downloaded, state.total_bytes) == (10 + 80 + 20, 160)
    assert (state.files_total, state.files_done) == (3, 1)
    assert state.status is DownloadStatus.DOWNLOADING
    b.update_progress("dl-1", 0)  # b fetched again from zero: the model's bytes stay
    state = tracker.get_download("dl-1")
    assert state is not None and state.bytes_downloaded == 110
    model.finished("a")
    model.finished("b")
    model.finished("b")  # (once only)
    state = tracker.get_download("dl-1")
    assert state is not None and (state.bytes_downloaded, state.files_done) == (160, 3)
    assert {f["status"] for f in model.file_states()} == {"complete"}


def test_a_stopped_model_marks_its_unfinished_files() -> None:
    tracker = DownloadTracker()
    tracker.start_download("dl-1", "hf:org/repo")
    model = ModelProgress(tracker, "dl-1", [RepoFile("a", 1, OID), RepoFile("b", 1, OID)], whole=True)
    model.finished("a")
    model.stopped(DownloadStatus.CANCELLED)
    assert [f["status"] for f in model.file_states()] == ["complete", "cancelled"]


def test_one_file_shows_no_file_counts() -> None:
    tracker = DownloadTracker()
    tracker.start_download("dl-1", "hf:org/repo::file=a")
    ModelProgress(tracker, "dl-1", [RepoFile("a", 5, OID)], whole=False).show_plan()
    state = tracker.get_download("dl-1")
    assert state is not None and state.files_total is None and "files_total" not in state.to_dict()


def test_partial_notes_survive_a_restart_and_go_with_their_partial(tmp_path: Path) -> None:
    partial = tmp_path / f"{SHA}.part"
    partial.write_bytes(b"x")
    notes = PartialNotes.load(partial)
    notes.checkpoint("dl-1", '"etag"', 100, SHA)
    asyncio.run(notes.persist_segments("dl-1", '{"plan": 1}'))
    again = PartialNotes.load(partial)
    assert (again.validator, again.total, again.segments) == ('"etag"', 100, '{"plan": 1}')
    assert json.loads(again.path.read_text())["total"] == 100 and not again.path.name.endswith(".part")
    partial.unlink()
    assert PartialNotes.load(partial).validator is None and not again.path.exists()  # stale notes go


def test_partial_notes_that_cannot_be_read_are_none(tmp_path: Path) -> None:
    partial = tmp_path / f"{SHA}.part"
    partial.write_bytes(b"x")
    PartialNotes(partial).path.write_text("{not json")
    notes = PartialNotes.load(partial)
    assert (notes.validator, notes.total, notes.segments) == (None, None, None)


def test_a_commits_listing_is_kept_outside_the_hub_cache(tmp_path: Path) -> None:
    trees = TreeCache(tmp_path)
    files = [RepoFile("a", 1, OID), RepoFile("sub/b", 2, SHA)]
    assert trees.load("org/repo", COMMIT) is None
    trees.save("org/repo", COMMIT, files)
    assert trees.load("org/repo", COMMIT) == files
    assert not (tmp_path / "hub").exists()
    with pytest.raises(ValueError):
        trees.path("org/repo", "main")
