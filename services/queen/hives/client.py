"""HiveClient: the queen's calls to hives over httpx, with hive failures mapped to ApiError.

Every call carries `Authorization: Bearer RBEE_API_TOKEN` when a token is set, and the
`X-Correlation-Id` bound in the caller's log context (the incoming request's id), so one id
follows a request through the queen's and the hive's logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import httpx
import structlog

from services.queen.hives.registry import HiveInfo
from shared.errors import ApiError
from shared.models import ErrorCode
from shared.wire.hive import PlanRequest, StartDownload, hive_stream_url

__all__ = ["HiveClient", "HiveUnreachable", "close_stream", "correlation_id", "unreachable"]

log = structlog.get_logger()


def correlation_id() -> str:
    """The id bound to the current log context (by CorrelationIdMiddleware or a task), or a new one."""
    cid = structlog.contextvars.get_contextvars().get("correlation_id")
    return cid if isinstance(cid, str) and cid else uuid.uuid4().hex


class HiveUnreachable(ApiError):
    """503 HIVE_UNREACHABLE; `connected` tells whether the request may have reached the hive."""

    def __init__(self, hive_id: str, detail: str, connected: bool = True) -> None:
        super().__init__(503, ErrorCode.HIVE_UNREACHABLE, f"hive {hive_id!r} is unreachable: {detail}", hive_id=hive_id)
        self.connected = connected


def unreachable(hive_id: str, detail: str) -> HiveUnreachable:
    return HiveUnreachable(hive_id, detail)


async def close_stream(response: httpx.Response) -> None:
    """Close a streamed response completely, even if the calling task is cancelled meanwhile.

    httpx returns a connection to its pool (or closes it) only at the end of `aclose()`; a
    cancellation in the middle of it leaves the connection checked out for good, one open socket
    per relayed download. So the close runs shielded, and a cancelled caller waits for it (bounded)
    before the cancellation goes on.
    """
    closing = asyncio.ensure_future(response.aclose())
    try:
        await asyncio.shield(closing)
    except asyncio.CancelledError:
        await asyncio.wait([closing], timeout=5)
        raise
    except httpx.HTTPError:
        pass  # the connection is gone either way
    finally:
        if closing.done() and not closing.cancelled():
            with contextlib.suppress(Exception):
                closing.exception()  # retrieved, so a failed close is not reported as unhandled


def _describe(exc: httpx.HTTPError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _error_of(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return error
    return None


class HiveClient:
    def __init__(
        self, client: httpx.AsyncClient, token: str | None, timeout: float, stream_read_timeout: float
    ) -> None:
        self.client = client
        self.token = token
        self.timeout = timeout
        self.stream_timeout = httpx.Timeout(timeout, read=stream_read_timeout)

    def headers(self, last_event_id: int | None = None) -> dict[str, str]:
        headers = {"X-Correlation-Id": correlation_id()}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        return headers

    async def request(
        self,
        hive: HiveInfo,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        time_limit: float | None = None,
        quiet: bool = False,
    ) -> httpx.Response:
        """One call; a transport failure is 503 HIVE_UNREACHABLE (so is a registered URL httpx cannot
        use, e.g. a host name IDNA refuses), a hive error is raised as ApiError."""
        try:
            response = await self.client.request(
                method,
                hive.url + path,
                json=json,
                params=params,
                headers=self.headers(),
                timeout=time_limit or self.timeout,
            )
        except httpx.InvalidURL as exc:
            raise HiveUnreachable(hive.hive_id, f"its URL cannot be used: {exc}", connected=False) from None
        except httpx.HTTPError as exc:
            if not quiet:  # health checks log only changes of health, not every failed probe
                log.warning("hive_call_failed", hive_id=hive.hive_id, path=path, error=_describe(exc))
            connected = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            raise HiveUnreachable(hive.hive_id, _describe(exc), connected) from None
        self.raise_for_status(hive, response)
        return response

    @staticmethod
    def raise_for_status(hive: HiveInfo, response: httpx.Response) -> None:
        """Pass a hive's 4xx JSON error on as it is; anything else that failed is 502 HIVE_ERROR."""
        status = response.status_code
        if status < 400:
            return
        error = _error_of(response)
        if status in (401, 403):
            message = f"hive {hive.hive_id!r} refused the queen's credentials (check RBEE_API_TOKEN)"
            raise ApiError(502, "HIVE_ERROR", message, hive_id=hive.hive_id)
        if status < 500 and error is not None:
            extra = {k: v for k, v in error.items() if k not in ("code", "message")}
            extra.setdefault("hive_id", hive.hive_id)
            raise ApiError(status, error["code"], str(error.get("message", "")), **extra)
        if status == 502 and error is not None:  # the hive could not reach what it asked (the hub): its words
            message = f"hive {hive.hive_id!r}: {error.get('message', '')}"
            raise ApiError(502, error["code"], message, hive_id=hive.hive_id)
        log.warning("hive_error", hive_id=hive.hive_id, status=status, path=response.request.url.path)
        raise ApiError(502, "HIVE_ERROR", f"hive {hive.hive_id!r} answered {status}", hive_id=hive.hive_id)

    @staticmethod
    def _json_object(hive: HiveInfo, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ApiError(
                502, "HIVE_ERROR", f"hive {hive.hive_id!r} sent a body that is not JSON", hive_id=hive.hive_id
            )
        return body

    # -- the /v2 API -----------------------------------------------------------------------

    async def health(self, hive: HiveInfo, time_limit: float) -> dict[str, Any]:
        return self._json_object(hive, await self.request(hive, "GET", "/healthz", time_limit=time_limit, quiet=True))

    async def start_download(self, hive: HiveInfo, request: StartDownload) -> tuple[int, dict[str, Any]]:
        body = request.model_dump(mode="json", exclude_none=True)
        response = await self.request(hive, "POST", "/v2/downloads", json=body)
        return response.status_code, {**self._json_object(hive, response), "hive_id": hive.hive_id}

    async def list_downloads(
        self, hive: HiveInfo, status: str | None = None, time_limit: float | None = None
    ) -> list[dict[str, Any]]:
        params = {"status": status} if status else None
        response = await self.request(hive, "GET", "/v2/downloads", params=params, time_limit=time_limit)
        downloads = self._json_object(hive, response).get("downloads")
        if not isinstance(downloads, list):
            raise ApiError(502, "HIVE_ERROR", f"hive {hive.hive_id!r} sent no download list", hive_id=hive.hive_id)
        return [{**d, "hive_id": hive.hive_id} for d in downloads if isinstance(d, dict)]

    async def get_download(
        self, hive: HiveInfo, download_id: str, time_limit: float | None = None
    ) -> dict[str, Any] | None:
        """The hive's state of the download, or None when the hive does not know it."""
        try:
            response = await self.request(hive, "GET", f"/v2/downloads/{download_id}", time_limit=time_limit)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return {**self._json_object(hive, response), "hive_id": hive.hive_id}

    async def cancel_download(self, hive: HiveInfo, download_id: str) -> dict[str, Any]:
        response = await self.request(hive, "DELETE", f"/v2/downloads/{download_id}")
        return {**self._json_object(hive, response), "hive_id": hive.hive_id}

    async def plan(self, hive: HiveInfo, request: PlanRequest, time_limit: float) -> dict[str, Any]:
        """What pulling a whole model would take on the hive (`POST /v2/plans`), nothing fetched."""
        body = request.model_dump(mode="json", exclude_none=True)
        response = await self.request(hive, "POST", "/v2/plans", json=body, time_limit=time_limit)
        return self._json_object(hive, response)

    async def models(self, hive: HiveInfo, time_limit: float) -> dict[str, Any]:
        """`GET /v2/models`: every model in the hive's cache, and its disk."""
        return self._json_object(hive, await self.request(hive, "GET", "/v2/models", time_limit=time_limit))

    async def model(self, hive: HiveInfo, repo_id: str, time_limit: float) -> dict[str, Any] | None:
        """`GET /v2/models/{repo_id}`, or None when the hive does not hold it."""
        try:
            response = await self.request(hive, "GET", f"/v2/models/{repo_id}", time_limit=time_limit)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return self._json_object(hive, response)

    async def change_model(
        self, hive: HiveInfo, method: str, path: str, params: dict[str, str], time_limit: float
    ) -> httpx.Response:
        """A `DELETE /v2/models/…` or `PUT`/`DELETE …/pin`: the hive's answer (an error raised as ApiError)."""
        return await self.request(hive, method, f"/v2/models/{path}", params=params or None, time_limit=time_limit)

    @staticmethod
    def stream_url(hive_url: str, download_id: str | None = None) -> str:
        """The hive's stream of one download, or of every download (`shared.wire.hive.hive_stream_url`)."""
        return hive_stream_url(hive_url, download_id)

    async def open_stream(self, url: str, last_event_id: int | None = None) -> httpx.Response:
        """GET an SSE route and return the response unread (the caller checks it, then `close_stream`s it).

        Raises httpx.HTTPError when the hive cannot be reached (a ConnectError for a URL httpx cannot use).
        """
        headers = {**self.headers(last_event_id), "Accept": "text/event-stream", "Cache-Control": "no-store"}
        try:
            request = self.client.build_request("GET", url, headers=headers, timeout=self.stream_timeout)
        except httpx.InvalidURL as exc:
            raise httpx.ConnectError(f"the URL cannot be used: {exc}") from None
        return await self.client.send(request, stream=True)
