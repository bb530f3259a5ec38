"""A complete blob on peers is fetched like a file from the hub (README, "Fleet pulls", sources and
ranges): in ranges, in parallel, spread over every peer that holds it complete; a peer that fails is
dropped and its ranges taken over by the others, finally the hub, with Range; the whole file checked
against its digest. Real hives on loopback against the test hub; what each peer sent is its
`rbee_hive_bytes_served_total`."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.hive.peers.serve import ServeThrottle
from services.modelserver.chaos import ChaosConfig, ChaosProxy
from services.modelserver.hub import Hub, HubSwitches
from services.modelserver.hub_repo import Generated
from tests.hive.peers.test_peers import digests, finished, start
from tests.hub_fixtures import HubSetup
from tests.support import ServerThread, wait_until

MiB = 1024 * 1024
REPO = "org/fleet"
BIG = "model.safetensors"
FILES: dict[str, bytes | Generated] = {"config.json": b'{"hidden": 64}\n', BIG: Generated(6 * MiB + 5, seed=21)}
SPLIT = {"segments": 4, "segment_min_bytes": 256 * 1024}  # the copier splits a few MiB into ranges


@pytest.fixture
def hub_setup() -> HubSetup:
    return HubSetup((REPO,), switches=HubSwitches())


def served(hive: ServerThread) -> float:
    text = httpx.get(f"{hive.url}/metrics", timeout=10).text
    line = next(x for x in text.splitlines() if x.startswith("rbee_hive_bytes_served_total"))
    return float(line.split()[-1])


class FailsAfter(ServeThrottle):
    """A peer that sends its first `ok` pieces, then drops every connection it is to send on."""

    def __init__(self, ok: int) -> None:
        self.ok = ok

    async def take(self, n: int) -> None:
        if self.ok <= 0:
            raise ConnectionResetError("this peer fails from here on")
        self.ok -= 1


def seeded(hub: Hub, make_hub_hive: Callable[..., ServerThread], **settings: Any) -> ServerThread:
    hive = make_hub_hive(**settings)
    assert finished(hive.url, start(hive.url))["status"] == "complete"
    return hive


def big_blob_check(hub: Hub, state: dict[str, Any]) -> None:
    assert state["status"] == "complete", state
    for path in FILES:
        got = (Path(state["path"]) / path).read_bytes()
        assert got == hub.file(REPO, path).content()
    assert hashlib.sha256((Path(state["path"]) / BIG).read_bytes()).hexdigest() == digests(hub)[BIG]


def test_a_blob_two_peers_hold_comes_in_ranges_from_both(hub: Hub, make_hub_hive: Callable[..., ServerThread]) -> None:
    commit = hub.commit(REPO, FILES)
    first, second = seeded(hub, make_hub_hive), seeded(hub, make_hub_hive)
    copier = make_hub_hive(**SPLIT)
    sent = hub.cdn.total_bytes_sent()
    before = served(first), served(second)
    sources = {d: [first.url, second.url] for d in digests(hub).values()}
    state = finished(copier.url, start(copier.url, commit=commit, sources=sources))
    big_blob_check(hub, state)
    assert hub.cdn.total_bytes_sent() == sent  # nothing from the hub
    gave = served(first) - before[0], served(second) - before[1]
    size = hub.file(REPO, BIG).size
    assert gave[0] > 0 and gave[1] > 0, gave  # pieces of the big blob from each peer
    assert gave[1] >= size // 8, gave  # (the second peer's share is real: connections spread over both)


def test_a_peer_failing_mid_file_has_its_ranges_taken_over_by_the_other(
    hub: Hub, make_hub_hive: Callable[..., ServerThread]
) -> None:
    commit = hub.commit(REPO, FILES)
    failing = seeded(hub, make_hub_hive, serve_throttle=FailsAfter(ok=3))
    steady = seeded(hub, make_hub_hive)
    copier = make_hub_hive(**SPLIT)
    sent = hub.cdn.total_bytes_sent()
    sources = {d: [failing.url, steady.url] for d in digests(hub).values()}
    state = finished(copier.url, start(copier.url, commit=commit, sources=sources))
    big_blob_check(hub, state)
    assert hub.cdn.total_bytes_sent() == sent  # the steady peer took over: no byte from the hub
    assert served(failing) > 0 and served(steady) > 0


def test_peers_that_all_fail_leave_the_rest_of_the_file_to_the_hub_with_range(
    hub: Hub, make_hub_hive: Callable[..., ServerThread]
) -> None:
    commit = hub.commit(REPO, FILES)
    peers = [seeded(hub, make_hub_hive, serve_throttle=FailsAfter(ok=2)) for _ in range(2)]
    copier = make_hub_hive(**SPLIT)
    sent = hub.cdn.total_bytes_sent()
    sources = {d: [p.url for p in peers] for d in digests(hub).values()}
    state = finished(copier.url, start(copier.url, commit=commit, sources=sources))
    big_blob_check(hub, state)
    by_path = {f["path"]: f for f in state["files"]}
    assert by_path[BIG]["source"] == "hub"
    from_peers = sum(served(p) for p in peers)
    size = hub.file(REPO, BIG).size
    assert 0 < from_peers and hub.cdn.total_bytes_sent() - sent < size  # what the peers gave was kept


def test_a_damaged_blob_among_the_peers_never_reaches_the_cache(
    hub: Hub, make_hub_hive: Callable[..., ServerThread], tmp_path: Path
) -> None:
    commit = hub.commit(REPO, FILES)
    good = seeded(hub, make_hub_hive)
    bad_models = tmp_path / "bad"
    bad = seeded(hub, make_hub_hive, models_dir=bad_models)
    (blob,) = bad_models.rglob(f"blobs/{digests(hub)[BIG]}")
    data = bytearray(blob.read_bytes())
    data[len(data) - 1000] ^= 0xFF  # (in the file's last range)
    blob.write_bytes(bytes(data))
    copier = make_hub_hive(**SPLIT)
    sources = {d: [good.url, bad.url] for d in digests(hub).values()}
    state = finished(copier.url, start(copier.url, commit=commit, sources=sources))
    big_blob_check(hub, state)


def test_a_follower_of_a_partial_takes_the_rest_in_ranges_once_the_peer_completes_it(
    hub: Hub, make_hub_hive: Callable[..., ServerThread], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The follower reads the seeder's partial over one connection capped at 1 MiB/s (a proxy), and is far
    behind when the seeder's blob completes: it takes the rest in ranges (README, sources and ranges)."""
    commit = hub.commit(REPO, FILES)
    seeder_models = tmp_path / "seeder"
    seeder = make_hub_hive(models_dir=seeder_models, **SPLIT)
    follower = make_hub_hive(**SPLIT)
    big = digests(hub)[BIG]
    with ChaosProxy(seeder.url, ChaosConfig(seed=1, probability=0.0, body_bps=MiB)) as capped:
        hub.uplink.set_rate(4 * MiB)  # the seeder's ranges from the CDN: a couple of seconds
        try:
            first = start(seeder.url)
            wait_until(
                lambda: any(p.stat().st_size > 0 for p in seeder_models.rglob(f"{big}.part")), 30, what="a partial"
            )
            copy = start(follower.url, commit=commit, sources={d: [capped.url] for d in digests(hub).values()})
            assert finished(seeder.url, first)["status"] == "complete"
        finally:
            hub.uplink.set_rate(None)
        state = finished(follower.url, copy)
    big_blob_check(hub, state)
    logged = capfd.readouterr()
    lines = (logged.out + logged.err).splitlines()
    assert any("download_split" in x and f"source={capped.url}" in x for x in lines), "no split once complete"
    assert hub.cdn.total_bytes_sent() == hub.file(REPO, BIG).size  # one copy from the hub: the seeder's


