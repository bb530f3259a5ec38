"""Chaos: many downloads through a seeded fault-injecting proxy, processes killed mid-stream, a disk that fills up.

The bounded version runs in `make test`; `RBEE_CHAOS_LONG=1` (`make chaos`) runs more files and seeds.
`RBEE_CHAOS_SEED=N` replays one seed; every assertion message names the seed it ran with.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from services.hive.main import create_app as create_hive
from services.hive.settings import HiveSettings
from services.modelserver.chaos import KINDS, ChaosConfig, ChaosProxy
from services.modelserver.server import Fault, ModelServer
from services.queen.main import create_app as create_queen
from services.queen.settings import QueenSettings
from tests import layout
from tests.conftest import FAST_HIVE
from tests.support import REPO, ServerThread, ServiceProcess, free_port, read_until, serve, wait_until

KiB = 1024
MiB = 1024 * KiB
LONG = os.environ.get("RBEE_CHAOS_LONG") == "1"
TERMINAL = {"complete", "error", "cancelled"}
TOKEN = "chaos-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def chaos_seeds() -> list[int]:
    if "RBEE_CHAOS_SEED" in os.environ:
        return [int(os.environ["RBEE_CHAOS_SEED"])]
    return list(range(1, 11)) if LONG else [1]


def file_sizes() -> list[int]:
    sizes = [0, 1, 4 * KiB, 64 * KiB + 7, 200_000, 333_333, 600_000, 1 * MiB, 1_500_000, 2 * MiB, 2_700_000, 3_500_000]
    more = [
        5 * MiB + 3,
        7 * MiB,
        300 * KiB,
        9 * MiB,
        11,
        4 * MiB,
        2,
        777_777,
        6 * MiB,
        128 * KiB,
        3 * MiB - 1,
        12 * MiB,
    ]
    return [*sizes, *more] if LONG else sizes


def report(line: str) -> None:
    """A figure worth keeping: printed (seen with -s) and appended to $RBEE_CHAOS_REPORT (`make chaos` shows it)."""
    print("\n" + line)
    if path := os.environ.get("RBEE_CHAOS_REPORT"):
        with open(path, "a") as out:
            out.write(line + "\n")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def state(url: str, download_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"{url}/v2/downloads/{download_id}", headers=headers, timeout=5).json()
    return result


def settled(url: str, download_id: str, timeout: float, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return wait_until(
        lambda: (s := state(url, download_id, headers))["status"] in ("complete", "failed", "cancelled") and s,
        timeout,
        interval=0.05,
        what=f"{download_id} to settle",
    )


# --------------------------------------------------------------------------- network faults


@pytest.mark.parametrize("seed", chaos_seeds())
def test_many_downloads_through_a_faulty_network(
    seed: int, model_server: ModelServer, make_hive: Callable[..., ServerThread]
) -> None:
    """Every file lands with the right sha256 on a segmented and a single-connection hive; few bytes twice."""
    sizes = file_sizes()
    files = {
        f"f{i:02d}.bin": (size, model_server.add_file(f"org/repo/f{i:02d}.bin", size, seed=i))
        for i, size in enumerate(sizes)
    }
    config = ChaosConfig(seed=seed, probability=0.5 if LONG else 0.4, max_faults=5 if LONG else 3, stall_secs=30.0)
    with ChaosProxy(model_server.url, config) as proxy:
        tuning: dict[str, Any] = {
            "hf_endpoint": proxy.url,
            "max_concurrent": len(files),
            "segment_min_bytes": 256 * KiB,
            "write_batch_bytes": 64 * KiB,
            "max_attempts": config.max_faults + 2,  # at most max_faults failures in a row per path
        }
        # the single-connection hive reads every body on a worker thread (the path fast downloads take)
        hives = [make_hive(segments=4, **tuning), make_hive(segments=1, thread_above_bps=0, **tuning)]
        started: list[tuple[ServerThread, str, str]] = []
        for hive in hives:
            for name in files:
                response = httpx.post(f"{hive.url}/v2/downloads", json={"model_ref": f"hf:org/repo::file={name}"})
                assert response.status_code == 202, f"seed={seed}: {response.text}"
                started.append((hive, name, response.json()["download_id"]))
        began = time.monotonic()
        for hive, name, download_id in started:
            final = settled(hive.url, download_id, 60)
            faults = [f for f in proxy.faults if f.path.endswith(name)]
            assert final["status"] == "complete", f"seed={seed} {name}: {final} after faults {faults}"
            assert final["sha256"] == files[name][1], f"seed={seed} {name}"
            assert sha256_of(Path(final["path"])) == files[name][1], f"seed={seed} {name}"
        elapsed = time.monotonic() - began
        served, needed = proxy.body_bytes, sum(size for size, _ in files.values()) * len(hives)
        received = sum(_metric(hive.url, "rbee_hive_bytes_downloaded_total") for hive in hives)
        counts = proxy.fault_counts()
    leftovers = [
        p for hive in range(len(hives)) for p in layout.leftover_partials(model_server.root.parent / f"models-{hive}")
    ]
    assert not leftovers, f"seed={seed}: {leftovers}"
    ratio = served / needed
    figures = (
        f"chaos seed={seed}: {len(started)} downloads of {len(files)} files in {elapsed:.1f}s; "
        f"{sum(counts.values())} faults {dict(counts)} over {proxy.requests} requests; "
        f"bytes served {served} / file bytes {needed} = {ratio:.3f}; "
        f"bytes the hives received {received:.0f} = {received / needed:.3f}"
    )
    report(figures)
    assert sum(counts.values()) >= len(files), f"seed={seed}: too few faults to mean anything: {counts}"
    if not LONG and "RBEE_CHAOS_SEED" not in os.environ:
        assert set(counts) == set(KINDS), f"seed={seed}: every kind of fault should have fired: {counts}"
    # bytes served but never received are the ones a reset connection destroyed in flight (kernel buffers);
    # of what the hives did receive, none is fetched twice
    assert ratio < 1.3, f"seed={seed}: {served} bytes served for {needed} file bytes ({ratio:.3f})"
    assert received / needed < 1.01, f"seed={seed}: the hives received {received} bytes for {needed}"


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in {url}/metrics")


# --------------------------------------------------------------------------- process faults


def hive_env(models: Path, hub: str, hive_id: str, **extra: str) -> dict[str, str]:
    env = {f"HIVE_{k.upper()}": str(v) for k, v in FAST_HIVE.items()}
    env.update(
        HIVE_ID=hive_id,
        HIVE_MODELS_DIR=str(models),
        HF_ENDPOINT=hub,
        HIVE_WRITE_BATCH_BYTES=str(64 * KiB),
        RBEE_API_TOKEN=TOKEN,
        **extra,
    )
    return env


FAST_QUEEN: dict[str, Any] = {
    "orchestrator_id": "queen-chaos",
    "api_token": TOKEN,
    "health_interval": 0.1,
    "health_timeout": 1.0,
    "relay_backoff_initial": 0.05,
    "relay_backoff_max": 0.3,
    "unreachable_budget": 15.0,
    "keepalive_secs": 1.0,
}


class Reader(threading.Thread):
    """Reads an SSE stream on a thread into `events` until `done(event)` or the stream ends; the `model`
    events of an aggregated stream (README, "The model store") are not downloads' and are left out."""

    def __init__(self, url: str, done: Callable[[ServerSentEvent], bool]) -> None:
        super().__init__(daemon=True)
        self.url, self.done = url, done
        self.events: list[ServerSentEvent] = []
        self.error: BaseException | None = None
        self.client = httpx.Client(timeout=httpx.Timeout(5, read=30), headers=AUTH)

    def run(self) -> None:
        try:
            with connect_sse(self.client, "GET", self.url) as source:
                assert source.response.status_code == 200
                for sse in source.iter_sse():
                    if sse.data and sse.event != "model":
                        self.events.append(sse)
                        if self.done(sse):
                            return
        except BaseException as exc:  # reported by the test thread
            self.error = exc
        finally:
            self.client.close()


