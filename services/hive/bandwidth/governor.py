"""The BandwidthGovernor: which cap holds the hive now, applied to its buckets (README, "Bandwidth").

Downloads run under the smallest of HIVE_BANDWIDTH_LIMIT (or the value PUT at run time), the cap of
the schedule's window in force and the NIC controller's download cap (and a download's own max_bps);
peer uploads under the NIC controller's upload cap. `0` anywhere means that cap does not bind. Every
`tick` seconds the loop samples the interface (when HIVE_NIC is set), recomputes, sets the shared
token buckets (running transfers see a new rate within one wait slice) and tells the tracker the cap
each running download is held to. Where the interface or its counters cannot be read, a warning is
logged once and the other caps go on alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import structlog

from services.hive.bandwidth.nic import Counters, NicController, NicError, link_speed, read_counters
from services.hive.bandwidth.schedule import InForce, parse_schedule
from services.hive.tracker.tracker import DownloadTracker
from services.hive.transfer.throttle import Throttle
from shared.models import DownloadStatus, rfc3339

__all__ = ["BandwidthGovernor", "Nic", "offset_wall", "open_nic"]

log = structlog.get_logger()


@dataclass(slots=True)
class Nic:
    """The shared interface: its name, how to read its (rx, tx) counters, and the controller."""

    name: str
    read: Callable[[], tuple[int, int]]
    controller: NicController | None  # None: no budget could be found (logged once at start)
    error: str | None = None  # why it is not in use, once it is not


def smallest(*caps: tuple[int, str]) -> tuple[int, str | None]:
    """The smallest cap that binds (non-zero) and its reason; (0, None) if none binds."""
    binding = [c for c in caps if c[0] > 0]
    return min(binding, key=lambda c: c[0]) if binding else (0, None)


class BandwidthGovernor:
    def __init__(
        self,
        throttle: Throttle,
        tracker: DownloadTracker,
        own_in: Callable[[], int],
        limit: int,
        schedule: str | None,
        zone: tzinfo | None,
        nic: Nic | None = None,
        tick: float = 1.0,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`own_in` counts the bytes the downloader received; `zone` is the schedule's (None: local
        time); `wall` is the schedule's clock (a test's may run ahead), `clock` the counters'."""
        self.throttle = throttle
        self.tracker = tracker
        self.own_in = own_in
        self.limit = limit
        self.schedule_text, self.schedule = schedule or None, parse_schedule(schedule) if schedule else None
        self.zone = zone
        self.nic = nic
        self.tick_secs = tick
        self.wall = wall
        self.clock = clock
        self.effective = 0
        self.reason: str | None = None
        self.upload = 0
        self.in_force = InForce(None, None)
        self.apply()

    # -- what a PUT changes ----------------------------------------------------------------------

    def set_limit(self, rate: int) -> None:
        self.limit = rate
        log.info("bandwidth_limit_changed", bandwidth_limit=rate)

    def set_schedule(self, text: str | None) -> None:
        """A new schedule (None or empty: none); ScheduleError, with nothing changed, if it is bad."""
        schedule = parse_schedule(text) if text else None
        self.schedule_text, self.schedule = (text if schedule is not None else None), schedule
        log.info("bandwidth_schedule_changed", schedule=self.schedule_text)

    # -- the loop --------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The schedule's time now, in its zone."""
        return self.wall().astimezone(self.zone)

    def sample(self) -> None:
        """Feed the NIC controller one sample of the counters (a failure: logged once, then off)."""
        nic = self.nic
        if nic is None or nic.controller is None or nic.error is not None:
            return
        try:
            rx, tx = nic.read()
        except NicError as e:
            nic.error = str(e)
            log.warning("bandwidth_nic_unreadable", nic=nic.name, reason=nic.error, effect="the other caps stay")
            return
        nic.controller.sample(Counters(self.clock(), rx, tx, self.own_in(), self.throttle.upload.taken))

    def apply(self) -> None:
        """Recompute the caps in force and set them on the buckets and the running downloads."""
        self.in_force = self.schedule.at(self.now()) if self.schedule is not None else InForce(None, None)
        controller = self._controller()
        nic_down, nic_up = (controller.caps.download, controller.caps.upload) if controller else (0, 0)
        effective, reason = smallest((self.limit, "limit"), (self.in_force.rate, "schedule"), (nic_down, "nic"))
        if (effective, reason) != (self.effective, self.reason):
            log.info("bandwidth_cap_changed", effective_bps=effective, reason=reason)
        self.effective, self.reason, self.upload = effective, reason, nic_up
        if self.throttle.limit != effective:
            self.throttle.set_limit(effective)
        if self.throttle.upload.rate != nic_up:
            self.throttle.upload.set_rate(nic_up)
        for state in self.tracker.list_active():
            if state.status is DownloadStatus.DOWNLOADING:
                own = self.throttle.download_limit(state.download_id)
                capped, why = smallest((effective, reason or ""), (own, "max_bps"))
                self.tracker.set_cap(state.download_id, capped or None, why)

    def tick(self) -> None:
        self.sample()
        self.apply()

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick_secs)
            self.tick()

    # -- what GET says ---------------------------------------------------------------------------

    def _controller(self) -> NicController | None:
        nic = self.nic
        return None if nic is None or nic.error is not None else nic.controller

    def state(self) -> dict[str, Any]:
        window, until = self.in_force.window, self.in_force.until
        controller = self._controller()
        nic: dict[str, Any] | None = None
        if self.nic is not None:
            nic = {"name": self.nic.name, "active": controller is not None, "error": self.nic.error}
            if controller is not None:
                caps = controller.caps
                nic.update(
                    budget=controller.budget,
                    floor=controller.floor,
                    other_rx_bps=round(caps.other_rx),
                    other_tx_bps=round(caps.other_tx),
                    download_bps=caps.download,
                    upload_bps=caps.upload,
                )
        return {
            "bandwidth_limit": self.limit,
            "schedule": self.schedule_text,
            "timezone": str(self.now().tzinfo),
            "window": None if window is None else window.text,
            "window_bps": None if window is None else window.rate,
            "until": rfc3339(until.astimezone(UTC)) if until is not None else None,
            "effective_bps": self.effective,
            "reason": self.reason,
            "upload_bps": self.upload,
            "nic": nic,
        }


def offset_wall(offset_secs: float) -> Callable[[], datetime]:
    """The real time moved by `offset_secs` (HIVE_BANDWIDTH_CLOCK_OFFSET, for tests)."""
    delta = timedelta(seconds=offset_secs)
    return lambda: datetime.now(UTC) + delta


def open_nic(name: str, budget: int | None, floor: int) -> Nic:
    """HIVE_NIC's interface, its budget (HIVE_NIC_BUDGET, else the link's speed) and controller. An
    interface that cannot be read, or has no budget, is logged once here and left out of the caps."""

    def read() -> tuple[int, int]:
        return read_counters(name)

    budget = budget or link_speed(name)
    try:
        read()
    except NicError as e:
        log.warning("bandwidth_nic_unreadable", nic=name, reason=str(e), effect="the other caps stay")
        return Nic(name, read, None, str(e))
    if not budget:
        reason = f"{name} names no link speed (/sys/class/net/{name}/speed): set HIVE_NIC_BUDGET"
        log.warning("bandwidth_nic_no_budget", nic=name, reason=reason, effect="the other caps stay")
        return Nic(name, read, None, reason)
    # on loopback every byte is received and sent on the same interface (README, "Bandwidth")
    return Nic(name, read, NicController(budget, floor, loopback=name == "lo"))
