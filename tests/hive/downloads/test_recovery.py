"""What a restarted hive resumes (downloads/recovery.py), from DownloadRecords built here: URL
downloads carry on from their partial, hf: downloads at their pinned commit with their fleet pull's
part, HF_TOKEN only to today's hub, and the partials of a model that filled the disk are kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.hive.downloads.recovery import RecoveryPlan, recovery_plan
from services.hive.history.store import DownloadRecord
from services.hive.hub.jobs import HubJob
from services.hive.peers.pull_part import PullPart
from services.hive.refs import HubRef
from services.hive.transfer import DownloadJob
from shared.models import DownloadStatus, ErrorCode
from tests.hive.history.support import record as history_record

HUB = "http://hub.test:8080"
OLD_HUB = "http://old-hub.test:8080"
COMMIT = "c" * 40
DIGEST = "d" * 64
PATTERNS: dict[str, tuple[tuple[str, ...] | None, tuple[str, ...] | None]] = {
    "dl-model": (("*.safetensors", "*.json"), ("original/*",)),
}


def record(download_id: str, model_ref: str, seq: int = 1, **fields: Any) -> DownloadRecord:
    """An unfinished download's record (unless `fields` say otherwise), of `model_ref`."""
    fields.setdefault("status", DownloadStatus.DOWNLOADING.value)
    return history_record(download_id, seq, model_ref=model_ref, url=model_ref, **fields)


def patterns(download_id: str) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    return PATTERNS.get(download_id, (None, None))


def plan_of(records: list[DownloadRecord], unfinished: list[DownloadRecord] | None = None) -> RecoveryPlan:
    return recovery_plan(records, records if unfinished is None else unfinished, HUB, patterns)


def test_an_unfinished_url_download_resumes_with_what_its_transfer_had_learnt() -> None:
    rec = record(
        "dl-url",
        "http://files.test/a.bin",
        expected_sha256="e" * 64,
        validator='"etag-7"',
        total_bytes=5000,
        segments='{"chunks": [[0, 2500], [2500, 5000]]}',
        hub_digest=DIGEST,
        max_bps=1234,
        token_origin=HUB,
    )
    plan = plan_of([rec])
    assert plan.resumed == [
        (
            DownloadJob(
                "dl-url",
                "http://files.test/a.bin",
                Path("/models/dl-url.bin"),
                "e" * 64,
                HUB,
                validator='"etag-7"',
                total=5000,
                segments='{"chunks": [[0, 2500], [2500, 5000]]}',
                hub_digest=DIGEST,
            ),
            1234,
        )
    ]
    assert plan.hub_refs == []


def test_an_unfinished_model_resumes_at_its_commit_with_its_pull_part_and_patterns() -> None:
    pull = PullPart(COMMIT, {DIGEST: ("http://peer-a:9000",)}, frozenset({"f" * 40}))
    rec = record(
        "dl-model", "hf:org/model@main", commit=COMMIT, sources=pull.to_json(), pull_id="pull-9", token_origin=HUB
    )
    plan = plan_of([rec])
    ref = HubRef(HUB, "org/model", "main", None)
    assert plan.resumed == [
        (
            HubJob(
                "dl-model",
                ref,
                ("*.safetensors", "*.json"),
                ("original/*",),
                commit=COMMIT,
                token_origin=HUB,
                sources={DIGEST: ("http://peer-a:9000",)},
                hub_first=frozenset({"f" * 40}),
                pull_id="pull-9",
            ),
            None,
        )
    ]
    assert plan.hub_refs == [ref]  # its partials stay


def test_a_record_commit_wins_over_the_pulls_and_one_never_pinned_pins_it_now() -> None:
    other = "a" * 40
    pinned = record("dl-a", "hf:org/model::file=config.json", commit=COMMIT, sources=PullPart(other).to_json())
    unpinned = record("dl-b", "hf:org/model::file=config.json", seq=2, expected_sha256="e" * 64)
    plan = plan_of([pinned, unpinned])
    jobs = [job for job, _ in plan.resumed]
    assert [job.download_id for job in jobs] == ["dl-a", "dl-b"]
    first, second = jobs
    assert isinstance(first, HubJob) and isinstance(second, HubJob)
    assert first.commit == COMMIT
    assert second.commit is None and second.expected_sha256 == "e" * 64
    assert second.hub_ref == HubRef(HUB, "org/model", "main", "config.json")


def test_hf_token_goes_only_to_todays_hub() -> None:
    moved = record("dl-model", "hf:org/model", token_origin=OLD_HUB)
    url = record("dl-url", f"{OLD_HUB}/org/model/resolve/main/a.bin", seq=2, token_origin=OLD_HUB)
    plan = plan_of([moved, url])
    assert [job.token_origin for job, _ in plan.resumed] == [None, None]
    hub_job = plan.resumed[0][0]
    assert isinstance(hub_job, HubJob) and hub_job.hub_ref.endpoint == HUB  # asked of today's hub


def test_only_the_unfinished_records_are_resumed() -> None:
    done = record("dl-done", "hf:org/model", status=DownloadStatus.COMPLETE.value)
    running = record("dl-run", "http://files.test/a.bin", seq=2)
    plan = plan_of([done, running], unfinished=[running])
    assert [job.download_id for job, _ in plan.resumed] == ["dl-run"]
    assert plan.hub_refs == []


def test_a_model_that_filled_the_disk_keeps_its_partials_but_is_not_resumed() -> None:
    full = ErrorCode.INSUFFICIENT_DISK
    failed = DownloadStatus.FAILED.value
    records = [
        record("dl-full", "hf:org/full", status=failed, error_code=full),
        record("dl-broken", "hf:org/broken", seq=2, status=failed, error_code=ErrorCode.DOWNLOAD_FAILED),
        record("dl-url-full", "http://files.test/a.bin", seq=3, status=failed, error_code=full),
    ]
    plan = plan_of(records, unfinished=[])
    assert plan.resumed == []
    assert plan.hub_refs == [HubRef(HUB, "org/full", "main", None)]
