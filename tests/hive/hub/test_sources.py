"""Where a hub download's file comes from (hub/sources.py): the order of its sources, and the
transfer job for each, built from a HubJob, a RepoFile and a partial's notes. Pure: no server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.hive.cache.partials import PartialNotes
from services.hive.hub.api import RepoFile
from services.hive.hub.jobs import HubJob
from services.hive.hub.sources import file_job, order_sources
from services.hive.refs import HubRef
from services.hive.transfer import DownloadJob

HUB = "http://hub.test:8080"
PEER_A, PEER_B = "http://peer-a:9000", "http://peer-b:9000/"
COMMIT = "c" * 40
LFS = "a" * 64  # a sha256
SMALL = "b" * 40  # a git blob sha1
REF = HubRef(HUB, "org/model", "main", None)
WEIGHTS = RepoFile("sub/dir/model.safetensors", 3000, LFS)
CONFIG = RepoFile("config.json", 15, SMALL)


def job(**fields: Any) -> HubJob:
    return HubJob("dl-1", REF, token_origin=HUB, **fields)


@pytest.fixture
def partial(tmp_path: Path) -> Path:
    """A blob's partial, 1 KiB in: its notes (if any) are written beside it by each test."""
    path = tmp_path / "partial" / f"{LFS}.part"
    path.parent.mkdir()
    path.write_bytes(b"x" * 1024)
    return path


def fetch(
    j: HubJob, f: RepoFile, peer: str | None, partial: Path, peer_token: str | None = None, attempts: int | None = None
) -> DownloadJob:
    """`file_job` as the fetcher calls it: the notes as they are on disk beside `partial`."""
    notes = PartialNotes.read(partial)
    return file_job(j, COMMIT, f, peer, notes, partial.with_name("blob"), partial, peer_token, attempts)


def test_a_blob_with_peers_is_asked_of_them_in_order_then_of_the_hub() -> None:
    j = job(sources={LFS: (PEER_A, PEER_B)})
    assert order_sources(j, WEIGHTS) == [PEER_A, PEER_B, None]


def test_a_hub_first_blob_goes_to_the_hub_before_its_peers() -> None:
    j = job(sources={LFS: (PEER_A,)}, hub_first=frozenset({LFS}))
    assert order_sources(j, WEIGHTS) == [None, PEER_A]


def test_a_blob_no_peer_has_comes_from_the_hub_only() -> None:
    j = job(sources={LFS: (PEER_A,)})
    assert order_sources(j, CONFIG) == [None]
    assert order_sources(job(), WEIGHTS) == [None]


def test_a_file_without_a_digest_comes_from_the_hub_only() -> None:
    j = job(sources={"": (PEER_A,), LFS: (PEER_B,)})
    assert order_sources(j, RepoFile("weights.bin", 10, "")) == [None]


def test_from_the_hub_a_file_is_fetched_at_the_commit_with_the_token_and_the_partials_validator(
    partial: Path,
) -> None:
    notes = PartialNotes(partial)
    notes.checkpoint("dl-1", '"etag-1"', 4096, LFS)
    notes.checkpoint_segments("dl-1", '{"chunks": []}')
    one = fetch(job(), WEIGHTS, None, partial)
    assert one.url == f"{HUB}/org/model/resolve/{COMMIT}/sub/dir/model.safetensors"  # never `main`
    assert one.token_origin == HUB
    assert one.validator == '"etag-1"'
    assert one.total == 4096  # the notes' total wins over the listed size
    assert one.segments == '{"chunks": []}'
    assert (one.hub_digest, one.pinned) == (LFS, True)
    assert (one.dest, one.part_file) == (partial.with_name("blob"), partial)
    assert (one.peer_token, one.max_attempts) == (None, None)
    assert one.may_split is True  # not a fleet pull's part


def test_from_a_peer_a_blob_is_fetched_by_digest_without_the_hub_token_or_validator(partial: Path) -> None:
    PartialNotes(partial).checkpoint("dl-1", '"etag-1"', 4096, LFS)
    j = job(sources={LFS: (PEER_B,)})
    one = fetch(j, WEIGHTS, PEER_B, partial, peer_token="rbee-secret", attempts=2)
    assert one.url == f"http://peer-b:9000/v2/blobs/{LFS}"
    assert (one.token_origin, one.validator) == (None, None)  # the digest pins a peer's bytes
    assert (one.peer_token, one.max_attempts) == ("rbee-secret", 2)
    assert (one.hub_digest, one.pinned, one.total) == (LFS, True, 4096)
    assert one.may_split is True  # a peer's complete blob is split (a partial it follows is not: split.py)
    assert one.mirrors == ()  # no peer after it


def test_from_a_peer_the_peers_after_it_are_its_mirrors(partial: Path) -> None:
    j = job(sources={LFS: (PEER_A, PEER_B)})
    first = fetch(j, WEIGHTS, PEER_A, partial)
    assert first.mirrors == (f"http://peer-b:9000/v2/blobs/{LFS}",)
    assert fetch(j, WEIGHTS, PEER_B, partial).mirrors == ()  # (the one before it has failed)
    hub = fetch(j, WEIGHTS, None, partial)
    assert hub.mirrors == () and hub.may_split is False  # a fleet part's hub file: one connection


def test_without_notes_the_total_is_the_listed_size(partial: Path) -> None:
    one = fetch(job(), WEIGHTS, None, partial)
    assert (one.total, one.validator, one.segments) == (3000, None, None)


def test_a_hub_first_only_pull_part_does_not_split_either(partial: Path) -> None:
    assert fetch(job(hub_first=frozenset({LFS})), WEIGHTS, None, partial).may_split is False


def test_a_file_without_a_digest_is_not_pinned(partial: Path) -> None:
    one = fetch(job(), RepoFile("weights.bin", 10, ""), None, partial)
    assert (one.hub_digest, one.pinned) == (None, False)
