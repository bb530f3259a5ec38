"""The test hub's answers and switches, driven directly with httpx on loopback."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.modelserver.cdn import Uplink
from services.modelserver.hub import Hub
from services.modelserver.hub_repo import git_blob_sha1, lfs_pointer
from tests.hub_fixtures import CDN_LIMIT, LFS_SIZE, REPO, Revisions, build_repo, running_hub


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    with running_hub(tmp_path, cdn_max_unranged_bytes=CDN_LIMIT) as h:
        yield h


@pytest.fixture
def revs(hub: Hub) -> Revisions:
    return build_repo(hub)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as c:
        yield c


def test_git_blob_sha1_matches_git() -> None:
    assert git_blob_sha1(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git hash-object /dev/null
    assert git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_small_file_answers_a_relative_307_to_resolve_cache_whose_200_has_git_sha1_etag_commit_and_ranges(
    hub: Hub, revs: Revisions, client: httpx.Client
) -> None:
    moved = client.get(hub.resolve_url(REPO, "config.json"))
    assert moved.status_code == 307 and "etag" not in moved.headers and moved.headers["x-repo-commit"] == revs.main
    assert moved.headers["location"] == f"/api/resolve-cache/models/{REPO}/{revs.main}/config.json"
    url = hub.url + moved.headers["location"]
    r = client.get(url)
    assert r.status_code == 200 and r.content == b'{"hidden": 128}\n'
    assert r.headers["etag"] == f'"{git_blob_sha1(r.content)}"'
    assert r.headers["x-repo-commit"] == revs.main
    assert r.headers["content-length"] == str(len(r.content))
    part = client.get(url, headers={"Range": "bytes=2-7"})
    assert part.status_code == 206 and part.content == r.content[2:8]
    assert client.get(url, headers={"Range": "bytes=999-"}).status_code == 416
    stale = client.get(url, headers={"Range": "bytes=2-7", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == r.content


def test_lfs_file_redirects_to_the_cdn_with_linked_headers(hub: Hub, revs: Revisions, client: httpx.Client) -> None:
    f = hub.file(REPO, "model.safetensors")
    head = client.head(hub.resolve_url(REPO, "model.safetensors"), headers={"Accept-Encoding": "identity"})
    assert head.status_code == 302
    assert head.headers["x-linked-etag"] == f'"{f.sha256}"' and head.headers["x-linked-size"] == str(LFS_SIZE)
    assert head.headers["x-repo-commit"] == revs.main and "etag" not in head.headers  # no ETag of its own
    assert head.headers["x-xet-hash"] == f.xet_hash and re.fullmatch(r"[0-9a-f]{64}", f.xet_hash)
    assert head.links["xet-auth"]["url"] == f"{hub.url}/api/models/{REPO}/xet-read-token/{revs.main}"
    location = head.headers["location"]
    assert location.startswith(hub.cdn.url) and hub.cdn.url != hub.url
    assert re.search(r"[?&]Expires=\d+&Signature=[0-9a-f]+", location)
    part = client.get(location, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.headers["content-range"] == f"bytes 0-99/{LFS_SIZE}"
    assert part.headers["etag"] == f'"{f.xet_hash}"' != f'"{f.sha256}"'  # the Xet hash, not the sha256
    assert client.get(location, headers={"Range": f"bytes={LFS_SIZE}-{LFS_SIZE + 5}"}).status_code == 416
    stale = client.get(location, headers={"Range": "bytes=0-99", "If-Range": '"nope"'})
    assert stale.status_code == 400  # If-Range failed: the whole blob, which is above the unranged limit
    assert hub.resolver_calls(REPO) == 1 and len(hub.cdn.records()) == 3


def test_cdn_refuses_unbounded_reads_above_its_limit(hub: Hub, revs: Revisions, client: httpx.Client) -> None:
    location = client.head(hub.resolve_url(REPO, "model.safetensors")).headers["location"]
    for headers in ({}, {"Range": "bytes=100-"}, {"Range": f"bytes=0-{CDN_LIMIT}"}):
        r = client.get(location, headers=headers)
        assert r.status_code == 400 and b"<Code>InvalidRequest</Code>" in r.content, headers
    ok = client.get(location, headers={"Range": f"bytes={LFS_SIZE - CDN_LIMIT}-{LFS_SIZE - 1}"})
    assert ok.status_code == 206 and len(ok.content) == CDN_LIMIT
    assert hub.cdn.wait_idle()
    assert sum(r.bytes_sent for r in hub.cdn.records() if r.status == 206) == CDN_LIMIT


def test_cdn_urls_expire_and_are_signed(hub: Hub, revs: Revisions, client: httpx.Client) -> None:
    location = client.head(hub.resolve_url(REPO, "model.safetensors")).headers["location"]
    assert client.get(location, headers={"Range": "bytes=0-0"}).status_code == 206
    assert client.get(location.replace("Signature=", "Signature=0"), headers={"Range": "bytes=0-0"}).status_code == 403
    hub.cdn.advance_clock(hub.switches.url_ttl + 1)
    expired = client.get(location, headers={"Range": "bytes=0-0"})
    assert expired.status_code == 403 and b"Request has expired" in expired.content
    hub.switches.url_ttl = -1  # born expired
    fresh = client.head(hub.resolve_url(REPO, "model.safetensors")).headers["location"]
    assert client.get(fresh, headers={"Range": "bytes=0-0"}).status_code == 403


def test_moving_a_branch_changes_commit_and_bytes(hub: Hub, revs: Revisions, client: httpx.Client) -> None:
    url = hub.resolve_url(REPO, "config.json")
    before = client.get(url, follow_redirects=True)
    hub.move_branch(REPO, "main", revs.first)
    after = client.get(url, follow_redirects=True)
    assert (before.headers["x-repo-commit"], after.headers["x-repo-commit"]) == (revs.main, revs.first)
    assert (before.content, after.content) == (b'{"hidden": 128}\n', b'{"hidden": 64}\n')
    assert before.headers["etag"] != after.headers["etag"]


@pytest.mark.parametrize("rev", ["refs%2Fpr%2F1", "refs/pr/1"], ids=["quoted", "raw"])
def test_pr_refs_and_commits_as_revisions(hub: Hub, revs: Revisions, client: httpx.Client, rev: str) -> None:
    r = client.get(f"{hub.url}/{REPO}/resolve/{rev}/config.json", follow_redirects=True)
    assert r.headers["x-repo-commit"] == revs.pr and r.content == b'{"hidden": 256}\n'
    old = client.get(hub.resolve_url(REPO, "config.json", revs.first))
    assert old.headers["x-repo-commit"] == revs.first


def test_error_answers_carry_codes_and_json(hub: Hub, revs: Revisions, client: httpx.Client) -> None:
    hub.add_repo("org/gated", gated=True)
    hub.add_token("hf_valid")
    cases = [
        ("org/gated", "main", ".gitattributes", None, 401, "GatedRepo"),
        ("org/gated", "main", ".gitattributes", "hf_valid", 403, "GatedRepo"),
        ("org/none", "main", "x", None, 401, "RepoNotFound"),
        ("org/none", "main", "x", "hf_valid", 404, "RepoNotFound"),
        (REPO, "nope", "config.json", None, 404, "RevisionNotFound"),
        (REPO, "main", "nope.json", None, 404, "EntryNotFound"),
        (REPO, "main", "config.json", "hf_unknown", 401, None),
    ]
    for repo, rev, path, token, status, code in cases:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = client.get(hub.resolve_url(repo, path, rev), headers=headers)
        assert (r.status_code, r.headers.get("x-error-code")) == (status, code), (repo, rev, path, token)
        assert r.json() == {"error": r.headers["x-error-message"]}
    gated = client.get(hub.resolve_url("org/gated", ".gitattributes"), headers={"Authorization": "Bearer hf_valid"})
    assert f"{hub.url}/org/gated" in gated.headers["x-error-message"]
    missing = client.get(hub.resolve_url(REPO, "nope.json"))
    assert missing.headers["x-repo-commit"] == revs.main  # huggingface_hub caches the miss per commit


def test_resolver_quota_answers_429_with_ratelimit_headers(hub: Hub, revs: Revisions, client: httpx.Client) -> None:
    hub.limits.set_quota(2, window=60)
    url = hub.resolve_url(REPO, "config.json")
    first = client.head(url)  # (the 307 to the resolve-cache)
    assert first.status_code == 307 and first.headers["ratelimit"].startswith('"resolvers";r=1;t=')
    assert client.head(url).status_code == 307
    limited = client.head(url)
    assert limited.status_code == 429
    m = re.fullmatch(r'"resolvers";r=0;t=(\d+)', limited.headers["ratelimit"])
    assert m and 0 < int(m[1]) <= 60 and limited.headers["retry-after"] == m[1]
    assert limited.headers["ratelimit-policy"] == '"fixed window";"resolvers";q=2;w=60'
    hub.limits.set_quota(None)
    hub.limits.fail_next(1, reset_secs=7)
    forced = client.head(url)
    assert forced.status_code == 429 and forced.headers["retry-after"] == "7"
    assert client.head(url).status_code == 307


def test_small_file_redirect_switch_off_and_renamed_repo(hub: Hub, revs: Revisions, client: httpx.Client) -> None:
    hub.switches.small_file_redirect = False
    r = client.get(hub.resolve_url(REPO, "config.json"))
    assert r.status_code == 200 and r.content == b'{"hidden": 128}\n'
    assert r.headers["etag"] == f'"{git_blob_sha1(r.content)}"' and r.headers["x-repo-commit"] == revs.main
    hub.rename_repo(REPO, "org/renamed")
    moved = client.head(hub.resolve_url(REPO, "config.json"))
    assert moved.status_code == 307 and moved.headers["location"].startswith("/org/renamed/resolve/main/")


def test_tree_lists_one_folder_and_pages_with_link(hub: Hub, revs: Revisions, client: httpx.Client) -> None:
    r = client.get(f"{hub.url}/api/models/{REPO}/tree/main/sub")
    assert r.json() == [{"type": "directory", "oid": r.json()[0]["oid"], "size": 0, "path": "sub/dir"}]
    top = client.get(f"{hub.url}/api/models/{REPO}/tree/main")
    assert 'rel="next"' in top.headers["link"] and len(top.json()) == 2
    info = client.get(f"{hub.url}/api/models/{REPO}/revision/main", params={"blobs": "true"}).json()
    lfs = next(s for s in info["siblings"] if s["rfilename"] == "model.safetensors")
    f = hub.file(REPO, "model.safetensors")
    assert lfs["lfs"] == {"sha256": f.sha256, "size": LFS_SIZE, "pointerSize": f.pointer_size}
    assert lfs["blobId"] == f.blob_id == git_blob_sha1(lfs_pointer(f.sha256, LFS_SIZE))  # git stores the pointer


def every_page(client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url is not None:
        r = client.get(next_url, headers=headers)
        entries += r.json()
        next_url = r.links.get("next", {}).get("url")
    return entries


def test_a_gated_repos_metadata_is_public_with_lfs_digests_masked_until_access(
    hub: Hub, revs: Revisions, client: httpx.Client
) -> None:
    hub.repo(REPO).gated = True
    hub.grant(REPO, "hf_ok")
    f = hub.file(REPO, "model.safetensors")
    tree = f"{hub.url}/api/models/{REPO}/tree/main?recursive=true"
    info = f"{hub.url}/api/models/{REPO}/revision/main?blobs=true"

    def lfs_of(headers: dict[str, str]) -> tuple[object, ...]:
        entries = every_page(client, tree, headers)
        entry = next(e for e in entries if e["path"] == "model.safetensors")
        small = next(e for e in entries if e["path"] == "config.json")
        sibling = next(
            s for s in client.get(info, headers=headers).json()["siblings"] if s["rfilename"] == "model.safetensors"
        )
        return entry["lfs"]["oid"], entry["xetHash"], sibling["lfs"]["sha256"], small["oid"]

    blob_id = hub.file(REPO, "config.json").blob_id
    assert lfs_of({}) == ("*" * 64, "*" * 64, "*" * 64, blob_id)  # 200 all the same
    assert lfs_of({"Authorization": "Bearer hf_ok"}) == (f.sha256, f.xet_hash, f.sha256, blob_id)
    refused = client.head(hub.resolve_url(REPO, "model.safetensors"))
    assert refused.status_code == 401 and refused.headers["x-error-code"] == "GatedRepo"


def test_a_repo_id_without_a_namespace_answers_as_huggingface_hub_asks(hub: Hub, client: httpx.Client) -> None:
    hub.add_repo("gpt2")
    sha = hub.commit("gpt2", {"config.json": b"{}\n", "model.safetensors": b"w" * 100})
    assert client.get(f"{hub.url}/api/models/gpt2/revision/main").json()["sha"] == sha
    tree = every_page(client, f"{hub.url}/api/models/gpt2/tree/{sha}?recursive=true")
    assert {e["path"] for e in tree} >= {"config.json", "model.safetensors"}
    small = client.get(hub.resolve_url("gpt2", "config.json"), follow_redirects=True)
    assert (
        small.status_code == 200
        and small.content == b"{}\n"
        and small.url.path.startswith("/api/resolve-cache/models/gpt2/")
    )
    lfs = client.get(hub.resolve_url("gpt2", "model.safetensors"), follow_redirects=True)
    assert lfs.status_code == 200 and lfs.content == b"w" * 100


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, secs: float) -> None:
        self.slept.append(secs)


def test_uplink_books_bytes_at_its_rate_after_the_burst() -> None:
    clock = FakeClock()
    up = Uplink(1000, burst=500, clock=clock, sleep=clock.sleep)
    assert up.reserve(500) == 0.0  # the full bucket
    assert up.reserve(250) == pytest.approx(0.25)  # 250 bytes short at 1000 B/s
    assert up.reserve(250) == pytest.approx(0.5)  # booked behind the first: the balance is -500
    clock.now += 0.5
    assert up.reserve(0) == 0.0  # 500 bytes accrued: back to zero
    clock.now += 10  # an idle uplink refills up to the burst only
    assert up.reserve(600) == pytest.approx(0.1)
    up.take(100)
    assert clock.slept == [pytest.approx(0.2)] and up.taken == 1700
    up.set_rate(None)  # no cap: nothing waits, bytes are still counted
    assert up.reserve(10**9) == 0.0 and up.taken == 1700 + 10**9
    with pytest.raises(ValueError):
        up.set_rate(0)


def test_uplink_shared_by_threads_never_releases_more_than_its_rate() -> None:
    clock = FakeClock()  # frozen: every booking is at the same instant
    up = Uplink(1_000_000, burst=100_000, chunk=10_000, clock=clock, sleep=clock.sleep)
    waits: list[float] = []
    lock = threading.Lock()

    def sender() -> None:
        for _ in range(50):
            w = up.reserve(up.chunk)
            with lock:
                waits.append(w)

    threads = [threading.Thread(target=sender) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 400 bookings of 10 kB: the k-th (from 1) may start once (k * 10 kB - burst) / rate has passed
    assert sorted(waits) == [pytest.approx(max(0.0, (k * 10_000 - 100_000) / 1e6)) for k in range(1, 401)]
    assert up.taken == 4_000_000


def test_uplink_caps_the_cdn_and_the_hubs_own_answers_together(tmp_path: Path) -> None:
    with Hub(tmp_path / "hub-store", uplink_bps=4_000_000) as hub, httpx.Client(timeout=30) as client:
        build_repo(hub)
        assert hub.cdn.uplink is hub.uplink and hub.uplink.rate_bps == 4_000_000
        small = client.get(hub.resolve_url(REPO, "config.json"), follow_redirects=True)
        sent = len(small.history[0].content) + len(small.content)  # the 307's short body, then the file's
        assert small.status_code == 200 and hub.uplink.taken == sent
        location = client.head(hub.resolve_url(REPO, "model.safetensors")).headers["location"]

        def fetch(rng: str) -> int:
            with httpx.Client(timeout=30) as c:
                r = c.get(location, headers={"Range": rng})
                assert r.status_code == 206
                return len(r.content)

        t0 = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            got = sum(pool.map(fetch, ["bytes=0-999999", f"bytes=1000000-{LFS_SIZE - 1}"]))
        elapsed = time.monotonic() - t0
        assert got == LFS_SIZE and hub.uplink.taken == sent + LFS_SIZE
        # a lower bound only (a busy machine is slower, never faster): two connections, one rate
        assert elapsed >= 0.9 * (LFS_SIZE - hub.uplink.burst) / 4_000_000
        hub.uplink.set_rate(None)
        assert fetch("bytes=0-99") == 100