def test_a_peer_too_slow_among_the_sources_is_dropped_and_its_ranges_go_to_the_other(
    hub: Hub, make_hub_hive: Callable[..., ServerThread], capfd: pytest.CaptureFixture[str]
) -> None:
    """HIVE_PEER_MIN_BPS judges each complete peer a split file takes ranges from: one behind a path
    trickling 64 KiB/s is dropped, the other sends the rest, the hub nothing."""
    commit = hub.commit(REPO, FILES)
    slow_peer, steady = seeded(hub, make_hub_hive), seeded(hub, make_hub_hive)
    copier = make_hub_hive(peer_min_bps=MiB, peer_slow_secs=0.5, stall_timeout=30.0, **SPLIT)
    sent = hub.cdn.total_bytes_sent()
    with ChaosProxy(slow_peer.url, ChaosConfig(seed=2, probability=0.0, body_bps=64 * 1024)) as trickle:
        sources = {d: [steady.url, trickle.url] for d in digests(hub).values()}
        state = finished(copier.url, start(copier.url, commit=commit, sources=sources))
    big_blob_check(hub, state)
    assert hub.cdn.total_bytes_sent() == sent
    logged = capfd.readouterr()
    dropped = [x for x in (logged.out + logged.err).splitlines() if "download_source_dropped" in x]
    assert any(trickle.url in x and "HIVE_PEER_MIN_BPS" in x for x in dropped), dropped
