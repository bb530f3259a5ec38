"""The hub's JSON API as a whole-model download uses it: which commit a revision names, which files
that commit holds, and what one file is (README, "Whole models").

- `GET {HF_ENDPOINT}/api/models/{repo}/revision/{rev}` -> the commit (`sha`) and whether the repo is
  gated; metadata of a gated repo is public, so access is proved by `probe` on a file;
- `GET {HF_ENDPOINT}/api/models/{repo}/tree/{commit}?recursive=true`, every page (`Link: rel="next"`)
  -> the files: path, size, and the digest the cache names the blob by (the LFS sha256, else the
  git blob sha1), as huggingface_hub's `list_repo_tree` reads it. To a caller without access a gated
  repo's tree masks every LFS digest as `*`s: such a file is listed with no digest (""), never
  with the mask for one;
- `probe`: a one-byte GET of `resolve/{rev}/{path}`, which answers what `hf_hub_download` reads from
  its HEAD (`X-Repo-Commit`, `X-Linked-Etag` / `ETag`, `X-Linked-Size` / the range's total).

Requests go through the downloader's Requester (redirects by hand, the token to the hub's origin
only, allowed hosts, the hub's refusals as contract codes). Failures are retried, and the hub's 429
waited out, as `net/retry.py` says. Parsing is pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import structlog

from services.hive.cache.repo import COMMIT_RE, DIGEST_RE
from services.hive.net.answers import content_range, unsatisfied_total
from services.hive.net.errors import DownloadError, RateLimited, Retry
from services.hive.net.request import Requester, body_errors, check_status
from services.hive.net.retry import RetryPolicy, Waiting
from services.hive.net.source import HubName, Source
from services.hive.refs import HubRef, InvalidModelRef, check_repo_path
from services.hive.transfer import DownloaderConfig
from shared.digits import is_ascii_digits
from shared.models import ErrorCode

__all__ = ["HubApi", "RepoFile", "RepoRevision", "parse_revision", "parse_tree_page", "tree_url"]

log = structlog.get_logger()
T = TypeVar("T")


_MASKED_RE = re.compile(r"\*+")
_MAX_JSON_BYTES = 32 * 1024 * 1024  # one answer of the API (a tree page of 1000 entries is ~300 KB)
_MAX_PAGES = 10_000


@dataclass(frozen=True, slots=True)
class RepoFile:
    """One file of a commit: where it goes in the snapshot, how big, the blob's name (its digest)."""

    path: str
    size: int
    digest: str  # the LFS sha256, else the git blob sha1 (what the hub's ETag says); "" if the hub said none

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "digest": self.digest}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RepoFile:
        return cls(str(data["path"]), int(data["size"]), str(data["digest"]))


@dataclass(frozen=True, slots=True)
class RepoRevision:
    commit: str
    gated: bool


def parse_revision(data: Any) -> RepoRevision:
    """`/api/models/{repo}/revision/{rev}` -> its commit; ValueError for an answer that names none."""
    if not isinstance(data, dict) or not isinstance(data.get("sha"), str) or not COMMIT_RE.fullmatch(data["sha"]):
        raise ValueError("the hub's revision answer names no 40-hex commit")
    gated = data.get("gated", False)
    return RepoRevision(data["sha"], bool(gated) and gated != "false")


def parse_tree_page(data: Any) -> list[RepoFile]:
    """One page of the tree API -> its files (folders skipped); ValueError for a malformed or
    unsafe entry (a path that could leave the snapshot, a digest that is no hex digest)."""
    if not isinstance(data, list):
        raise ValueError("the hub's tree answer is not a list")
    files = []
    for entry in data:
        if not isinstance(entry, dict) or entry.get("type") != "file":
            continue
        path, size, lfs = entry.get("path"), entry.get("size"), entry.get("lfs")
        digest = lfs.get("oid") if isinstance(lfs, dict) else entry.get("oid")
        if isinstance(lfs, dict) and isinstance(lfs.get("size"), int):
            size = lfs["size"]
        if not isinstance(path, str) or not isinstance(size, int) or size < 0 or not isinstance(digest, str):
            raise ValueError(f"the hub's tree has a malformed entry: {str(entry)[:200]}")
        try:
            check_repo_path(path)
        except InvalidModelRef as exc:
            raise ValueError(f"the hub's tree names an unsafe path {path[:200]!r}: {exc}") from None
        if _MASKED_RE.fullmatch(digest):
            digest = ""  # a gated repo's, to a caller without access: unknown, not a name
        elif not DIGEST_RE.fullmatch(digest.lower()):
            raise ValueError(f"the hub's tree gives {path!r} no usable digest")
        files.append(RepoFile(path, size, digest.lower()))
    return files


def tree_url(hub_ref: HubRef, commit: str) -> str:
    return f"{hub_ref.endpoint}/api/models/{hub_ref.repo_id}/tree/{commit}?recursive=true&expand=false"


