"""HTTP and SSE to the queen's /v1 API, with stream reconnects that resume from Last-Event-ID."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx
from httpx_sse import SSEError, connect_sse

from services.keeper.events import STREAM_EVENTS, StreamEvent, terminal_event_from_pull, terminal_event_from_state
from shared.backoff import Backoff
from shared.digits import parse_uint

__all__ = [
    "DEFAULT_QUEEN_URL",
    "QueenClient",
    "QueenError",
    "QueenUnreachable",
    "ReconnectPolicy",
]

DEFAULT_QUEEN_URL = "http://127.0.0.1:8080"
_STREAMS = {"download": "/v1/downloads", "pull": "/v1/pulls"}  # what `follow` follows: where its streams are


class QueenError(Exception):
    """The queen answered with an error: HTTP status plus the contract's `{"error": {code, message}}`."""

    def __init__(self, status: int, code: str, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body or {}


class QueenUnreachable(Exception):
    """No answer from the queen (refused, timed out, dropped) within the allowed time."""


@dataclass(frozen=True)
class ReconnectPolicy:
    """Bounded exponential backoff; give up once the stream has been down for `budget` seconds."""

    budget: float = 60.0
    initial_delay: float = 0.25
    max_delay: float = 5.0


class _StreamEnded(Exception):
    """204 No Content: the server says the stream is past its terminal event."""


def _error_from_response(response: httpx.Response) -> QueenError:
    try:
        body = response.json()
        err = body["error"]
        return QueenError(response.status_code, str(err["code"]), str(err["message"]), body)
    except (ValueError, KeyError, TypeError):
        text = response.text.strip().splitlines()[0][:200] if response.text.strip() else response.reason_phrase
        return QueenError(response.status_code, f"HTTP_{response.status_code}", text)


def _json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise QueenError(response.status_code, "BAD_RESPONSE", "the queen sent a non-JSON answer") from None


def _retryable(exc: QueenError) -> bool:
    return exc.status >= 500 or exc.status == 429


class QueenClient:
    """A small synchronous client of the queen. Every method raises QueenError or QueenUnreachable."""

    def __init__(
        self,
        base_url: str = DEFAULT_QUEEN_URL,
        token: str | None = None,
        timeout: float = 10.0,
        stream_read_timeout: float = 45.0,
    ) -> None:
        headers = {"User-Agent": "rbee-keeper/0.1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self._timeout = httpx.Timeout(timeout)
        # The queen sends a keep-alive comment every 15 s, so a silent stream this long is a dead one.
        self._stream_timeout = httpx.Timeout(timeout, read=stream_read_timeout)
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=self._timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> QueenClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plain requests

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise QueenUnreachable(f"cannot reach the queen at {self.base_url} ({_reason(exc)})") from None
        if response.status_code >= 400:
            raise _error_from_response(response)
        return response

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        return _json_body(self._send(method, path, **kwargs))

    def json_object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A call the contract answers with a JSON object."""
        body: dict[str, Any] = self._request(method, path, **kwargs)
        return body

    def hives(self) -> list[dict[str, Any]]:
        body = self._request("GET", "/v1/hives")
        hives = body.get("hives", []) if isinstance(body, dict) else body
        return list(hives)

    def start_download(
        self,
        model_ref: str,
        hive_id: str | None = None,
        sha256: str | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """(state, created): created is False when the queen joined an existing download of the file (200)."""
        payload: dict[str, Any] = {"model_ref": model_ref}
        if hive_id:
            payload["hive_id"] = hive_id
        if sha256:
            payload["sha256"] = sha256
        response = self._send("POST", "/v1/downloads", json=_with_patterns(payload, include, exclude))
        return _json_body(response), response.status_code == 202

    def downloads(self, status: str | None = None) -> dict[str, Any]:
        params = {"status": status} if status else None
        return self.json_object("GET", "/v1/downloads", params=params)

    def download(self, download_id: str) -> dict[str, Any]:
        return self.json_object("GET", f"/v1/downloads/{_quote(download_id)}")

    def cancel(self, download_id: str) -> dict[str, Any]:
        return self.json_object("DELETE", f"/v1/downloads/{_quote(download_id)}")

    def start_pull(
        self,
        model_ref: str,
        hive_ids: Sequence[str] | str,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """A fleet pull: `hive_ids` a list, or "all". The answer: {pull_id, commit, downloads}."""
        hives = hive_ids if hive_ids == "all" else list(hive_ids)
        payload = _with_patterns({"model_ref": model_ref, "hive_ids": hives}, include, exclude)
        return self.json_object("POST", "/v1/pulls", json=payload)

    def pulls(self) -> dict[str, Any]:
        return self.json_object("GET", "/v1/pulls")

    def pull(self, pull_id: str) -> dict[str, Any]:
        return self.json_object("GET", f"/v1/pulls/{_quote(pull_id)}")

    def cancel_pull(self, pull_id: str) -> dict[str, Any]:
        return self.json_object("DELETE", f"/v1/pulls/{_quote(pull_id)}")

    # -- streams

    def _terminal(self, kind: Literal["download", "pull"], target_id: str) -> StreamEvent | None:
        """The terminal event an ended download's or pull's state stands for (None: it still runs)."""
        if kind == "download":
            return terminal_event_from_state(self.download(target_id))
        return terminal_event_from_pull(self.pull(target_id))

    def stream_once(self, url: str, last_event_id: int | None = None) -> Iterator[StreamEvent]:
        """One connection to a stream (`url`, e.g. /v1/downloads/{id}/stream). Raises _StreamEnded on 204,
        QueenError on an error status, httpx.TransportError / SSEError when the connection fails or drops."""
        headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
        with connect_sse(self._http, "GET", url, headers=headers, timeout=self._stream_timeout) as source:
            response = source.response
            if response.status_code == 204:
                raise _StreamEnded
            if response.status_code >= 400:
                response.read()
                raise _error_from_response(response)
            for sse in source.iter_sse():
                if sse.event not in STREAM_EVENTS:
                    continue
                try:
                    data = json.loads(sse.data)
                except ValueError:
                    continue
                event_id = parse_uint(sse.id)
                yield StreamEvent(event_id, sse.event, data if isinstance(data, dict) else {}, sse.data)

    def follow(
        self,
        kind: Literal["download", "pull"],
        target_id: str,
        policy: ReconnectPolicy | None = None,
        on_reconnect: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[StreamEvent]:
        """Every event of a download's (or a fleet pull's) stream until its terminal one, across dropped
        connections.

        After a drop it reconnects with Last-Event-ID and skips anything it has already yielded; a 204
        (past the end) asks for the state and yields the terminal event it stands for. Raises
        QueenUnreachable once the stream has been down for `policy.budget` seconds, QueenError on a 4xx.
        """
        url = f"{_STREAMS[kind]}/{_quote(target_id)}/stream"
        policy = policy or ReconnectPolicy()
        last_id: int | None = None
        down_since: float | None = None
        backoff = Backoff(policy.initial_delay, policy.max_delay, jitter=0.0)
        while True:
            reason = "the stream ended early"
            try:
                for event in self.stream_once(url, last_id):
                    down_since = None
                    backoff.reset()
                    if not event.is_terminal and event.id is not None and last_id is not None and event.id <= last_id:
                        continue  # already shown before the reconnect
                    if event.id is not None:
                        last_id = event.id if last_id is None else max(last_id, event.id)
                    yield event
                    if event.is_terminal:
                        return
            except _StreamEnded:
                # Past the terminal event (we missed it somehow): the state says how it ended.
                try:
                    terminal = self._terminal(kind, target_id)
                except QueenUnreachable as exc:
                    terminal, reason = None, str(exc)
                except QueenError as exc:
                    if not _retryable(exc):
                        raise
                    terminal, reason = None, f"{exc.code}: {exc.message}"
                if terminal is not None:
                    yield terminal
                    return
            except QueenError as exc:
                if not _retryable(exc):
                    raise
                reason = f"{exc.code}: {exc.message}"
            except (httpx.TransportError, SSEError) as exc:
                reason = _reason(exc)
            now = time.monotonic()
            down_since = now if down_since is None else down_since
            left = policy.budget - (now - down_since)
            if left <= 0:
                raise QueenUnreachable(
                    f"lost the stream from {self.base_url} and could not get it back within "
                    f"{policy.budget:g}s ({reason})"
                )
            wait = min(backoff.next(), left)
            if on_reconnect is not None:
                on_reconnect(f"stream interrupted ({reason}); reconnecting in {wait:.1f}s")
            sleep(wait)


def _with_patterns(
    payload: dict[str, Any], include: Sequence[str] | None, exclude: Sequence[str] | None
) -> dict[str, Any]:
    """A whole model's include / exclude globs, sent only when given."""
    if include:
        payload["include"] = list(include)
    if exclude:
        payload["exclude"] = list(exclude)
    return payload


def _quote(segment: str) -> str:
    return quote(segment, safe="")


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
