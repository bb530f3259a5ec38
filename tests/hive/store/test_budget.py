"""The disk budget's arithmetic and the choice of what to evict (services/hive/store/budget.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.hive.store.budget import Candidate, budget_bytes, bytes_to_free, check_budget, choose_evictions, room_for

GiB = 1024**3


def test_a_budget_is_bytes_a_percentage_of_the_filesystem_or_none() -> None:
    assert budget_bytes("0", 100 * GiB) is None
    assert budget_bytes("0%", 100 * GiB) is None
    assert budget_bytes("123456", 100 * GiB) == 123456
    assert budget_bytes("80%", 100 * GiB) == 80 * GiB
    assert budget_bytes(" 50% ", 1001) == 500


@pytest.mark.parametrize("spec", ["", "-1", "1.5", "80 %", "101%", "10GB", "%", "1e9", "0x10"])
def test_a_malformed_budget_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="percentage"):
        check_budget(spec)


def test_what_must_be_freed_counts_the_budget_the_free_disk_and_the_reservations() -> None:
    # fits: nothing to free
    assert bytes_to_free(needed=10, used=50, free=1000, reserved=0, budget=100, min_free=0) == 0
    # over the budget by 10
    assert bytes_to_free(needed=60, used=50, free=1000, reserved=0, budget=100, min_free=0) == 10
    # the reservation of a running download counts against the budget and the free disk alike
    assert bytes_to_free(needed=10, used=50, free=1000, reserved=45, budget=100, min_free=0) == 5
    assert bytes_to_free(needed=10, used=50, free=100, reserved=45, budget=None, min_free=50) == 5
    # no budget: only the free disk, less HIVE_MIN_FREE_BYTES
    assert bytes_to_free(needed=600, used=10**9, free=1000, reserved=0, budget=None, min_free=500) == 100


def test_the_least_recently_used_go_first_and_no_more_than_needed() -> None:
    models = [
        Candidate("c", 30, last_used=300.0),
        Candidate("a", 30, last_used=100.0),
        Candidate("b", 30, last_used=200.0),
    ]
    assert [c.repo_id for c in choose_evictions(models, 40) or []] == ["a", "b"]
    assert [c.repo_id for c in choose_evictions(models, 30) or []] == ["a"]
    assert choose_evictions(models, 0) == []


def test_pinned_in_use_and_the_downloading_model_never_go() -> None:
    models = [
        Candidate("old-pinned", 100, last_used=1.0, pinned=True),
        Candidate("old-busy", 100, last_used=2.0, in_use=True),
        Candidate("mine", 100, last_used=3.0),
        Candidate("young", 100, last_used=4.0),
    ]
    assert [c.repo_id for c in choose_evictions(models, 50, keep="mine") or []] == ["young"]
    # what may go is not enough: nothing goes
    assert choose_evictions(models, 150, keep="mine") is None


candidates = st.lists(
    st.builds(
        Candidate,
        repo_id=st.text("abcdef", min_size=1, max_size=4),
        size=st.integers(0, 1000),
        last_used=st.floats(0, 1e6),
        pinned=st.booleans(),
        in_use=st.booleans(),
    ),
    max_size=12,
    unique_by=lambda c: c.repo_id,
)


@given(candidates, st.integers(-10, 5000), st.one_of(st.none(), st.text("abcdef", min_size=1, max_size=4)))
def test_a_choice_frees_enough_from_the_evictable_in_lru_order_or_is_none(
    models: list[Candidate], to_free: int, keep: str | None
) -> None:
    chosen = choose_evictions(models, to_free, keep)
    evictable = [c for c in models if not c.pinned and not c.in_use and c.repo_id != keep]
    if to_free <= 0:
        assert chosen == []
    elif chosen is None:
        assert sum(c.size for c in evictable) < to_free
    else:
        assert all(c in evictable for c in chosen)
        assert sum(c.size for c in chosen) >= to_free
        assert sum(c.size for c in chosen[:-1]) < to_free  # the last one was needed
        order = sorted((c for c in evictable if c.size > 0), key=lambda c: (c.last_used, c.repo_id))
        assert chosen == order[: len(chosen)]  # a prefix of the LRU order


sizes = st.integers(0, 10**6)


@given(sizes, sizes, sizes, st.one_of(st.none(), sizes), sizes, sizes)
def test_the_room_a_plan_reports_is_the_most_a_download_gets_by_evicting_what_may_go(
    used: int, free: int, reserved: int, budget: int | None, min_free: int, evictable: int
) -> None:
    room = room_for(used, free, reserved, budget, min_free, evictable)
    assert room >= 0
    if room > 0:
        assert bytes_to_free(room, used, free, reserved, budget, min_free) <= evictable
    assert bytes_to_free(room + 1, used, free, reserved, budget, min_free) > evictable
