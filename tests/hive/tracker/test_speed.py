"""DownloadTracker's EMA speed, ETA and percent."""

from __future__ import annotations

import pytest

from services.hive.tracker.speed import SpeedMeter, eta_secs
from services.hive.tracker.tracker import DownloadTracker
from shared.models import DownloadStatus
from tests.hive.tracker.support import DL, INTERVAL, REF, TERMINAL, FakeClock, Recorder, S, drive_to, finish

# -- speed, ETA, percent -----------------------------------------------------------------------


def test_speed_is_an_ema_over_whole_intervals(tracker: DownloadTracker, clock: FakeClock, rec: Recorder) -> None:
    total = 10_000
    drive_to(tracker, DL, S.DOWNLOADING, total=total)  # meter starts at t=0 with 0 bytes
    expected = [
        # (t, bytes, speed_bps, eta_secs, percent)
        # first measured interval seeds the average: 1000 B / 0.5 s = 2000 B/s; ceil(9000/2000) = 5
        (0.5, 1000, 2000, 5, 10.0),
        # instant 1500/0.5 = 3000 -> 0.3*3000 + 0.7*2000 = 2300; ceil(7500/2300) = ceil(3.26) = 4
        (1.0, 2500, 2300, 4, 25.0),
        # (t=1.25: 2600 B, inside the interval, not measured) instant 200/0.5 = 400
        # -> 0.3*400 + 0.7*2300 = 1730; ceil(7300/1730) = ceil(4.22) = 5
        (1.5, 2700, 1730, 5, 27.0),
        # instant 3300/0.5 = 6600 -> 0.3*6600 + 0.7*1730 = 3191; ceil(4000/3191) = 2
        (2.0, 6000, 3191, 2, 60.0),
        # a 2 s gap: instant 3000/2 = 1500 -> 0.3*1500 + 0.7*3191 = 2683.7 -> 2684; ceil(1000/2683.7) = 1
        (4.0, 9000, 2684, 1, 90.0),
    ]
    got = []
    for t, nbytes, *_ in expected:
        if t == 1.5:
            clock.now = 1.25
            tracker.update_progress(DL, 2600)
        clock.now = t
        tracker.update_progress(DL, nbytes)
        d = rec.last.data
        got.append((t, d["bytes"], d["speed_bps"], d["eta_secs"], d["percent"]))
    assert got == expected
    assert all(type(row[2]) is int for row in got)
    state = tracker.get_download(DL)
    assert state is not None and (state.speed_bps, state.eta_secs) == (2684, 1)


@pytest.mark.parametrize("alpha", [0.3, 0.5, 1.0])
def test_tracker_alpha_is_used(clock: FakeClock, alpha: float) -> None:
    tracker = DownloadTracker(progress_interval=1.0, alpha=alpha, clock=clock)
    rec = Recorder(tracker)
    drive_to(tracker, DL, S.DOWNLOADING, total=None)
    clock.now = 1.0
    tracker.update_progress(DL, 1000)  # seed: 1000
    clock.now = 2.0
    tracker.update_progress(DL, 3000)  # instant 2000
    assert rec.last.data["speed_bps"] == round(alpha * 2000 + (1 - alpha) * 1000)
    assert rec.last.data["eta_secs"] is None  # unknown total: no ETA
    assert rec.last.data["percent"] is None


def test_speed_is_measured_from_when_downloading_began(
    tracker: DownloadTracker, clock: FakeClock, rec: Recorder
) -> None:
    tracker.start_download(DL, REF, 100_000)
    clock.now = 5.0  # time spent queued does not count
    tracker.set_status(DL, S.DOWNLOADING)
    clock.now = 5.5
    tracker.update_progress(DL, 4000)
    assert rec.last.data["speed_bps"] == 8000
    assert rec.last.data["eta_secs"] == 12  # ceil(96000/8000) = 12 exactly


@pytest.mark.parametrize("status", TERMINAL)
def test_speed_and_eta_reset_at_the_end(
    tracker: DownloadTracker, clock: FakeClock, rec: Recorder, status: DownloadStatus
) -> None:
    drive_to(tracker, DL, S.DOWNLOADING, total=10_000)
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 1000)
    state = tracker.get_download(DL)
    assert state is not None and state.speed_bps == 2000 and state.eta_secs == 5
    finish(tracker, DL, status)
    state = tracker.get_download(DL)
    assert state is not None
    assert (state.speed_bps, state.eta_secs) == (0, None)
    assert state.to_dict()["speed_bps"] == 0 and state.to_dict()["eta_secs"] is None


def test_percent_is_rounded_to_two_decimals(tracker: DownloadTracker, clock: FakeClock, rec: Recorder) -> None:
    drive_to(tracker, DL, S.DOWNLOADING, total=3)
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 1)
    assert rec.last.data["percent"] == 33.33
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 2)
    assert rec.last.data["percent"] == 66.67


def test_total_learned_later_shows_up_in_the_next_event(
    tracker: DownloadTracker, clock: FakeClock, rec: Recorder
) -> None:
    drive_to(tracker, DL, S.DOWNLOADING, total=None)
    tracker.set_total(DL, 8000)
    clock.advance(INTERVAL)
    tracker.update_progress(DL, 2000)
    assert rec.last.data["total"] == 8000
    assert rec.last.data["percent"] == 25.0
    assert rec.last.data["eta_secs"] == 2  # 4000 B/s, 6000 B left -> 1.5 -> 2


def test_speed_meter_seeding_and_ema() -> None:
    meter = SpeedMeter(alpha=0.3)
    assert meter.sample(10.0, 0) == 0.0  # first sample only marks the start
    assert meter.sample(11.0, 1000) == 1000.0  # first interval seeds
    assert meter.sample(11.0, 5000) == 1000.0  # no time passed: unchanged
    assert meter.sample(12.0, 5000) == pytest.approx(0.3 * 4000 + 0.7 * 1000)  # 1900
    assert meter.sample(13.0, 4000) == pytest.approx(0.7 * 1900)  # bytes going down count as 0
    meter.reset(20.0, 0)
    assert meter.sample(22.0, 1000) == pytest.approx(0.3 * 500 + 0.7 * 1330)


@pytest.mark.parametrize(
    ("remaining", "speed", "expected"),
    [
        (1000, 500.0, 2),
        (1001, 500.0, 3),
        (1, 1_000_000.0, 1),
        (0, 10.0, 0),
        (-5, 10.0, 0),
        (9000, 2000.0, 5),
        (None, 100.0, None),
        (100, 0.0, None),
        (100, -1.0, None),
    ],
)
def test_eta_is_the_ceiling_of_remaining_over_speed(remaining: int | None, speed: float, expected: int | None) -> None:
    assert eta_secs(remaining, speed) == expected
