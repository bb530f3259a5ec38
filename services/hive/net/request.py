"""How a request is made: redirects followed by hand, a source's headers per hop, allowed hosts,
and what an answer or a transport failure means (a DownloadError for good, a Retry for now).

Redirects are followed here, not by httpx, so that a hub's token goes only to the hub's origin
(`Source.headers_for` is asked at every hop), every hop is checked against HIVE_ALLOWED_HOSTS (a
redirect the hub itself sends may also go to HIVE_HUB_CDN_HOSTS), the hub's answers are read
(`Source.learn`) and its signed CDN URL is reused until it stops working. An open-ended Range
of a file bigger than HIVE_RANGE_LIMIT_BYTES is asked as a bounded one.

An answer from the hub's own origin is read as the hub means it (`hub_protocol`): its refusals
(`X-Error-Code`) end the download with the contract's code and the hub's words, and its 429 is a
`RateLimited` to wait out, not a failed attempt. Every request to the hub's origin is counted
against the hive's one `HubQuota` first, and every answer from it tells the quota where the hub's
rate-limit window stands: when the window has nothing left, the request is not sent but waits as
for a 429 (`net/quota.py`). A body is written only as it is (identity): one with any other
Content-Encoding ends the download.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from services.hive.net.answers import parse_retry_after
from services.hive.net.errors import DownloadError, PeerNotReady, RateLimited, Retry
from services.hive.net.hub_headers import hub_refusal, parse_ratelimit
from services.hive.net.quota import HubQuota
from services.hive.net.source import Source
from services.hive.refs import host_allowed, origin_of
from shared.models import ErrorCode

__all__ = ["Requester", "body_errors", "check_status"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUSES = frozenset({408, 429})
_MAX_REDIRECTS = 10
_OPEN_RANGE_RE = re.compile(r"bytes=(\d+)-")


class Requester:
    """Opens streamed GETs on the async client, or on the sync one from a worker thread."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        sync_client: httpx.Client,
        threads: ThreadPoolExecutor,
        allowed_hosts: frozenset[tuple[str, int | None]] | None,
        hub_cdn_hosts: frozenset[tuple[str, int | None]] | None = None,
        range_limit: int | None = None,
        quota: HubQuota | None = None,
    ) -> None:
        self.client = client
        self.sync_client = sync_client
        self._threads = threads
        self._allowed_hosts = allowed_hosts
        self._hub_cdn_hosts = hub_cdn_hosts  # where the hub may redirect even outside allowed_hosts
        self._range_limit = range_limit  # the longest range one request asks for (None: no limit)
        self._quota = quota  # the hub's rate-limit windows, shared by the whole hive (None: not kept)

    async def open(self, source: Source, headers: dict[str, str], threaded: bool = False) -> httpx.Response:
        """The response to a GET of the source, redirects followed by hand; `threaded`: with the
        sync client, on a worker thread. A hub source starts at the URL the hub last sent it to
        while that is good, and goes back to the hub when the CDN refuses it (403/410). A
        connection that cannot be made raises Retry, like every other transient failure."""
        url = source.start(time.time())
        reused = url != source.url
        via_hub = reused  # a redirect chain that the hub began (now, or when it gave the reused URL)
        for _ in range(_MAX_REDIRECTS + 2):
            on_hub = source.on_hub(url)
            self._check_host(url, cdn=via_hub and not on_hub)
            req_headers = {**self._bounded(headers, source), **source.headers_for(url)}
            if on_hub and self._quota is not None:
                self._quota.admit(url)  # (RateLimited when the hub's window has nothing left)
            resp = await self._send(url, req_headers, threaded)
            if on_hub:
                if self._quota is not None:
                    self._quota.heard(resp.headers)
                if url == source.url:
                    source.resolves += 1
                if resp.status_code < 400:  # an error page says nothing of the file
                    source.learn(resp.headers)
            if resp.status_code in _REDIRECTS and "location" in resp.headers:
                via_hub = via_hub or on_hub
                url = urljoin(str(resp.url), resp.headers["location"])
                await self.close(resp)
                if not url.lower().startswith(("http://", "https://")):
                    raise DownloadError(ErrorCode.DOWNLOAD_FAILED, "redirected to a non-http(s) URL")
                continue
            if reused and not on_hub and resp.status_code in (403, 410):
                await self.close(resp)  # the signed URL expired or was revoked: ask the hub again
                source.forget(url)
                url, reused, via_hub = source.url, False, False
                continue
            if via_hub and not on_hub and not reused:
                source.remember(url)
            return resp
        raise DownloadError(ErrorCode.DOWNLOAD_FAILED, f"more than {_MAX_REDIRECTS} redirects")

    def _check_host(self, url: str, cdn: bool) -> None:
        if host_allowed(url, self._allowed_hosts):
            return
        if cdn and self._hub_cdn_hosts is not None and host_allowed(url, self._hub_cdn_hosts):
            return
        raise DownloadError(ErrorCode.HOST_NOT_ALLOWED, f"host {_host_of(url)!r} is not in HIVE_ALLOWED_HOSTS")

    def _bounded(self, headers: dict[str, str], source: Source) -> dict[str, str]:
        """An open-ended Range made bounded when the file is bigger than one request may ask for
        (the real hub's CDN refuses an open-ended range of a file over 50 GB)."""
        size, limit = source.facts.size, self._range_limit
        if size is None or limit is None or size <= limit:
            return headers
        match = _OPEN_RANGE_RE.fullmatch(headers.get("Range", ""))
        if match is None:
            return headers
        start = int(match[1])
        return {**headers, "Range": f"bytes={start}-{min(start + limit, size) - 1}"}

    async def _send(self, url: str, headers: dict[str, str], threaded: bool) -> httpx.Response:
        try:
            request = self.client.build_request("GET", url, headers=headers)
        except httpx.InvalidURL:
            raise DownloadError(ErrorCode.DOWNLOAD_FAILED, "redirected to a malformed URL") from None
        try:
            if threaded:
                return await self._send_threaded(request)
            return await self.client.send(request, stream=True, follow_redirects=False)
        except httpx.TimeoutException as exc:
            raise Retry(f"timeout connecting: {type(exc).__name__}", timeout=True) from None
        except httpx.TransportError as exc:
            raise Retry(f"connection failed: {type(exc).__name__}") from None

    async def _send_threaded(self, request: httpx.Request) -> httpx.Response:
        """The sync client's send on a worker thread; a response nobody waits for any more is closed."""
        future = asyncio.get_running_loop().run_in_executor(
            self._threads, functools.partial(self.sync_client.send, request, stream=True, follow_redirects=False)
        )
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_close_abandoned)
            raise

    async def close(self, resp: httpx.Response) -> None:
        if isinstance(resp.stream, httpx.AsyncByteStream):
            await resp.aclose()
        else:  # the sync client's: closing may flush a socket, so not on the event loop
            await asyncio.get_running_loop().run_in_executor(self._threads, resp.close)


