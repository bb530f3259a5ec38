"""Where a file of a hub download comes from: peer hives and the hub, in order, and the transfer job
for each. Pure (README, "Fleet pulls").

A blob this hive fetches from the hub at once for a fleet pull (`hub_first`) goes to the hub first;
any other blob comes from the peers that have or are getting it, and from the hub only when none of
them could give it. From the hub a file is fetched at the commit (never a moved branch's bytes), with
the hub's token; from a peer by digest, with RBEE_API_TOKEN and fewer attempts before the next source,
in ranges once the peer's blob is complete, spread over the peers after it that hold it too (mirrors).
Whatever serves them, the bytes are pinned by the hub's digest.
"""

from __future__ import annotations

from pathlib import Path

from services.hive.cache.partials import PartialNotes
from services.hive.hub.api import RepoFile
from services.hive.hub.jobs import HubJob
from services.hive.transfer import DownloadJob

__all__ = ["blob_url", "file_job", "order_sources"]


def order_sources(job: HubJob, f: RepoFile) -> list[str | None]:
    """Peers (base URLs) and the hub (None), in the order the file is asked of them."""
    peers: list[str | None] = list(job.sources.get(f.digest, ())) if f.digest else []
    return [None, *peers] if f.digest in job.hub_first or not peers else [*peers, None]


def blob_url(peer: str, digest: str) -> str:
    return f"{peer.rstrip('/')}/v2/blobs/{digest}"


def file_job(
    job: HubJob,
    commit: str,
    f: RepoFile,
    peer: str | None,
    notes: PartialNotes,
    blob: Path,
    partial: Path,
    peer_token: str | None,
    peer_attempts: int | None,
) -> DownloadJob:
    """The transfer of `f` into `blob` from `peer` (None: the hub), carrying on from `partial` and
    what its `notes` say (a peer's bytes resume a hub partial without its validator: the digest pins them)."""
    mirrors: tuple[str, ...] = ()
    if peer is None:
        url = job.hub_ref.resolve_url(commit, f.path)  # at the commit: never a moved branch's bytes
        token_origin, validator = job.token_origin, notes.validator
    else:
        url, token_origin, validator = blob_url(peer, f.digest), None, None
        peers = [p for p in order_sources(job, f) if p is not None]
        mirrors = tuple(blob_url(p, f.digest) for p in peers[peers.index(peer) + 1 :])
    return DownloadJob(
        job.download_id,
        url,
        blob,
        job.expected_sha256,
        token_origin,
        validator=validator,
        total=notes.total if notes.total is not None else f.size or None,
        segments=notes.segments,
        hub_digest=f.digest or None,
        partial=partial,
        pinned=bool(f.digest),
        peer_token=peer_token,
        max_attempts=peer_attempts,
        # a fleet pull's part takes a file from the hub over one connection (its followers read the
        # partial's prefix); from a peer, a complete blob is split (over the peers after it that hold it too)
        may_split=peer is not None or not (job.sources or job.hub_first),
        peer=peer is not None,
        mirrors=mirrors,
    )
