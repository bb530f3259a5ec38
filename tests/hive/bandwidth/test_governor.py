"""The BandwidthGovernor on a clock the test moves: how the caps combine, reach the buckets and the
running downloads, and what happens when the interface cannot be read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from services.hive.bandwidth.governor import BandwidthGovernor, Nic, open_nic
from services.hive.bandwidth.nic import NicController, NicError
from services.hive.bandwidth.schedule import ScheduleError
from services.hive.tracker.tracker import DownloadTracker
from services.hive.transfer.throttle import Throttle
from shared.models import DownloadStatus

MB = 1_000_000


class World:
    """The wall clock, the monotonic clock, the interface's counters and the hive's own ones."""

    def __init__(self) -> None:
        self.wall = datetime(2026, 12, 6, 5, 59, 58, tzinfo=UTC)
        self.mono = 0.0
        self.rx = self.tx = self.own_in = 0
        self.broken = False

    def read(self) -> tuple[int, int]:
        if self.broken:
            raise NicError("no interface 'eth9' in /proc/net/dev")
        return self.rx, self.tx

    def second(self, other_rx: int = 0, own_in: int = 0) -> None:
        self.wall += timedelta(seconds=1)
        self.mono += 1.0
        self.rx += other_rx + own_in
        self.own_in += own_in


def governor(world: World, throttle: Throttle, tracker: DownloadTracker, **kw: object) -> BandwidthGovernor:
    options: dict[str, object] = {"limit": 0, "schedule": None, "zone": UTC, **kw}
    return BandwidthGovernor(
        throttle, tracker, own_in=lambda: world.own_in, wall=lambda: world.wall, clock=lambda: world.mono, **options
    )  # type: ignore[arg-type]


def test_the_smallest_cap_wins_and_says_which_it_is() -> None:
    world, throttle = World(), Throttle()
    gov = governor(world, throttle, DownloadTracker(), limit=20 * MB, schedule="22:00-06:00=0,06:00-22:00=5MB")
    assert (gov.effective, gov.reason, throttle.limit) == (20 * MB, "limit", 20 * MB)  # 05:59:58: the night's 0
    world.second()
    world.second()  # 06:00:00: the day window's 5 MB
    gov.tick()
    assert (gov.effective, gov.reason, throttle.limit) == (5 * MB, "schedule", 5 * MB)
    state = gov.state()
    assert state["window"] == "06:00-22:00" and state["until"] == "2026-12-06T22:00:00Z"
    gov.set_limit(2 * MB)
    gov.apply()
    assert (gov.effective, gov.reason) == (2 * MB, "limit")
    gov.set_limit(0)
    gov.set_schedule(None)
    gov.apply()
    assert (gov.effective, gov.reason, throttle.limit) == (0, None, 0)


def test_a_bad_schedule_changes_nothing() -> None:
    world = World()
    gov = governor(world, Throttle(), DownloadTracker(), schedule="06:00-22:00=5MB")
    with pytest.raises(ScheduleError):
        gov.set_schedule("06:00-22:00=5MB,07:00-08:00=1MB")
    assert gov.schedule_text == "06:00-22:00=5MB"


def test_the_nic_controller_caps_downloads_and_uploads_apart() -> None:
    world, throttle = World(), Throttle()
    nic = Nic("eth9", world.read, NicController(100 * MB, MB))
    gov = governor(world, throttle, DownloadTracker(), limit=80 * MB, nic=nic)
    for _ in range(3):
        world.second(other_rx=60 * MB, own_in=30 * MB)
        gov.tick()
    assert gov.reason == "nic" and gov.effective == pytest.approx(40 * MB, rel=0.05)
    assert throttle.limit == gov.effective and throttle.upload.rate == 100 * MB  # nothing else sends
    nic_state = gov.state()["nic"]
    assert nic_state["active"] and nic_state["other_rx_bps"] == pytest.approx(60 * MB, rel=0.05)


def test_an_interface_that_stops_reading_is_logged_once_and_the_other_caps_stay() -> None:
    world, throttle = World(), Throttle()
    gov = governor(
        world, throttle, DownloadTracker(), limit=80 * MB, nic=Nic("eth9", world.read, NicController(100 * MB, MB))
    )
    for _ in range(3):
        world.second(other_rx=90 * MB)
        gov.tick()
    assert gov.reason == "nic"
    world.broken = True
    with capture_logs() as logs:
        for _ in range(3):
            world.second()
            gov.tick()
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["bandwidth_nic_unreadable"]
    assert (gov.effective, gov.reason, throttle.upload.rate) == (80 * MB, "limit", 0)
    assert gov.state()["nic"] == {"name": "eth9", "active": False, "error": "no interface 'eth9' in /proc/net/dev"}


def test_open_nic_says_why_an_interface_is_not_used() -> None:
    with capture_logs() as logs:
        missing = open_nic("rbee-none0", None, MB)
        lo = open_nic("lo", None, MB)  # loopback names no link speed
    assert missing.controller is None and missing.error and "rbee-none0" in missing.error
    assert lo.controller is None and lo.error and "HIVE_NIC_BUDGET" in lo.error
    assert [e["event"] for e in logs] == ["bandwidth_nic_unreadable", "bandwidth_nic_no_budget"]
    budgeted = open_nic("lo", 50 * MB, MB)
    assert budgeted.controller is not None and budgeted.controller.loopback and budgeted.error is None


def test_running_downloads_are_told_the_cap_they_are_held_to() -> None:
    world, throttle, tracker = World(), Throttle(), DownloadTracker()
    for download_id in ("dl-a", "dl-b", "dl-q"):
        tracker.start_download(download_id, f"hf:org/repo::file={download_id}.bin")
    tracker.set_status("dl-a", DownloadStatus.DOWNLOADING)
    tracker.set_status("dl-b", DownloadStatus.DOWNLOADING)
    throttle.set_download_limit("dl-b", MB)
    gov = governor(world, throttle, tracker, limit=3 * MB)
    caps = {s.download_id: (s.capped_bps, s.cap_reason) for s in tracker.list_all()}
    assert caps == {"dl-a": (3 * MB, "limit"), "dl-b": (MB, "max_bps"), "dl-q": (None, None)}
    assert tracker.get_download("dl-a").to_dict()["capped_bps"] == 3 * MB  # type: ignore[union-attr]
    gov.set_limit(0)
    gov.apply()
    assert tracker.get_download("dl-a").capped_bps is None  # type: ignore[union-attr]
    assert "capped_bps" not in tracker.get_download("dl-a").to_dict()  # type: ignore[union-attr]