def check_status(resp: httpx.Response, source: Source) -> None:
    """200 and 206 with an identity body pass; the rest is a DownloadError, or a Retry for what may
    pass (408, 429, 5xx). Answers from the hub's origin are read as the hub's (see the module)."""
    status = resp.status_code
    if status in (200, 206):
        _check_identity(resp)
        return
    from_hub = source.hub and origin_of(str(resp.url)) == source.token_origin
    if from_hub:
        page = source.repo_page or source.url
        revision = source.named.revision if source.named is not None else None
        refusal = hub_refusal(status, resp.headers, source.repo_id, page, revision)
        if refusal is not None:
            raise DownloadError(refusal.code, refusal.message)
        if status == 429 and (limited := _rate_limited(resp.headers)) is not None:
            raise limited
    if status == 503 and not source.hub and resp.headers.get("x-rbee-blob-state") == "planned":
        delay = parse_retry_after(resp.headers.get("retry-after"))  # a peer hive that will have it
        raise PeerNotReady("the peer has not begun the blob yet", delay=delay or 1.0)
    if status in (401, 403):
        raise DownloadError(ErrorCode.UNAUTHORIZED, f"the server refused access ({status})")
    if status in (404, 410):
        raise DownloadError(ErrorCode.NOT_FOUND, f"the file was not found ({status})")
    if status in _RETRY_STATUSES or status >= 500:
        delay = parse_retry_after(resp.headers.get("retry-after"))
        raise Retry(f"server answered {status}", timeout=status == 408, delay=delay)
    raise DownloadError(ErrorCode.DOWNLOAD_FAILED, f"unexpected HTTP status {status}")


def _rate_limited(headers: httpx.Headers) -> RateLimited | None:
    """The hub's 429 as a wait: the larger of its RateLimit `t` and Retry-After (None if it names neither)."""
    limit = parse_ratelimit(headers)
    retry_after = parse_retry_after(headers.get("retry-after"))
    waits = [w for w in (retry_after, None if limit is None else float(limit.reset_secs)) if w is not None]
    if not waits:
        return None
    if limit is None:
        return RateLimited.by_hub(max(waits))
    return RateLimited.by_hub(max(waits), limit.resource, limit.remaining)


def _check_identity(resp: httpx.Response) -> None:
    """The hive asks for `Accept-Encoding: identity` and writes raw bytes: an encoded body would be
    written as the file (and fail its checksum, or pass with none), so it is refused. Not retried:
    a server that ignored the request once does so again."""
    value = resp.headers.get("content-encoding", "")
    encodings = [e.strip().lower() for e in value.split(",") if e.strip()]
    if any(e != "identity" for e in encodings):
        raise DownloadError(
            ErrorCode.DOWNLOAD_FAILED,
            f"the server sent the body with Content-Encoding {value.strip()!r} although asked for identity;"
            " the hive writes only unencoded bodies",
        )


@contextlib.contextmanager
def body_errors(stall_timeout: float) -> Iterator[None]:
    """A body that stalls (no bytes for the read timeout) or breaks off is worth another try."""
    try:
        yield
    except (httpx.TimeoutException, httpcore.TimeoutException):
        raise Retry(f"stalled: no bytes for {stall_timeout:g}s", timeout=True) from None
    except (httpx.TransportError, httpx.StreamError, httpcore.NetworkError) as exc:
        raise Retry(f"connection dropped: {type(exc).__name__}") from None


def _close_abandoned(future: asyncio.Future[httpx.Response]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


def _host_of(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""