def test_hive_kill_9_under_relayed_and_aggregated_streams(tmp_path: Path, model_server: ModelServer) -> None:
    """A hive dies mid-download (segmented) with clients on the queen; both streams carry on after its restart."""
    kills_at = [MiB, 3 * MiB, 5 * MiB] if LONG else [MiB]  # bytes through the relay before each kill -9
    size = kills_at[-1] + 3 * MiB
    sha = model_server.add_file("org/repo/kill.bin", size)
    model_server.set_fault("/org/repo/resolve/main/kill.bin", Fault(rate_bps=2 * MiB))
    after_sha = model_server.add_file("org/repo/after.bin", 100_000)
    env = hive_env(
        tmp_path / "models", model_server.url, "hive-k", HIVE_SEGMENTS="4", HIVE_SEGMENT_MIN_BYTES=str(256 * KiB)
    )
    hive = ServiceProcess("services.hive.main", free_port(), env, tmp_path / "hive.log").start()
    with contextlib.ExitStack() as stack:
        stack.callback(hive.stop)
        queen = stack.enter_context(serve(create_queen(QueenSettings(hives={"hive-k": hive.url}, **FAST_QUEEN))))
        wait_until(lambda: _healthy(queen.url, "hive-k"), 10, what="hive-k healthy in the queen")
        response = httpx.post(
            f"{queen.url}/v1/downloads", json={"model_ref": "hf:org/repo::file=kill.bin"}, headers=AUTH
        )
        assert response.status_code == 202, response.text
        download_id = response.json()["download_id"]
        relayed = Reader(f"{queen.url}/v1/downloads/{download_id}/stream", lambda e: e.event in TERMINAL)
        finished: set[str] = set()

        def aggregated_done(e: ServerSentEvent) -> bool:
            if e.event == "complete":
                finished.add(e.json()["download_id"])
            return len(finished) >= 2

        everything = Reader(f"{queen.url}/v1/downloads/stream", aggregated_done)
        relayed.start()
        everything.start()
        for threshold in kills_at:
            wait_until(
                lambda t=threshold: any(e.json()["bytes"] >= t for e in relayed.events),
                15,
                what=f"{threshold} B relayed",
            )
            seen_before = len(everything.events)
            hive.kill()
            hive.start()  # same port, same models dir and database
            # the restarted hive's ids jump past anything it may have sent but not checkpointed
            last_id = max(int(e.id) for e in everything.events[:seen_before])
            wait_until(
                lambda n=seen_before, i=last_id: any(int(e.id) > i for e in everything.events[n:]),
                15,
                what="aggregated events after the restart",
            )
        later = httpx.post(f"{queen.url}/v1/downloads", json={"model_ref": "hf:org/repo::file=after.bin"}, headers=AUTH)
        assert later.status_code == 202, later.text
        relayed.join(30)
        everything.join(30)
        relay_metrics = httpx.get(f"{queen.url}/metrics", headers=AUTH, timeout=5).text
        for name, reader in (("relayed", relayed), ("aggregated", everything)):
            summary = [(e.event, e.id, e.json()["download_id"][-4:], e.json()["bytes"]) for e in reader.events]
            assert reader.error is None, f"{name}: {reader.error!r} after {summary}"
            assert not reader.is_alive(), f"the {name} stream did not reach its end: {summary}"

    events = relayed.events
    ids = [int(e.id) for e in events]
    assert ids == sorted(set(ids)), ids  # the restarted hive kept its event ids rising; nothing repeated
    assert [e.event for e in events].count("complete") == 1 and events[-1].event == "complete"
    nbytes = [e.json()["bytes"] for e in events]
    assert nbytes == sorted(nbytes)
    assert events[-1].json()["sha256"] == sha and events[-1].json()["hive_id"] == "hive-k"
    assert events[-1].json()["path"] == str(layout.hub_file(tmp_path / "models", "kill.bin"))
    assert sha256_of(layout.hub_file(tmp_path / "models", "kill.bin")) == sha
    assert sha256_of(layout.hub_file(tmp_path / "models", "after.bin")) == after_sha
    assert layout.leftover_partials(tmp_path / "models") == []
    assert len(everything.events) > seen_before
    reconnects = [line for line in relay_metrics.splitlines() if line.startswith("rbee_queen_relay_reconnects_total ")]
    assert reconnects and float(reconnects[0].split()[1]) >= len(kills_at), reconnects  # the relay came back
    assert finished >= {download_id, later.json()["download_id"]}
    log = (tmp_path / "hive.log").read_text()
    assert log.count('"event": "history_recovered"') == len(kills_at) + 1
    assert log.count('"event": "download_resuming_segments"') == len(kills_at), "a restart did not resume the plan"
    assert "download_partial_discarded" not in log and "download_restart" not in log
    # A kill costs the bytes written since the plan's last durable checkpoint (reported at most once a second,
    # written within half a second): at these early kills, at most what had arrived, plus what was in flight.
    sent = model_server.total_bytes_sent("/org/repo/resolve/main/kill.bin")
    report(f"hive kill -9 x{len(kills_at)}: {sent} bytes served for a {size}-byte file ({sent / size:.2f})")
    assert sent < size + sum(kills_at) + len(kills_at) * 2 * MiB, sent


