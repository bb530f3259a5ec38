"""HIVE_BANDWIDTH_SCHEDULE: the parser, and which window is in force at a time and until when."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.hive.bandwidth.schedule import DAY, ScheduleError, Window, parse_rate, parse_schedule


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("0", 0),
        ("1500", 1500),
        ("50MB", 50_000_000),
        ("50mb/s", 50_000_000),
        ("50M", 50_000_000),
        ("50MiB", 50 * 2**20),
        ("2.5G", 2_500_000_000),
        ("64KiB/s", 65536),
        (" 1 kB ", 1000),
    ],
)
def test_rates_read_decimal_and_binary_units(text: str, rate: int) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "fast", "-1", "50 XB", "1e6", "50MBps", "2000GB"])
def test_a_bad_rate_is_refused_by_name(text: str) -> None:
    with pytest.raises(ScheduleError, match="rate"):
        parse_rate(text)


def test_the_issue_s_example_reads_as_two_windows_one_wrapping_midnight() -> None:
    schedule = parse_schedule("22:00-06:00=0, 06:00-22:00=50MB")
    assert schedule.windows == (Window(6 * 3600, 22 * 3600, 50_000_000), Window(22 * 3600, 6 * 3600, 0))
    assert schedule.windows[1].wraps and not schedule.windows[0].wraps


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("22:00-06:00", "HH:MM-HH:MM=RATE"),
        ("22:00=5MB", "HH:MM-HH:MM=RATE"),
        ("25:00-06:00=0", "bad time"),
        ("22:60-06:00=0", "bad time"),
        ("24:30-06:00=0", "bad time"),
        ("24:00-06:00=0", "starts at 24:00"),
        ("06:00-06:00=0", "empty"),
        ("22:00-06:00=lots", "bad rate"),
        ("22:00-06:00=0,05:00-07:00=1MB", "overlap"),
        ("00:00-24:00=1MB,12:00-13:00=2MB", "overlap"),
    ],
)
def test_a_bad_schedule_names_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ScheduleError, match=says):
        parse_schedule(text)


def test_in_force_between_windows_and_until_the_next_one() -> None:
    schedule = parse_schedule("09:00-17:00=10MB")
    at = datetime(2026, 12, 6, 8, 30, tzinfo=UTC)
    gap = schedule.at(at)
    assert gap.window is None and gap.rate == 0 and gap.until == datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    inside = schedule.at(datetime(2026, 12, 6, 16, 59, 59, tzinfo=UTC))
    assert inside.rate == 10_000_000 and inside.until == datetime(2026, 12, 6, 17, 0, tzinfo=UTC)
    evening = schedule.at(datetime(2026, 12, 6, 17, 0, tzinfo=UTC))
    assert evening.window is None and evening.until == datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def test_a_whole_day_window_is_in_force_for_ever() -> None:
    in_force = parse_schedule("00:00-24:00=1MB").at(datetime(2026, 1, 1, 3, tzinfo=UTC))
    assert in_force.rate == 1_000_000 and in_force.until is None


def test_abutting_windows_end_at_their_own_boundary() -> None:
    schedule = parse_schedule("22:00-06:00=5MB,06:00-22:00=5MB")
    in_force = schedule.at(datetime(2026, 1, 1, 23, tzinfo=UTC))
    assert in_force.window is not None and in_force.window.text == "22:00-06:00"
    assert in_force.until == datetime(2026, 1, 2, 6, tzinfo=UTC)


def test_the_time_is_read_in_the_zone_it_is_given_in() -> None:
    schedule = parse_schedule("22:00-06:00=0,06:00-22:00=50MB")
    berlin = datetime(2026, 12, 6, 21, 30, tzinfo=UTC).astimezone(ZoneInfo("Europe/Berlin"))  # 22:30 there
    in_force = schedule.at(berlin)
    assert in_force.window is not None and in_force.window.text == "22:00-06:00"
    assert in_force.until is not None and in_force.until.astimezone(UTC) == datetime(2026, 12, 7, 5, tzinfo=UTC)


# -- properties ------------------------------------------------------------------------------

minutes = st.integers(0, 24 * 60 - 1)


@st.composite
def schedules(draw: st.DrawFn) -> str:
    """Non-overlapping windows on a minute grid, some wrapping midnight, as text."""
    cuts = sorted(draw(st.sets(minutes, min_size=2, max_size=8)))
    shift = draw(st.integers(0, 24 * 60 - 1))
    parts = []
    for a, b in itertools.pairwise(cuts):
        if draw(st.booleans()):
            start, end = (a + shift) % 1440, (b + shift) % 1440
            parts.append(
                f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}={draw(st.integers(0, 10**9))}"
            )
    return ",".join(parts)


def _covering(schedule_text: str, secs: float) -> list[Window]:
    return [w for w in parse_schedule(schedule_text).windows if w.covers(secs)]


@given(schedules(), st.integers(0, DAY * 1000 - 1))
def test_at_most_one_window_covers_any_moment(text: str, millis: int) -> None:
    assert len(_covering(text, millis / 1000)) <= 1


@given(schedules())
def test_a_schedule_reads_back_as_itself(text: str) -> None:
    schedule = parse_schedule(text)
    assert parse_schedule(schedule.text) == schedule


@given(schedules(), st.integers(0, 2 * DAY - 1))
def test_what_is_in_force_holds_until_until_and_changes_there(text: str, secs: int) -> None:
    schedule = parse_schedule(text)
    now = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(seconds=secs)
    in_force = schedule.at(now)
    day_secs = secs % DAY
    assert in_force.window == next(iter(_covering(text, day_secs)), None)
    if in_force.until is None:  # nothing ever changes: no windows, or one that is the whole day
        assert not schedule.windows or (in_force.window is not None and in_force.window.spans() == [(0, DAY)])
        return
    assert now < in_force.until <= now + timedelta(days=1)
    for probe in (now, in_force.until - timedelta(seconds=1), now + (in_force.until - now) / 2):
        assert schedule.at(probe).window == in_force.window
    assert schedule.at(in_force.until).window != in_force.window
