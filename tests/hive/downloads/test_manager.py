"""The DownloadManager and its DownloadRunner, wired as services/hive/main.py wires them (tests/hive/
wiring.py) without the HTTP layer, against the test hub: a request joins the running download of the
same thing, what is on disk completes at once, refused refs record nothing, cancel and forget keep
their rules, and a new manager resumes what an earlier one left unfinished."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from services.hive.downloads.manager import InvalidModelRef, StillActive
from services.hive.hub.plan import HubPlanner
from services.hive.refs import HubRef
from services.modelserver.hub import Hub
from shared.models import DownloadStatus
from tests.hive.wiring import HiveParts, ended, hive_parts
from tests.hub_fixtures import REPO, Revisions, build_repo

S = DownloadStatus
MODEL = f"hf:{REPO}"
CONFIG = f"hf:{REPO}::file=config.json"
WEIGHTS = f"hf:{REPO}::file=model.safetensors"


@pytest.fixture
def revs(hub: Hub) -> Revisions:
    return build_repo(hub)


def run(hub: Hub, models: Path, scenario: Callable[[HiveParts], Awaitable[None]], **settings: object) -> None:
    async def go() -> None:
        async with hive_parts(models, hub.url, **settings) as parts:
            await scenario(parts)

    asyncio.run(go())


def hold(parts: HiveParts) -> None:
    """Every download reads one chunk, then waits for bandwidth (1 byte/s) till the test ends."""
    parts.throttle.set_limit(1)


def weights_partial(hub: Hub, planner: HubPlanner) -> Path:
    digest = hub.file(REPO, "model.safetensors").sha256
    return planner.cache(HubRef(hub.url, REPO, "main", None)).partial(digest)


async def until(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 15
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_the_same_ref_asked_again_joins_the_running_download(hub: Hub, revs: Revisions, tmp_path: Path) -> None:
    async def scenario(parts: HiveParts) -> None:
        hold(parts)
        first, created = await parts.manager.start(MODEL, include=["*.json"])
        assert created and first.status is S.QUEUED
        again, created_again = await parts.manager.start(MODEL, include=["*.json"])
        assert (again.download_id, created_again) == (first.download_id, False)
        other, created_other = await parts.manager.start(MODEL, include=["*.safetensors"])  # another selection
        assert created_other and other.download_id != first.download_id

    run(hub, tmp_path / "models", scenario)


def test_a_file_already_complete_on_disk_completes_at_once(hub: Hub, revs: Revisions, tmp_path: Path) -> None:
    sha = hashlib.sha256(hub.file(REPO, "config.json").content()).hexdigest()

    async def scenario(parts: HiveParts) -> None:
        manager = parts.manager
        started, created = await manager.start(CONFIG)
        fetched = await ended(parts.tracker, started.download_id)
        assert created and (fetched.status, fetched.sha256) == (S.COMPLETE, sha)
        again, created_again = await manager.start(CONFIG)
        assert not created_again and again.download_id != fetched.download_id
        assert (again.status, again.sha256, again.path) == (S.COMPLETE, sha, fetched.path)
        checked, created_checked = await manager.start(CONFIG, sha256=sha.upper())
        assert (checked.status, created_checked) == (S.COMPLETE, False)

    run(hub, tmp_path / "models", scenario)


def test_a_sha256_that_does_not_match_the_file_on_disk_starts_a_new_download(
    hub: Hub, revs: Revisions, tmp_path: Path
) -> None:
    async def scenario(parts: HiveParts) -> None:
        fetched, _ = await parts.manager.start(CONFIG)
        assert (await ended(parts.tracker, fetched.download_id)).status is S.COMPLETE
        other, created = await parts.manager.start(CONFIG, sha256="0" * 64)
        assert created and other.status is S.QUEUED and other.download_id != fetched.download_id

    run(hub, tmp_path / "models", scenario)


def test_patterns_on_one_file_and_a_sha256_on_a_model_are_refused_with_nothing_recorded(
    hub: Hub, revs: Revisions, tmp_path: Path
) -> None:
    models = tmp_path / "models"

    async def scenario(parts: HiveParts) -> None:
        with pytest.raises(InvalidModelRef, match="include and exclude"):
            await parts.manager.start(CONFIG, include=["*.json"])
        with pytest.raises(InvalidModelRef, match="include and exclude"):
            await parts.manager.start(CONFIG, exclude=["*.md"])
        with pytest.raises(InvalidModelRef, match="sha256 applies to one file"):
            await parts.manager.start(MODEL, sha256="0" * 64)
        assert parts.manager.list_downloads() == [] and parts.runner.active_count() == 0
        await parts.store.sync()

    run(hub, models, scenario)
    with sqlite3.connect(models / ".rbee" / "hive.db") as db:
        assert db.execute("SELECT count(*) FROM downloads").fetchone() == (0,)


def test_cancelling_a_running_download_ends_it_cancelled_and_removes_its_partial(
    hub: Hub, revs: Revisions, tmp_path: Path
) -> None:
    async def scenario(parts: HiveParts) -> None:
        hold(parts)
        partial = weights_partial(hub, parts.planner)
        running, _ = await parts.manager.start(WEIGHTS)
        await until("the partial", partial.exists)
        cancelled = await parts.manager.cancel(running.download_id)
        assert cancelled.status is S.CANCELLED
        assert not partial.exists()
        assert parts.runner.running_ids() == set()

    run(hub, tmp_path / "models", scenario)


def test_cancelling_a_queued_download_ends_it_cancelled_and_leaves_the_running_one(
    hub: Hub, revs: Revisions, tmp_path: Path
) -> None:
    async def scenario(parts: HiveParts) -> None:
        hold(parts)
        running, _ = await parts.manager.start(WEIGHTS)
        queued, _ = await parts.manager.start(CONFIG)
        # once the running one has its partial, the queued one's task has long been waiting for a slot
        await until("the running one's partial", weights_partial(hub, parts.planner).exists)
        state = parts.manager.get(queued.download_id)
        assert state is not None and (state.status, state.queue_position) == (S.QUEUED, 1)
        assert (await parts.manager.cancel(queued.download_id)).status is S.CANCELLED
        still = parts.manager.get(running.download_id)
        assert still is not None and not still.status.is_terminal
        assert parts.runner.running_ids() == {running.download_id}

    run(hub, tmp_path / "models", scenario, max_concurrent=1)


def test_a_download_cancelled_right_after_its_start_ends_cancelled(hub: Hub, revs: Revisions, tmp_path: Path) -> None:
    async def scenario(parts: HiveParts) -> None:
        hold(parts)
        started, _ = await parts.manager.start(CONFIG)
        cancelled = await parts.manager.cancel(started.download_id)  # before its task first ran
        assert cancelled.status is S.CANCELLED
        assert parts.runner.running_ids() == set()

    run(hub, tmp_path / "models", scenario)


def test_forget_refuses_an_active_download_and_drops_a_finished_one(hub: Hub, revs: Revisions, tmp_path: Path) -> None:
    async def scenario(parts: HiveParts) -> None:
        done, _ = await parts.manager.start(CONFIG)
        await ended(parts.tracker, done.download_id)
        hold(parts)
        active, _ = await parts.manager.start(WEIGHTS)
        with pytest.raises(StillActive):
            parts.manager.forget(active.download_id)
        assert parts.manager.get(active.download_id) is not None
        assert parts.manager.forget(done.download_id) is False  # the file stays: the HF cache is not ours
        assert parts.manager.get(done.download_id) is None
        assert [s.download_id for s in parts.manager.list_downloads()] == [active.download_id]

    run(hub, tmp_path / "models", scenario)


def test_a_new_manager_recovers_the_records_an_earlier_one_left(hub: Hub, revs: Revisions, tmp_path: Path) -> None:
    models = tmp_path / "models"
    ids: dict[str, str] = {}

    async def before_the_restart(parts: HiveParts) -> None:
        done, _ = await parts.manager.start(CONFIG)
        ids["done"] = (await ended(parts.tracker, done.download_id)).download_id
        hold(parts)
        unfinished, _ = await parts.manager.start(WEIGHTS)
        ids["unfinished"] = unfinished.download_id
        await until("the partial", weights_partial(hub, parts.planner).exists)

    async def after_the_restart(parts: HiveParts) -> None:
        by_id = {r.download_id: r.status for r in parts.records}  # the store's records, as the hive reads them
        assert set(by_id) == {ids["done"], ids["unfinished"]} and by_id[ids["done"]] == "complete"
        assert by_id[ids["unfinished"]] in ("queued", "starting", "downloading")
        assert parts.manager.list_downloads() == []  # nothing until recovered
        await parts.manager.recover(parts.records)
        finished = parts.manager.get(ids["done"])
        assert finished is not None and finished.status is S.COMPLETE
        resumed = await ended(parts.tracker, ids["unfinished"])
        assert (resumed.status, resumed.sha256) == (S.COMPLETE, hub.file(REPO, "model.safetensors").sha256)
        assert resumed.commit == revs.main

    run(hub, models, before_the_restart)
    run(hub, models, after_the_restart)