def _healthy(queen_url: str, hive_id: str) -> bool:
    hives = httpx.get(f"{queen_url}/v1/hives", headers=AUTH, timeout=5).json()["hives"]
    return any(h["hive_id"] == hive_id and h["healthy"] for h in hives)


@pytest.mark.parametrize("kind", ["hub", "url"])
def test_segment_plan_is_durable_before_the_partial_grows_holes(
    tmp_path: Path, model_server: ModelServer, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A kill -9 at any instant must leave a partial the next run can trust: once the partial is extended
    to full size (holes in it), the plan that tells bytes from holes is already durable: for a hub file in
    the notes beside its partial, written and fsynced; for a URL download in the database."""
    size = 3 * MiB
    sha = model_server.add_file("org/repo/holes.bin", size)
    url = f"{model_server.url}/org/repo/holes.bin"
    ref, served = (
        ("hf:org/repo::file=holes.bin", "/org/repo/resolve/main/holes.bin")
        if kind == "hub"
        else (url, "/org/repo/holes.bin")
    )
    model_server.set_fault(served, Fault(rate_bps=3 * MiB))
    models = tmp_path / "models"
    settings = HiveSettings(
        id="hive-h",
        models_dir=models,
        hf_endpoint=model_server.url,
        segments=4,
        segment_min_bytes=256 * KiB,
        **FAST_HIVE,
    )
    final = layout.hub_file(models, "holes.bin") if kind == "hub" else layout.url_file(models, url)
    partial = layout.partial(models, sha) if kind == "hub" else final.with_name("holes.bin.part")
    db = models / ".rbee" / "hive.db"
    # What was on disk, and what had been fsynced, at the instant the partial was extended to full size
    # (the hive runs in this process: os.fsync and os.ftruncate are watched where its threads call them)
    fsynced: list[str] = []
    at_extension: list[tuple[list[str], dict[str, Any]]] = []
    real_fsync, real_ftruncate = os.fsync, os.ftruncate

    def fsync(fd: int) -> None:
        with contextlib.suppress(OSError):
            fsynced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def ftruncate(fd: int, length: int) -> None:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") == str(partial) and length == size and not at_extension:
                at_extension.append((list(fsynced), layout.read_notes(models, sha)))
        real_ftruncate(fd, length)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "ftruncate", ftruncate)
    with serve(create_hive(settings)) as hive:
        download_id = httpx.post(f"{hive.url}/v2/downloads", json={"model_ref": ref}).json()["download_id"]

        def extended() -> bool:
            with contextlib.suppress(FileNotFoundError):
                return partial.stat().st_size == size
            return False

        wait_until(extended, 10, interval=0.001, what="the partial extended to full size")
        if kind == "hub":
            assert at_extension, "the partial was not extended by the segmented transfer"
            synced_before, notes = at_extension[0]
            assert notes.get("segments") and json.loads(notes["segments"])["total"] == size, notes
            assert notes.get("validator") and notes.get("total") == size, notes
            notes_tmp = f"{partial.parent}/.{sha}.json."  # the notes are written to a temporary file, fsynced, renamed
            assert any(p.startswith(notes_tmp) for p in synced_before), (
                f"the notes were not fsynced first: {synced_before}"
            )
        else:
            with sqlite3.connect(db) as conn:  # read after seeing the file: the plan must already be there
                (plan,) = conn.execute(
                    "SELECT segments FROM downloads WHERE download_id = ?", (download_id,)
                ).fetchone()
            assert plan and json.loads(plan)["total"] == size
        done = settled(hive.url, download_id, 15)
    assert done["status"] == "complete" and done["sha256"] == sha and done["path"] == str(final)
    assert not partial.exists() and layout.leftover_partials(models) == []


def test_keeper_plain_watch_rides_out_a_queen_kill(
    tmp_path: Path, model_server: ModelServer, make_hive: Callable[..., ServerThread]
) -> None:
    """`rbee-keeper watch ID --plain` across a SIGKILL and restart of the queen, with RBEE_API_TOKEN everywhere."""
    sha = model_server.add_file("org/repo/watch.bin", 6 * MiB)
    model_server.set_fault("/org/repo/resolve/main/watch.bin", Fault(rate_bps=3 * MiB))
    hive = make_hive(id="hive-w", api_token=TOKEN)
    queen_env = {
        "QUEEN_HIVES": f"hive-w={hive.url}",
        "RBEE_API_TOKEN": TOKEN,
        **{f"QUEEN_{k.upper()}": str(v) for k, v in FAST_QUEEN.items() if k != "api_token"},
    }
    queen = ServiceProcess("services.queen.main", free_port(), queen_env, tmp_path / "queen.log").start()
    keeper: subprocess.Popen[bytes] | None = None
    try:
        wait_until(lambda: _healthy(queen.url, "hive-w"), 10, what="hive-w healthy")
        response = httpx.post(
            f"{queen.url}/v1/downloads", json={"model_ref": "hf:org/repo::file=watch.bin"}, headers=AUTH
        )
        download_id = response.json()["download_id"]
        env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "RBEE_QUEEN_URL")}
        env.update(RBEE_API_TOKEN=TOKEN, RBEE_QUEEN_URL=queen.url)
        keeper = subprocess.Popen(
            [sys.executable, "-m", "services.keeper.cli", "watch", download_id, "--plain"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert keeper.stdout is not None and keeper.stderr is not None
        before = read_until(keeper.stdout.fileno(), lambda data: b" downloading " in data, 20)
        queen.kill()
        queen.start()
        after = read_until(keeper.stdout.fileno(), lambda data: b"complete: " in data, 40)
        assert keeper.wait(timeout=10) == 0
        err = keeper.stderr.read().decode()
    finally:
        if keeper is not None:
            if keeper.poll() is None:
                keeper.kill()
                keeper.wait()
            for pipe in (keeper.stdout, keeper.stderr):
                if pipe is not None:
                    pipe.close()
        queen.stop()
    out = (before + after).decode()
    assert "reconnecting" in out + err and "Traceback" not in out + err, out + err
    lines = out.splitlines()
    assert lines[-1].startswith("complete: watch.bin") and lines[-1].endswith(f"(sha256 {sha})"), lines
    assert sum(line.startswith("complete: ") for line in lines) == 1
    assert sha256_of(Path(state(hive.url, download_id, AUTH)["path"])) == sha


# --------------------------------------------------------------------------- disk faults


@pytest.mark.parametrize("restart", [False, True], ids=["same-hive", "after-a-restart"])
@pytest.mark.parametrize("segments", [1, 4], ids=["single", "segmented"])
def test_disk_filling_up_mid_download_keeps_the_partial_and_resumes(
    tmpfs: Path, tmp_path: Path, model_server: ModelServer, segments: int, restart: bool
) -> None:
    size = 2 * MiB + 12345
    sha = model_server.add_file("org/repo/fill.bin", size)
    path = "/org/repo/resolve/main/fill.bin"
    model_server.set_fault(path, Fault(rate_bps=4 * MiB // segments))  # (per connection)
    settings = HiveSettings(
        id="hive-d",
        models_dir=tmpfs / "models",
        state_db=tmp_path / "hive.db",
        hf_endpoint=model_server.url,
        segments=segments,
        segment_min_bytes=256 * KiB,
        write_batch_bytes=64 * KiB,
        **FAST_HIVE,
    )
    final = layout.hub_file(tmpfs / "models", "fill.bin")
    partial = layout.partial(tmpfs / "models", sha)
    filler = tmpfs / "filler"
    with contextlib.ExitStack() as stack:
        hive = stack.enter_context(serve(create_hive(settings)))
        ref = {"model_ref": "hf:org/repo::file=fill.bin"}
        first = httpx.post(f"{hive.url}/v2/downloads", json=ref).json()["download_id"]
        # bytes written, as a resume would count them (received bytes may still be in a write batch): a
        # single connection's partial holds them in order, a segmented one's notes say which
        wait_until(lambda: _written(tmpfs / "models", sha, partial) >= 256 * KiB, 10, what="a quarter MiB written")
        with contextlib.suppress(OSError), open(filler, "wb") as f:  # someone else fills the disk
            while True:
                f.write(b"\0" * 64 * KiB)
                f.flush()
        failed = settled(hive.url, first, 15)
        assert failed["status"] == "failed" and failed["error_code"] == "INSUFFICIENT_DISK", failed
        assert not final.exists(), "a truncated file at the final path"
        assert not layout.blob(tmpfs / "models", sha).exists(), "a truncated blob"
        assert partial.is_file() and partial.stat().st_size > 0, "the partial should be kept for a resume"
        assert layout.read_notes(tmpfs / "models", sha).get("validator"), "and what a resume needs with it"
        sent_before = model_server.total_bytes_sent(path)

        filler.unlink(missing_ok=True)
        if restart:  # a later request to a restarted hive finds the partial and its notes too
            stack.close()
            hive = stack.enter_context(serve(create_hive(settings)))
            assert partial.is_file(), "the restarted hive removed the kept partial as an orphan"
        second = httpx.post(f"{hive.url}/v2/downloads", json=ref)
        assert second.status_code == 202, second.text
        done = settled(hive.url, second.json()["download_id"], 15)
        assert done["status"] == "complete" and done["sha256"] == sha, done
        assert sha256_of(final) == sha and not partial.exists() and not layout.notes(tmpfs / "models", sha).exists()
        resumed = [r for r in model_server.records(path)[-3:] if r.range and not r.range.startswith("bytes=0-")]
        assert resumed, "the second download should carry on from the kept partial with Range"
        assert model_server.total_bytes_sent(path) - sent_before < size


def _written(models: Path, digest: str, partial: Path) -> int:
    """Bytes of a hub partial a resume would keep. The size is read first: a partial extended to full size
    (holes in it) already has its plan in the notes, so a full size read here comes with the plan."""
    try:
        size = partial.stat().st_size
    except FileNotFoundError:
        size = 0
    plan = layout.read_notes(models, digest).get("segments")
    if plan is not None:
        return sum(written - start for start, _, written in json.loads(plan)["chunks"])
    return size


def test_preflight_disk_check_refuses_a_file_larger_than_the_disk(
    tmpfs: Path, tmp_path: Path, model_server: ModelServer
) -> None:
    model_server.add_file("org/repo/huge.bin", 5 * MiB)
    settings = HiveSettings(
        id="hive-p",
        models_dir=tmpfs / "models",
        state_db=tmp_path / "hive.db",
        hf_endpoint=model_server.url,
        **FAST_HIVE,
    )
    with serve(create_hive(settings)) as hive:
        download_id = httpx.post(f"{hive.url}/v2/downloads", json={"model_ref": "hf:org/repo::file=huge.bin"}).json()[
            "download_id"
        ]
        failed = settled(hive.url, download_id, 10)
    assert failed["status"] == "failed" and failed["error_code"] == "INSUFFICIENT_DISK", failed
    assert "free" in failed["error"]
    assert not layout.hub_file(tmpfs / "models", "huge.bin").exists()
    marks = tmpfs / "models" / ".rbee" / "models.json"  # the model store's last uses: not the file's bytes
    written = sum(p.stat().st_size for p in (tmpfs / "models").rglob("*") if p.is_file() and p != marks)
    assert written == 0, f"{written} bytes written before the pre-flight check refused"
