"""SegmentPlan: chunking, taking, the contiguous frontier and the saved form."""

from __future__ import annotations

from services.hive.transfer.segments import Chunk, SegmentPlan, SplitWatch, chunk_size

KiB = 1024
MiB = 1024 * KiB


def test_chunk_size_bounds() -> None:
    assert chunk_size(1024 * MiB, 4) == 64 * MiB
    assert chunk_size(10 * MiB, 8) == 8 * MiB  # never below the minimum
    assert chunk_size(100_000 * MiB, 2) == 128 * MiB  # nor above the maximum


def test_plan_covers_file_after_probe_byte() -> None:
    plan = SegmentPlan.plan(10 * MiB + 5, 1, 4 * MiB)
    assert plan.chunks[0] == Chunk(0, 1, 1)
    assert [(c.start, c.end) for c in plan.chunks[1:]] == [
        (1, 4 * MiB + 1),
        (4 * MiB + 1, 8 * MiB + 1),
        (8 * MiB + 1, 10 * MiB + 5),
    ]
    assert plan.written() == 1 and plan.frontier() == 1 and not plan.done


def test_take_release_and_frontier() -> None:
    plan = SegmentPlan.plan(300, 0, 100)
    a, b, c = plan.take(), plan.take(), plan.take()
    assert a is not None and b is not None and c is not None and plan.take() is None
    b.written = 200  # the second chunk finishes first
    assert plan.frontier() == 0
    a.written = 50
    assert plan.frontier() == 50
    a.written = 100
    assert plan.frontier() == 200
    plan.release(c)
    assert plan.take() is c
    c.written = 300
    assert plan.done and plan.frontier() == 300 and plan.written() == 300


def test_saved_plan_round_trip_and_rejects_nonsense() -> None:
    plan = SegmentPlan.plan(300, 0, 100)
    plan.chunks[1].written = 150
    again = SegmentPlan.from_json(plan.to_json())
    assert again is not None and [(c.start, c.end, c.written) for c in again.chunks] == [
        (0, 100, 0),
        (100, 200, 150),
        (200, 300, 200),
    ]
    assert SegmentPlan.from_json("not json") is None
    assert SegmentPlan.from_json('{"total": 300, "chunks": [[0, 100, 0], [150, 300, 150]]}') is None  # gap
    assert SegmentPlan.from_json('{"total": 300, "chunks": [[0, 100, 120], [100, 300, 100]]}') is None  # overrun
    assert SegmentPlan.from_json('{"total": 400, "chunks": [[0, 300, 0]]}') is None  # short


def test_split_watch_fast_connection_never_splits() -> None:
    watch = SplitWatch(below_bps=100 * MiB, window=0.1)
    received = 0
    for step in range(100):  # 1 s at 200 MiB/s, observed every 10 ms
        received += 2 * MiB
        assert not watch.observe(step * 0.01, received, lambda: 0.0)


def test_split_watch_slow_connection_splits_after_one_window() -> None:
    watch = SplitWatch(below_bps=100 * MiB, window=0.1)
    assert not watch.observe(5.0, 256 * KiB, lambda: 0.0)  # the first read opens the window (connecting ignored)
    assert not watch.observe(5.05, 1 * MiB, lambda: 0.0)  # too soon to judge
    assert watch.observe(5.125, 2 * MiB, lambda: 0.0)  # 1.75 MiB in 0.125 s = 14 MiB/s


def test_split_watch_catches_a_connection_that_slows_down_later() -> None:
    watch = SplitWatch(below_bps=100 * MiB, window=0.1)
    received, now = 0, 0.0
    for _ in range(50):  # fast for 1 s
        now += 0.02
        received += 4 * MiB
        assert not watch.observe(now, received, lambda: 0.0)
    verdicts = []
    for _ in range(10):  # then 10 MiB/s
        now += 0.02
        received += 200 * KiB
        verdicts.append(watch.observe(now, received, lambda: 0.0))
    assert any(verdicts) and not verdicts[0]


def test_split_watch_paced_and_bursty_servers_split() -> None:
    """Evenly paced small writes, or a burst then big writes now and then (nginx limit_rate): both slow."""
    paced, bursty = SplitWatch(below_bps=100 * MiB), SplitWatch(below_bps=200_000_000)
    received, verdicts = 0, []
    for step in range(10):  # 52 KiB every 50 ms
        received += 52 * KiB
        verdicts.append(paced.observe(step * 0.05, received, lambda: 0.0))
    assert verdicts.index(True) == 2
    assert not bursty.observe(0.0, 64 * KiB, lambda: 0.0)
    assert not bursty.observe(0.001, 3 * MiB, lambda: 0.0)  # the first write is unthrottled
    assert bursty.observe(0.1, 5 * MiB, lambda: 0.0)  # then 2 MiB in one big read: 20 MiB/s


def test_split_watch_does_not_split_while_the_hive_is_busy() -> None:
    """Slow small reads, but the hive used most of a core: it is CPU-bound, more connections won't help."""
    watch = SplitWatch(below_bps=100 * MiB, window=0.1, busy_cores=0.5)
    received, now, cpu = 0, 0.0, 0.0
    for _ in range(50):
        now += 0.02
        cpu += 0.015  # 0.75 cores
        received += 64 * KiB
        assert not watch.observe(now, received, lambda c=cpu: c)
    for _ in range(10):  # the other downloads end: the same connection now splits
        now += 0.02
        cpu += 0.001
        received += 64 * KiB
        if watch.observe(now, received, lambda c=cpu: c):
            return
    raise AssertionError("an idle hive with a slow connection did not split")
