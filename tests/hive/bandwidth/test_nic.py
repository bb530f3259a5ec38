"""The NIC controller's math, fed counter samples; the readers of /proc/net/dev and /sys/class/net."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.hive.bandwidth.nic import Counters, NicController, NicError, link_speed, read_counters

MB = 1_000_000


class Feed:
    """Counters that move at given rates per second, fed to a controller one tick at a time."""

    def __init__(self, controller: NicController) -> None:
        self.controller = controller
        self.t, self.rx, self.tx, self.own_in, self.own_out = 0.0, 10**9, 10**9, 0, 0
        controller.sample(self.counters())

    def counters(self) -> Counters:
        return Counters(self.t, self.rx, self.tx, self.own_in, self.own_out)

    def tick(self, other_rx: float, other_tx: float, own_in: float = 0, own_out: float = 0, dt: float = 1.0) -> None:
        self.t += dt
        self.own_in += int(own_in * dt)
        self.own_out += int(own_out * dt)
        self.rx += int((other_rx + own_in) * dt)
        self.tx += int((other_tx + own_out) * dt)
        if self.controller.loopback:  # every byte on lo is received and sent
            self.rx += int(own_out * dt)
            self.tx += int(own_in * dt)
        self.controller.sample(self.counters())


def test_with_no_other_traffic_the_hive_has_the_whole_budget() -> None:
    feed = Feed(NicController(100 * MB, MB))
    for _ in range(5):
        feed.tick(0, 0, own_in=100 * MB, own_out=100 * MB)  # its own traffic is not "other"
    caps = feed.controller.caps
    assert (caps.download, caps.upload) == (100 * MB, 100 * MB) and caps.other_rx == caps.other_tx == 0


def test_other_traffic_takes_its_room_within_two_seconds_and_each_direction_apart() -> None:
    feed = Feed(NicController(100 * MB, MB))
    feed.tick(60 * MB, 0, own_in=100 * MB)
    feed.tick(60 * MB, 0, own_in=40 * MB)
    caps = feed.controller.caps
    assert caps.download == pytest.approx(40 * MB, rel=0.05)  # budget - other, within 5% after 2 s
    assert caps.upload == 100 * MB  # nothing else sends


def test_never_below_the_floor() -> None:
    feed = Feed(NicController(100 * MB, 5 * MB))
    for _ in range(5):
        feed.tick(500 * MB, 500 * MB)
    assert (feed.controller.caps.download, feed.controller.caps.upload) == (5 * MB, 5 * MB)


def test_a_freed_budget_is_taken_back_gradually_then_fully() -> None:
    controller = NicController(100 * MB, MB, rise_per_sec=25 * MB)
    feed = Feed(controller)
    for _ in range(4):
        feed.tick(90 * MB, 0)
    low = controller.caps.download
    assert low < 15 * MB
    ups = []
    for _ in range(15):
        feed.tick(0, 0)
        ups.append(controller.caps.download)
    steps = [b - a for a, b in zip([low, *ups], ups, strict=False)]
    assert all(0 <= s <= 25 * MB for s in steps)  # up by a bounded step a second, never down
    assert ups[-1] == pytest.approx(100 * MB, rel=0.001)


def test_on_loopback_the_hive_s_own_bytes_come_off_both_directions() -> None:
    feed = Feed(NicController(100 * MB, MB, loopback=True))
    for _ in range(5):
        feed.tick(20 * MB, 20 * MB, own_in=50 * MB, own_out=10 * MB)
    caps = feed.controller.caps
    assert caps.other_rx == pytest.approx(20 * MB, rel=0.02) and caps.other_tx == pytest.approx(20 * MB, rel=0.02)


def test_counters_that_go_backwards_are_skipped() -> None:
    controller = NicController(100 * MB, MB)
    controller.sample(Counters(0.0, 5 * MB, 5 * MB, 0, 0))
    before = controller.caps
    assert controller.sample(Counters(1.0, 0, 0, 0, 0)) == before  # the interface was reset
    assert controller.sample(Counters(1.0, 9 * MB, 9 * MB, 0, 0)) == before  # no time passed
    controller.sample(Counters(2.0, 90 * MB, 9 * MB, 0, 0))
    assert controller.caps.download < 100 * MB  # and it goes on from the new readings


@given(st.lists(st.tuples(st.floats(0, 10**9), st.floats(0, 10**9), st.floats(0.05, 3)), min_size=1, max_size=40))
def test_caps_stay_between_the_floor_and_the_budget(ticks: list[tuple[float, float, float]]) -> None:
    feed = Feed(NicController(100 * MB, 2 * MB))
    for other_rx, other_tx, dt in ticks:
        feed.tick(other_rx, other_tx, dt=dt)
        caps = feed.controller.caps
        assert 2 * MB <= caps.download <= 100 * MB and 2 * MB <= caps.upload <= 100 * MB


@given(st.floats(0, 99 * MB), st.integers(3, 20))
def test_steady_other_traffic_settles_at_the_budget_less_it(other: float, seconds: int) -> None:
    feed = Feed(NicController(100 * MB, MB))
    for _ in range(seconds):
        feed.tick(other, 0)
    # steady state: the hive's cap plus the other traffic is the budget (within 10%), or the floor
    assert feed.controller.caps.download == pytest.approx(max(MB, 100 * MB - other), abs=10 * MB)


PROC = """Inter-|   Receive                                       |  Transmit
 face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed
    lo: 1234567 100 0 0 0 0 0 0  7654321 100 0 0 0 0 0 0
  eth0:99 1 0 0 0 0 0 0 42 1 0 0 0 0 0 0
"""


def test_read_counters_of_an_interface(tmp_path: Path) -> None:
    proc = tmp_path / "dev"
    proc.write_text(PROC)
    assert read_counters("lo", proc) == (1234567, 7654321)
    assert read_counters("eth0", proc) == (99, 42)  # (no space after the colon)
    with pytest.raises(NicError, match="no interface 'wlan0'"):
        read_counters("wlan0", proc)
    with pytest.raises(NicError, match="cannot read"):
        read_counters("lo", tmp_path / "missing")


def test_the_real_loopback_counters_can_be_read() -> None:
    rx, tx = read_counters("lo")
    assert rx >= 0 and tx >= 0


def test_link_speed_is_mbit_turned_to_bytes(tmp_path: Path) -> None:
    for nic, text in (("eth0", "10000\n"), ("down0", "-1\n"), ("odd0", "fast")):
        (tmp_path / nic).mkdir()
        (tmp_path / nic / "speed").write_text(text)
    assert link_speed("eth0", tmp_path) == 1_250_000_000  # 10 Gb/s
    assert link_speed("down0", tmp_path) is None and link_speed("odd0", tmp_path) is None
    assert link_speed("none0", tmp_path) is None
