"""What a restarted hive resumes from its history: the unfinished downloads as jobs, at the commit
each had pinned, and the hub partials to keep. Pure: records in, jobs out (the manager enqueues them).

HF_TOKEN goes to today's hub only: a download recorded under another HF_ENDPOINT resumes without it.
A hub download that failed for a full disk kept its partials for a later request: they are kept too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from services.hive.history.store import DownloadRecord
from services.hive.hub.jobs import HubJob
from services.hive.peers.pull_part import PullPart
from services.hive.refs import HubRef, InvalidModelRef, origin_of, parse_model_ref
from services.hive.transfer import DownloadJob
from shared.models import DownloadStatus, ErrorCode

__all__ = ["RecoveryPlan", "recovery_plan", "resuming"]

Patterns = Callable[[str], tuple[tuple[str, ...] | None, tuple[str, ...] | None]]


@dataclass(slots=True)
class RecoveryPlan:
    resumed: list[tuple[DownloadJob | HubJob, int | None]] = field(default_factory=list)  # (job, max_bps)
    hub_refs: list[HubRef] = field(default_factory=list)  # repos whose partials stay


def recovery_plan(
    records: list[DownloadRecord], unfinished: list[DownloadRecord], hf_endpoint: str, patterns: Patterns
) -> RecoveryPlan:
    """`unfinished` (of `records`) as jobs to resume; `patterns` gives a download's include/exclude."""
    plan = RecoveryPlan()
    hub = origin_of(hf_endpoint)
    for rec in unfinished:
        token_origin = rec.token_origin if rec.token_origin == hub else None
        hub_job = hub_job_of(rec, token_origin, hf_endpoint, patterns)
        if hub_job is not None:
            plan.hub_refs.append(hub_job.hub_ref)
            plan.resumed.append((hub_job, rec.max_bps))
            continue
        job = DownloadJob(rec.download_id, rec.url, Path(rec.dest), rec.expected_sha256, token_origin)
        plan.resumed.append((resuming(job, rec), rec.max_bps))
    for rec in records:
        if rec.status == DownloadStatus.FAILED.value and rec.error_code == ErrorCode.INSUFFICIENT_DISK:
            if (kept := hub_job_of(rec, None, hf_endpoint, patterns)) is not None:
                plan.hub_refs.append(kept.hub_ref)
    return plan


def hub_job_of(rec: DownloadRecord, token_origin: str | None, hf_endpoint: str, patterns: Patterns) -> HubJob | None:
    """An unfinished hf: download resumed at the commit it had pinned (a hub download is one whose
    ref is hf:; one that never pinned a commit pins it now); None for a URL download."""
    try:
        ref = parse_model_ref(rec.model_ref, hf_endpoint)
    except InvalidModelRef:
        return None
    if ref.hub_ref is None:
        return None
    include, exclude = patterns(rec.download_id)
    pull = dataclasses.replace(PullPart.from_json(rec.sources), pull_id=rec.pull_id)
    return HubJob.of(
        rec.download_id,
        ref.hub_ref,
        include,
        exclude,
        pull,
        token_origin=token_origin,
        expected_sha256=rec.expected_sha256,
        commit=rec.commit,
    )


def resuming(job: DownloadJob, rec: DownloadRecord) -> DownloadJob:
    """`job` carrying on from the partial `rec` left: what its transfer had learnt of the file."""
    return dataclasses.replace(
        job, validator=rec.validator, total=rec.total_bytes, segments=rec.segments, hub_digest=rec.hub_digest
    )
