"""PaceWatch: when a peer is too slow to keep (pure; the hive against a trickling peer is in
tests/hive/peers/test_hostile_peers.py)."""

from __future__ import annotations

from services.hive.transfer.pace import PaceWatch


def test_a_fast_source_is_kept() -> None:
    watch = PaceWatch(min_bps=1000, window=1.0)
    assert not any(watch.observe(t / 10, t * 500) for t in range(100))  # 5000 bytes/s for 10 s


def test_a_trickle_is_dropped_once_a_window_closes_under_the_floor() -> None:
    watch = PaceWatch(min_bps=1000, window=1.0)
    assert not watch.observe(0.0, 0)  # the first byte opens the window
    assert not watch.observe(0.5, 10)  # (the window is still open)
    assert watch.observe(1.0, 20)


def test_the_time_between_attempts_counts_against_the_source() -> None:
    """A peer that sends a burst, then makes the hive reconnect: the pause is the source's too."""
    watch = PaceWatch(min_bps=1000, window=1.0)
    assert not watch.observe(0.0, 0)
    assert not watch.observe(0.1, 900)  # a burst...
    assert watch.observe(5.0, 901)  # ...then a byte on the next connection, 5 s later


def test_a_source_that_slows_down_later_is_caught_by_a_later_window() -> None:
    watch = PaceWatch(min_bps=1000, window=1.0)
    assert not watch.observe(0.0, 0)
    assert not watch.observe(1.0, 2000)
    assert not watch.observe(2.0, 4000)
    assert watch.observe(3.0, 4100)


def test_time_this_hive_held_the_transfer_back_is_not_the_source_s() -> None:
    watch = PaceWatch(min_bps=1000, window=1.0)
    assert not watch.observe(0.0, 0)
    watch.held(9.5)  # this hive's bandwidth limit kept the bytes waiting
    assert not watch.observe(10.0, 600)  # 600 bytes in the 0.5 s that were the source's: open still
    assert not watch.observe(10.6, 1500)  # 1500 bytes in 1.1 s of its own: fast enough
