"""The hive against the real-shaped hub: commits, digests, signed URLs, CDN hosts, big files, kill -9.

Every download here is verified against the hub's own digest: the sha256 of an LFS file (its
X-Linked-Etag), the git blob sha1 of a small one (its ETag). The test hub (services/modelserver/hub.py)
answers as huggingface.co does: a small file directly, an LFS file by a 302 to a signed, expiring
URL on a CDN on another port, whose ETag is not the sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.modelserver.hub import Hub, HubSwitches
from services.modelserver.hub_repo import Generated
from tests import layout
from tests.hive.hub.support import pull
from tests.hub_fixtures import HubSetup
from tests.support import ServerThread, ServiceProcess, free_port, wait_until

MiB = 1024 * 1024
REPO = "org/model"


@pytest.fixture
def hub_setup() -> HubSetup:
    # the test CDN refuses unbounded reads above 1 MiB, as the real one above 50 GB
    return HubSetup((REPO,), cdn_max_unranged_bytes=MiB, switches=HubSwitches(), hive={"range_limit_bytes": MiB})


def ended(client: httpx.Client, download_id: str, what: str) -> dict[str, Any]:
    """Wait (a minute at most) until the download is complete or failed: its state then."""
    wait_until(
        lambda: client.get(f"/v2/downloads/{download_id}").json()["status"] in ("complete", "failed"),
        timeout=60,
        what=what,
    )
    state: dict[str, Any] = client.get(f"/v2/downloads/{download_id}").json()
    return state


def test_lfs_and_small_files_are_verified_and_carry_the_commit(
    hub: Hub, make_hub_hive: Callable[..., ServerThread]
) -> None:
    commit = hub.commit(REPO, {"config.json": b'{"hidden": 64}\n', "model.safetensors": Generated(3 * MiB + 5, 7)})
    hive = make_hub_hive()
    for path in ("config.json", "model.safetensors"):
        _, state, events = pull(hive.url, f"hf:{REPO}::file={path}")
        assert state["status"] == "complete", state
        served = hub.file(REPO, path)
        assert Path(state["path"]).read_bytes() == served.content()
        assert state["sha256"] == served.sha256
        assert state["commit"] == commit
        assert events[-1][0] == "complete" and events[-1][1]["commit"] == commit
        assert any(e == "progress" and d.get("commit") == commit for e, d in events)


def test_a_file_with_a_percent_in_its_name_downloads_alone_as_it_does_in_its_model(
    hub: Hub, make_hub_hive: Callable[..., ServerThread]
) -> None:
    commit = hub.commit(REPO, {"%41.txt": b"not A\n", "50%.json": b"{}\n"})
    hive = make_hub_hive()
    for path in ("%41.txt", "50%.json"):
        _, state, _ = pull(hive.url, f"hf:{REPO}::file={path}")
        assert state["status"] == "complete", state
        assert Path(state["path"]).name == path and Path(state["path"]).read_bytes() == hub.file(REPO, path).content()
    _, model, _ = pull(hive.url, f"hf:{REPO}")
    assert model["status"] == "complete" and model["commit"] == commit, model
    assert {"%41.txt", "50%.json"} <= {p.name for p in Path(model["path"]).iterdir()}


def test_a_segmented_file_asks_the_resolver_at_most_twice(hub: Hub, make_hub_hive: Callable[..., ServerThread]) -> None:
    hub.commit(REPO, {"model.safetensors": Generated(6 * MiB, 3)})
    hive = make_hub_hive(segments=4, segment_min_bytes=256 * 1024)  # 24 chunk requests, at once after a probe
    _, state, _ = pull(hive.url, f"hf:{REPO}::file=model.safetensors")
    assert state["status"] == "complete", state
    assert state["sha256"] == hub.file(REPO, "model.safetensors").sha256
    assert len([r for r in hub.cdn.records() if r.status == 206]) > 4  # it really was split
    assert hub.resolver_calls(REPO) <= 3  # the one-byte probe that pins commit and digest; the transfer's, at most two


def test_an_expired_signed_url_is_resolved_again_and_the_file_goes_on_with_range(
    hub: Hub, make_hub_hive: Callable[..., ServerThread]
) -> None:
    hub.commit(REPO, {"model.safetensors": Generated(4 * MiB, 4)})
    # one connection, 1 MiB ranges (HIVE_RANGE_LIMIT_BYTES): each range is a new request on the signed URL
    hive = make_hub_hive(segments=1, bandwidth_limit=1 * MiB)
    with httpx.Client(base_url=hive.url, timeout=10) as client:
        download_id = client.post("/v2/downloads", json={"model_ref": f"hf:{REPO}::file=model.safetensors"}).json()[
            "download_id"
        ]

        def past_the_first_range() -> bool:
            return int(client.get(f"/v2/downloads/{download_id}").json()["bytes_downloaded"]) > MiB + 1024

        wait_until(past_the_first_range, timeout=30, what="the second range")
        hub.cdn.advance_clock(7200)  # every signed URL handed out so far is now expired
        state = ended(client, download_id, "the end of the download")
    assert state["status"] == "complete", state
    assert state["sha256"] == hub.file(REPO, "model.safetensors").sha256
    assert any(r.status == 403 for r in hub.cdn.records())
    # the one-byte probe that pins commit and digest, the first resolve, and one after the CDN refused the old URL
    assert hub.resolver_calls(REPO) == 3
    ranges = [r.headers["range"] for r in hub.cdn.records() if r.status == 206]
    assert ranges.count("bytes=0-0") == 1  # the probe's one byte
    starts = sorted(int(r.split("=")[1].split("-")[0]) for r in ranges if r != "bytes=0-0")
    assert starts == [0, MiB, 2 * MiB, 3 * MiB]  # every range asked once: nothing fetched twice


def test_a_file_bigger_than_an_open_range_may_be_is_fetched_in_bounded_ranges(
    hub: Hub, make_hub_hive: Callable[..., ServerThread]
) -> None:
    hub.commit(REPO, {"big.bin": Generated(3 * MiB + 11, 5)})  # *.bin is LFS
    bounded = make_hub_hive(segments=1)
    _, state, _ = pull(bounded.url, f"hf:{REPO}::file=big.bin")
    assert state["status"] == "complete", state
    assert state["sha256"] == hub.file(REPO, "big.bin").sha256
    assert all(
        r.headers.get("range", "").count("-") == 1 and not r.headers["range"].endswith("-") for r in hub.cdn.records()
    )
    unbounded = make_hub_hive(segments=1, range_limit_bytes=50_000_000_000)  # asks `bytes=0-`: the CDN says no
    _, state, _ = pull(unbounded.url, f"hf:{REPO}::file=big.bin")
    assert state["status"] == "failed" and state["error_code"] == "DOWNLOAD_FAILED", state


@pytest.mark.parametrize("path", ["config.json", "model.safetensors"])
def test_a_file_already_here_is_still_checked_against_the_sha256_asked_for(
    hub: Hub, make_hub_hive: Callable[..., ServerThread], path: str
) -> None:
    hub.commit(REPO, {"config.json": b'{"hidden": 64}\n', "model.safetensors": Generated(MiB, 7)})
    hive = make_hub_hive(segments=1)
    _, first, _ = pull(hive.url, f"hf:{REPO}::file={path}")
    assert first["status"] == "complete", first
    wrong = "0" * 64
    _, state, events = pull(hive.url, f"hf:{REPO}::file={path}", sha256=wrong)  # its blob is here already
    assert state["status"] == "failed" and state["error_code"] == "CHECKSUM_MISMATCH", state
    assert wrong in state["error"] and first["sha256"] in state["error"]
    assert events[-1][0] == "error"
    _, again, _ = pull(hive.url, f"hf:{REPO}::file={path}", sha256=first["sha256"])  # the right one: complete
    assert again["status"] == "complete" and again["sha256"] == first["sha256"], again


def test_bytes_that_fail_the_hubs_digest_never_reach_the_final_path(
    hub: Hub, make_hub_hive: Callable[..., ServerThread], tmp_path: Path
) -> None:
    hub.commit(REPO, {"config.json": b'{"hidden": 64}\n', "model.safetensors": Generated(2 * MiB, 6)})
    hub.switches.damaged.add("config.json")  # the hub still states the git sha1 of the committed bytes
    lfs = hub.file(REPO, "model.safetensors")
    assert lfs.disk is not None
    with lfs.disk.open("r+b") as f:  # the CDN serves damaged bytes under the right sha256
        f.seek(MiB)
        f.write(b"\xff" * 16)
    hive = make_hub_hive(segments=1)
    for path, digest in (("config.json", "git blob sha1"), ("model.safetensors", "sha256")):
        _, state, events = pull(hive.url, f"hf:{REPO}::file={path}")
        assert state["status"] == "failed" and state["error_code"] == "CHECKSUM_MISMATCH", state
        assert digest in state["error"]
        assert events[-1][0] == "error" and events[-1][1]["code"] == "CHECKSUM_MISMATCH"
        dest, models = Path(state["path"]), tmp_path / "models-0"
        assert dest == layout.snapshot_file(models, state["commit"], path, repo=REPO)
        digest = hub.file(REPO, path).sha256 if path.endswith(".safetensors") else hub.file(REPO, path).blob_id
        assert not dest.exists() and not dest.is_symlink() and not layout.blob(models, digest, repo=REPO).exists()
        assert not layout.partial(models, digest, repo=REPO).exists() and layout.leftover_partials(models) == []


def test_hub_cdn_hosts_let_the_hubs_own_redirects_out_of_allowed_hosts(
    hub: Hub, make_hub_hive: Callable[..., ServerThread]
) -> None:
    hub.commit(REPO, {"model.safetensors": Generated(MiB, 8)})
    hub_host = f"127.0.0.1:{httpx.URL(hub.url).port}"
    cdn_host = f"127.0.0.1:{httpx.URL(hub.cdn.url).port}"
    strict = make_hub_hive(allowed_hosts=hub_host)  # the default CDN hosts are the real hub's, not this one
    _, state, _ = pull(strict.url, f"hf:{REPO}::file=model.safetensors")
    assert state["status"] == "failed" and state["error_code"] == "HOST_NOT_ALLOWED", state
    with_cdn = make_hub_hive(allowed_hosts=hub_host, hub_cdn_hosts=cdn_host)
    _, state, _ = pull(with_cdn.url, f"hf:{REPO}::file=model.safetensors")
    assert state["status"] == "complete" and state["sha256"] == hub.file(REPO, "model.safetensors").sha256
    with httpx.Client(base_url=with_cdn.url, timeout=10) as client:  # only the hub's redirects: not a URL ref
        refused = client.post("/v2/downloads", json={"model_ref": f"{hub.cdn.url}/anything"})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "HOST_NOT_ALLOWED"


# --------------------------------------------------------------------------- kill -9 and restart


def _hive_process(tmp_path: Path, hub: Hub, port: int, **env: str) -> ServiceProcess:
    return ServiceProcess(
        "services.hive.main",
        port,
        {
            "HIVE_ID": "hive-k",
            "HIVE_MODELS_DIR": str(tmp_path / "models-k"),
            "HF_ENDPOINT": hub.url,
            "HIVE_RANGE_LIMIT_BYTES": str(MiB),
            "HIVE_PROGRESS_INTERVAL": "0.05",
            "HIVE_RETRY_BASE_DELAY": "0.01",
            "HIVE_RETRY_MAX_DELAY": "0.05",
            **env,
        },
        tmp_path / "hive-k.log",
    )


def _written_span(models: Path, digest: str, partial: Path) -> tuple[int, int]:
    """Bytes of the partial that its saved notes say are written: [start, end)."""
    plan = layout.read_notes(models, digest, repo=REPO).get("segments")
    if plan is None:  # one connection: the partial holds exactly what was received
        return 0, partial.stat().st_size
    start, _, written = max(json.loads(plan)["chunks"], key=lambda c: c[2] - c[0])
    return start, written


@pytest.mark.parametrize("segmented", [False, True], ids=["single", "segmented"])
def test_kill_9_then_restart_verifies_the_file_and_refetches_a_damaged_partial(
    hub: Hub, tmp_path: Path, segmented: bool
) -> None:
    hub.commit(REPO, {"model.safetensors": Generated(6 * MiB, 9)})
    want = hub.file(REPO, "model.safetensors").sha256
    settings = {"HIVE_SEGMENTS": "4", "HIVE_SEGMENT_MIN_BYTES": str(256 * 1024), "HIVE_SPLIT_BELOW_BPS": "0"}
    env = {**(settings if segmented else {"HIVE_SEGMENTS": "1"}), "HIVE_BANDWIDTH_LIMIT": str(2 * MiB)}
    port = free_port()
    hive = _hive_process(tmp_path, hub, port, **env).start()
    try:
        with httpx.Client(base_url=hive.url, timeout=10) as client:
            ref = f"hf:{REPO}::file=model.safetensors"
            download_id = client.post("/v2/downloads", json={"model_ref": ref}).json()["download_id"]
            wait_until(
                lambda: int(client.get(f"/v2/downloads/{download_id}").json()["bytes_downloaded"]) > 2 * MiB,
                timeout=30,
                what="two MiB on disk",
            )
            state = client.get(f"/v2/downloads/{download_id}").json()
        assert hive.proc is not None
        hive.proc.send_signal(signal.SIGKILL)
        hive.proc.wait(timeout=10)
        models = tmp_path / "models-k"
        assert state["path"] == str(layout.snapshot_file(models, state["commit"], "model.safetensors", repo=REPO))
        partial = layout.partial(models, want, repo=REPO)  # an LFS file's blob is named by its sha256
        assert layout.read_notes(models, want, repo=REPO).get("validator")  # what lets the restart resume it
        start, end = _written_span(models, want, partial)
        assert end - start >= 8192, "nothing the restarted hive would keep"
        with partial.open("r+b") as f:  # damage bytes the restarted hive will keep, not fetch again
            f.seek(start + 4096)
            f.write(os.urandom(4096))
        hive = _hive_process(tmp_path, hub, port, **{**env, "HIVE_BANDWIDTH_LIMIT": "0"}).start()
        with httpx.Client(base_url=hive.url, timeout=10) as client:
            state = ended(client, download_id, "the resumed download to end")
        assert state["status"] == "complete", state
        assert state["sha256"] == want
        assert hashlib.sha256(Path(state["path"]).read_bytes()).hexdigest() == want
        assert layout.blob(models, want, repo=REPO).is_file() and layout.leftover_partials(models) == []
        assert "download_refetch" in (tmp_path / "hive-k.log").read_text()
    finally:
        hive.stop()


def test_small_files_run_beside_the_large_ones_in_slots_of_their_own(
    hub: Hub, make_hub_hive: Callable[..., ServerThread]
) -> None:
    """HIVE_MODEL_FILES_CONCURRENT=1: the one large file (16 MiB, the uplink capped so that it takes a
    couple of seconds) and a small file are downloading at the same moment (README, "Whole models")."""
    small = {f"part-{i}.bin": Generated(2 * MiB, seed=30 + i) for i in range(3)}
    hub.commit(REPO, {"model.safetensors": Generated(16 * MiB, seed=29), **small})
    hive = make_hub_hive(model_files_concurrent=1)
    both = False
    hub.uplink.set_rate(8 * MiB)
    try:
        with httpx.Client(base_url=hive.url, timeout=10) as client:
            download_id = client.post("/v2/downloads", json={"model_ref": f"hf:{REPO}"}).json()["download_id"]

            def look() -> bool:
                nonlocal both
                state = client.get(f"/v2/downloads/{download_id}").json()
                running = {f["path"] for f in state.get("files") or [] if f["status"] == "downloading"}
                both = both or ("model.safetensors" in running and bool(running & set(small)))
                return state["status"] in ("complete", "failed")

            wait_until(look, 60, what="the model downloaded", interval=0.02)
            state = ended(client, download_id, "the model")
    finally:
        hub.uplink.set_rate(None)
    assert state["status"] == "complete", state
    assert both, "a small file never ran beside the large one"
