"""The model server's fault knobs (`Fault`) and the per-path book that decides when each one fires.

Stdlib only and free of HTTP. `Faults` keeps, per URL path, a fault and its counters: which status
a request is answered with instead of the file, and which cut (drop, stall, short body) ends a body.
Counters restart on every `Faults.set`. Thread-safe: handler threads consult it concurrently.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Literal


@dataclass
class Fault:
    """Per-path misbehaviour. Counters (drop_times, stall_times, statuses) restart on every `set_fault`."""

    drop_after: int | None = None  # cut the connection after this many body bytes ...
    drop_times: int = 1  # ... for this many GETs (then serve normally); -1 = always
    stall_after: int | None = None  # stop sending after this many body bytes and hang ...
    stall_secs: float = 3600.0  # ... until the client disconnects, this elapses or the server stops
    stall_times: int = 1  # -1 = always
    statuses: list[int] = field(default_factory=list)  # one per request before serving normally
    retry_after: str | None = None  # Retry-After sent with `statuses` / `always_status`
    always_status: int | None = None  # e.g. 404 or 401 on every request
    rate_bps: int | None = None  # per-response cap in bytes/second (overrides the server's)
    ignore_range: bool = False  # answer 200 with the full body even when Range was asked
    change_etag_after: int | None = None  # after this many requests, ETag/Last-Modified change
    short_body: int | None = None  # announce the full Content-Length, send only this many bytes, cut
    redirect_to: str | None = None  # 302 to this absolute URL, with X-Linked-Etag / X-Linked-Size
    require_auth: str | None = None  # 401 unless "Authorization: Bearer <this>"


NO_FAULT = Fault()


@dataclass(frozen=True)
class Cut:
    """How a body ends early: dropped (FIN), stalled then dropped, or short (FIN) after `at` bytes."""

    kind: Literal["drop", "stall", "short"]
    at: int  # body bytes sent before the cut
    stall_secs: float = 0.0


def auth_ok(fault: Fault, authorization: str | None) -> bool:
    """Whether a request's Authorization header passes the fault's `require_auth`."""
    return fault.require_auth is None or authorization == f"Bearer {fault.require_auth}"


@dataclass
class _FaultState:
    fault: Fault
    requests: int = 0
    statuses_left: list[int] = field(default_factory=list)
    drops_left: int = 0
    stalls_left: int = 0

    @classmethod
    def of(cls, fault: Fault) -> _FaultState:
        fault = dataclasses.replace(fault, statuses=list(fault.statuses))
        return cls(fault, 0, list(fault.statuses), fault.drop_times, fault.stall_times)


class Faults:
    """The faults set per URL path, with their counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_path: dict[str, _FaultState] = {}

    def set(self, path: str, fault: Fault) -> None:
        with self._lock:
            self._by_path[path] = _FaultState.of(fault)

    def clear(self) -> None:
        with self._lock:
            self._by_path.clear()

    def take_request(self, url_path: str, authorization: str | None) -> tuple[Fault, int, int | None]:
        """Count a request on `url_path`: (its fault, the request's 1-based number, a status to answer)."""
        with self._lock:
            state = self._by_path.get(url_path)
            if state is None:
                return NO_FAULT, 0, None
            state.requests += 1
            fault = state.fault
            status = None
            if state.statuses_left and auth_ok(fault, authorization) and fault.always_status is None:
                status = state.statuses_left.pop(0)
            return fault, state.requests, status

    def take_cut(self, url_path: str, length: int) -> Cut | None:
        """The body fault that fires for a GET body of `length` bytes, consuming its count."""
        with self._lock:
            state = self._by_path.get(url_path)
            if state is None:
                return None
            f = state.fault
            options: list[Cut] = []
            if f.short_body is not None and f.short_body < length:
                options.append(Cut("short", f.short_body))
            if f.drop_after is not None and f.drop_after < length and state.drops_left != 0:
                options.append(Cut("drop", f.drop_after))
            if f.stall_after is not None and f.stall_after < length and state.stalls_left != 0:
                options.append(Cut("stall", f.stall_after, f.stall_secs))
            if not options:
                return None
            cut = min(options, key=lambda c: c.at)
            if cut.kind == "drop" and state.drops_left > 0:
                state.drops_left -= 1
            elif cut.kind == "stall" and state.stalls_left > 0:
                state.stalls_left -= 1
            return cut