class HubApi:
    def __init__(self, requester: Requester, config: DownloaderConfig, retry: RetryPolicy | None = None) -> None:
        self.requester = requester
        self.config = config
        self.retry = retry or config.retry

    def source(self, hub_ref: HubRef, url: str) -> Source:
        named = HubName(hub_ref.repo_id, hub_ref.revision, f"{hub_ref.endpoint}/{hub_ref.repo_id}")
        return Source.of(url, hub_ref.endpoint_origin, self.config.hf_token, named=named)

    async def revision(
        self, hub_ref: HubRef, attempts: int | None = None, waiting: Waiting | None = None
    ) -> RepoRevision:
        data = await self._json(hub_ref, hub_ref.revision_url, attempts, waiting)
        return _checked(parse_revision, data[0])

    async def tree(self, hub_ref: HubRef, commit: str, waiting: Waiting | None = None) -> list[RepoFile]:
        """Every file of `commit`, all pages."""
        url: str | None = tree_url(hub_ref, commit)
        files: list[RepoFile] = []
        for _ in range(_MAX_PAGES):
            if url is None:
                return files
            data, next_url = await self._json(hub_ref, url, waiting=waiting)
            files.extend(_checked(parse_tree_page, data))
            url = next_url
        raise DownloadError(
            ErrorCode.DOWNLOAD_FAILED, f"the hub's tree of {hub_ref.repo_id} has over {_MAX_PAGES} pages"
        )

    async def probe(
        self, hub_ref: HubRef, revision: str, path: str, attempts: int | None = None, waiting: Waiting | None = None
    ) -> tuple[str, RepoFile]:
        """(commit, file) as the hub answers a one-byte read of `path` at `revision`."""
        source = self.source(hub_ref, hub_ref.resolve_url(revision, path))

        async def once() -> tuple[str, RepoFile]:
            resp = await self.requester.open(source, {"Range": "bytes=0-0", "Accept-Encoding": "identity"})
            try:
                if resp.status_code == 416 and unsatisfied_total(resp.headers) == 0:
                    source.learn(resp.headers)  # an empty file: not even byte 0 exists
                    size: int | None = 0
                else:
                    check_status(resp, source)
                    answered = content_range(resp.headers) if resp.status_code == 206 else None
                    size = source.facts.size
                    if size is None:
                        size = answered[1] if answered is not None else _int(resp.headers.get("content-length"))
            finally:
                await self.requester.close(resp)
            facts = source.facts
            if facts.commit is None or size is None:
                raise DownloadError(
                    ErrorCode.DOWNLOAD_FAILED,
                    f"the server did not say which commit {revision!r} names (X-Repo-Commit) or how big {path!r} is:"
                    " HF_ENDPOINT does not answer as the Hugging Face Hub does",
                )
            return facts.commit, RepoFile(path, size, facts.digest or "")

        return await self._retried(once, attempts, waiting)

    # -- requests ------------------------------------------------------------------------------

    async def _json(
        self, hub_ref: HubRef, url: str, attempts: int | None = None, waiting: Waiting | None = None
    ) -> tuple[Any, str | None]:
        """The JSON an API URL answers, and the next page's URL (Link rel="next") if any."""
        source = self.source(hub_ref, url)

        async def once() -> tuple[Any, str | None]:
            resp = await self.requester.open(source, {"Accept": "application/json", "Accept-Encoding": "identity"})
            try:
                check_status(resp, source)
                with body_errors(self.config.stall_timeout):
                    body = await _read_bounded(resp)
                next_url = resp.links.get("next", {}).get("url")
            finally:
                await self.requester.close(resp)
            try:
                return json.loads(body), next_url
            except ValueError:
                raise Retry("the hub's answer is not JSON") from None

        return await self._retried(once, attempts, waiting)

    async def _retried(
        self, call: Callable[[], Awaitable[T]], attempts: int | None = None, waiting: Waiting | None = None
    ) -> T:
        failures = 0
        while True:
            try:
                return await call()
            except RateLimited as limited:
                log.warning("hub_api_rate_limited", reason=str(limited), wait=round(limited.wait, 2))
                await self.retry.wait_out(limited, waiting)
            except Retry as retry:
                failures += 1
                self.retry.give_up(retry, failures, attempts, f"the hub's API failed {failures} times")
                delay = self.retry.delay(failures, retry)
                log.warning("hub_api_retry", reason=str(retry), failures=failures, delay=round(delay, 2))
                await self.retry.sleep(delay)


def _checked(parse: Callable[[Any], T], data: Any) -> T:
    try:
        return parse(data)
    except ValueError as exc:
        raise DownloadError(ErrorCode.DOWNLOAD_FAILED, str(exc)) from None


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and is_ascii_digits(value.strip()) else None


async def _read_bounded(resp: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in resp.aiter_raw():
        body += chunk
        if len(body) > _MAX_JSON_BYTES:
            raise DownloadError(ErrorCode.DOWNLOAD_FAILED, "the hub's answer is larger than 32 MiB")
    return bytes(body)
