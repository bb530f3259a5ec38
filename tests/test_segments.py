"""SegmentPlan: chunking, taking, the contiguous frontier and the saved form."""

from __future__ import annotations

from services.hive.segments import Chunk, SegmentPlan, chunk_size

MiB = 1024 * 1024


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
