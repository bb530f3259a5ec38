"""The planner of hub downloads (hub/plan.py) against the real test hub: the commit pinned and the
files picked before any byte moves, what is already in the cache, whether the rest fits on the disk,
and the plan report. Built as services/hive/main.py builds it (tests/hive/wiring.py); the cache is
filled here by writing blobs and links where huggingface_hub reads them (RepoCache)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import structlog

from services.hive.cache.repo import RepoCache
from services.hive.hub.api import RepoFile
from services.hive.hub.jobs import HubJob
from services.hive.hub.plan import HubPlanner
from services.hive.net.errors import DownloadError
from services.hive.refs import HubRef
from services.modelserver.hub import Hub
from shared.models import DownloadStatus, ErrorCode
from tests.hive.wiring import hive_parts
from tests.hub_fixtures import LFS_SIZE, REPO, Revisions, build_repo

LOG = structlog.get_logger()
EVERY_FILE = {".gitattributes", "config.json", "tokenizer.json", "model.safetensors", "sub/dir/notes.txt"}


@pytest.fixture
def revs(hub: Hub) -> Revisions:
    return build_repo(hub)


class Disk:
    """The free bytes the planner is told of."""

    def __init__(self, free: int = 10**12) -> None:
        self.free = free

    def __call__(self, _where: Path) -> int:
        return self.free


def with_planner(hub: Hub, models: Path, scenario: Callable[[HubPlanner], Awaitable[None]], disk: Disk) -> None:
    async def go() -> None:
        async with hive_parts(models, hub.url, disk_free=disk) as parts:
            await scenario(parts.planner)

    asyncio.run(go())


def job(hub: Hub, revision: str = "main", file: str | None = None, **fields: object) -> HubJob:
    return HubJob("dl-plan", HubRef(hub.url, REPO, revision, file), token_origin=hub.url, **fields)  # type: ignore[arg-type]


def hub_files(hub: Hub, revision: str = "main") -> dict[str, RepoFile]:
    """The commit's files as the hub holds them, named by the digest the cache uses."""
    commit = hub.repo(REPO).resolve(revision)
    assert commit is not None
    return {p: RepoFile(p, f.size, f.sha256 if f.lfs else f.blob_id) for p, f in commit.files.items()}


def put_in_cache(hub: Hub, models: Path, commit: str, files: list[RepoFile], revision: str = "main") -> RepoCache:
    """The files' blobs and snapshot links in the cache, and the ref naming the commit."""
    cache = RepoCache(models.resolve(), REPO)
    for f in files:
        blob = cache.blob(f.digest)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(hub.file(REPO, f.path, commit).content())
        cache.link(commit, f.path, f.digest)
    cache.write_ref(revision, commit)
    return cache


def test_plan_pins_the_commit_and_picks_the_files_with_include_and_exclude(
    hub: Hub, revs: Revisions, tmp_path: Path
) -> None:
    want = hub_files(hub)

    async def scenario(planner: HubPlanner) -> None:
        commit, files = await planner.plan(job(hub), LOG)
        assert commit == revs.main and {f.path for f in files} == EVERY_FILE  # every page of the tree
        assert all(f == want[f.path] for f in files)  # sizes and digests as the hub has them
        _, picked = await planner.plan(job(hub, include=("*.json",), exclude=("tokenizer*",)), LOG)
        assert [f.path for f in picked] == ["config.json"]
        commit, pr_files = await planner.plan(job(hub, "refs/pr/1", include=("config.json",)), LOG)
        assert commit == revs.pr and pr_files[0].digest == hub_files(hub, "refs/pr/1")["config.json"].digest
        commit, old = await planner.plan(job(hub, commit=revs.first, include=("config.json",)), LOG)
        assert commit == revs.first  # a restarted download keeps the commit it had
        assert old[0].digest == hub_files(hub, revs.first)["config.json"].digest != want["config.json"].digest

    with_planner(hub, tmp_path / "models", scenario, Disk())


def test_plan_of_one_file_probes_it_at_the_revision(hub: Hub, revs: Revisions, tmp_path: Path) -> None:
    async def scenario(planner: HubPlanner) -> None:
        commit, files = await planner.plan(job(hub, file="model.safetensors"), LOG)
        assert (commit, files) == (revs.main, [hub_files(hub)["model.safetensors"]])

    with_planner(hub, tmp_path / "models", scenario, Disk())


def test_an_empty_selection_is_refused_naming_the_patterns(hub: Hub, revs: Revisions, tmp_path: Path) -> None:
    async def scenario(planner: HubPlanner) -> None:
        with pytest.raises(DownloadError) as refused:
            await planner.plan(job(hub, include=("*.gguf",), exclude=("x/*",)), LOG)
        assert refused.value.code == ErrorCode.NOT_FOUND
        assert "['*.gguf']" in refused.value.message and "['x/*']" in refused.value.message

    with_planner(hub, tmp_path / "models", scenario, Disk())


def test_present_is_none_until_every_file_is_in_the_cache(hub: Hub, revs: Revisions, tmp_path: Path) -> None:
    models = tmp_path / "models"
    wanted = job(hub, include=("*.json",))

    async def scenario(planner: HubPlanner) -> None:
        assert await planner.present(wanted) is None  # nothing on disk
        commit, files = await planner.plan(wanted, LOG)  # (keeps the commit's listing)
        put_in_cache(hub, models, commit, files[:1])
        assert await planner.present(wanted) is None  # one file of two
        cache = put_in_cache(hub, models, commit, files)
        present = await planner.present(wanted)
        assert present is not None
        assert (present.path, present.commit, present.files, present.warning) == (
            cache.snapshot_dir(commit),
            revs.main,
            files,
            None,
        )
        one = await planner.present(job(hub, file="config.json"))
        assert one is not None and one.path == cache.snapshot_file(commit, "config.json")
        assert one.files == [hub_files(hub)["config.json"]]

    with_planner(hub, models, scenario, Disk())


def test_present_is_none_once_the_branch_has_moved_on(hub: Hub, revs: Revisions, tmp_path: Path) -> None:
    models = tmp_path / "models"
    wanted = job(hub, include=("config.json",))

    async def scenario(planner: HubPlanner) -> None:
        commit, files = await planner.plan(wanted, LOG)
        put_in_cache(hub, models, commit, files)
        assert await planner.present(wanted) is not None
        hub.commit(REPO, {"config.json": b'{"hidden": 512}\n'})
        assert await planner.present(wanted) is None  # main names another commit now

    with_planner(hub, models, scenario, Disk())


def test_check_disk_refuses_what_does_not_fit_less_what_a_partial_holds(
    hub: Hub, revs: Revisions, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    disk = Disk(free=LFS_SIZE - 1)
    weights = hub_files(hub)["model.safetensors"]

    async def scenario(planner: HubPlanner) -> None:
        cache = planner.cache(job(hub).hub_ref)
        assert planner.needed(cache, [weights]) == LFS_SIZE
        with pytest.raises(DownloadError) as refused:
            planner.check_disk(cache, [weights])
        assert refused.value.code == ErrorCode.INSUFFICIENT_DISK
        assert str(LFS_SIZE) in refused.value.message and str(LFS_SIZE - 1) in refused.value.message
        partial = cache.partial(weights.digest)
        partial.parent.mkdir(parents=True)
        partial.write_bytes(b"\1" * (1024 * 1024))
        assert planner.needed(cache, [weights]) == LFS_SIZE - 1024 * 1024
        planner.check_disk(cache, [weights])  # fits now

    with_planner(hub, models, scenario, disk)


def test_report_gives_the_commit_files_and_the_bytes_still_needed_against_the_free_disk(
    hub: Hub, revs: Revisions, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    files = hub_files(hub)
    disk = Disk(free=123_456_789)

    async def scenario(planner: HubPlanner) -> None:
        put_in_cache(hub, models, revs.main, [files["config.json"]])
        report = await planner.report(job(hub, include=("*.json", "*.safetensors")))
        assert report.commit == revs.main
        assert {f.path for f in report.files} == {"config.json", "tokenizer.json", "model.safetensors"}
        assert report.present == frozenset({files["config.json"].digest})
        assert report.needed_bytes == files["tokenizer.json"].size + LFS_SIZE
        assert (report.free_bytes, report.refused) == (123_456_789, None)

    with_planner(hub, models, scenario, disk)


def test_file_states_show_each_file_as_the_cache_holds_it(hub: Hub, revs: Revisions, tmp_path: Path) -> None:
    models = tmp_path / "models"
    files = hub_files(hub)
    ref = job(hub).hub_ref
    patterns = (("*.json",), None)

    async def scenario(planner: HubPlanner) -> None:
        assert planner.file_states(ref, revs.main, *patterns, DownloadStatus.FAILED) is None  # no listing kept
        await planner.plan(job(hub, include=patterns[0]), LOG)
        put_in_cache(hub, models, revs.main, [files["config.json"]])
        states = planner.file_states(ref, revs.main, *patterns, DownloadStatus.FAILED)
        assert states is not None
        assert sorted(states, key=lambda s: str(s["path"])) == [
            {"path": "config.json", "size": files["config.json"].size, "bytes": files["config.json"].size,
             "status": "complete"},
            {"path": "tokenizer.json", "size": files["tokenizer.json"].size, "bytes": 0, "status": "failed"},
        ]  # fmt: skip

    with_planner(hub, models, scenario, Disk())
