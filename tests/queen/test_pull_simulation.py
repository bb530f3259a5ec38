"""The fleet pull on paper (services/queen/pulls/simulate.py): the model's basic invariants, over the
planner's real tree."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.queen.pulls.simulate import CLUSTER, HUB_BOUND, Links, simulate, table

MB = 1_000_000
GiB = 1024**3
MODEL = [2 * GiB] * 8 + [10_000]

links_st = st.builds(
    Links,
    hub_uplink_bps=st.floats(1 * MB, 10_000 * MB),
    hub_path_bps=st.floats(1 * MB, 10_000 * MB),
    nic_bps=st.floats(10 * MB, 10_000 * MB),
    disk_bps=st.floats(10 * MB, 10_000 * MB),
    level_lag_secs=st.floats(0, 2),
)
sizes_st = st.lists(st.integers(1, 4 * GiB), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(links=links_st, sizes=sizes_st)
def test_one_hive_takes_what_it_takes_alone(links: Links, sizes: list[int]) -> None:
    o = simulate(1, sizes, links)
    assert o.fleet_secs == pytest.approx(o.alone_secs) and o.depth == 0
    assert o.hub_bytes == sum(sizes)


@settings(max_examples=60, deadline=None)
@given(links=links_st, sizes=sizes_st, hives=st.integers(2, 40), fan_out=st.integers(2, 6))
def test_a_fleet_takes_each_byte_once_from_the_hub_and_no_less_than_its_links_allow(
    links: Links, sizes: list[int], hives: int, fan_out: int
) -> None:
    o = simulate(hives, sizes, links, fan_out=fan_out)
    total = sum(sizes)
    assert o.hub_bytes == total  # one seeder a blob
    assert o.fleet_secs >= total / min(links.nic_bps, links.disk_bps) * (1 - 1e-9)  # each hive takes it all
    assert o.fleet_secs >= total / links.hub_uplink_bps * (1 - 1e-9)  # the hub sends it once
    assert o.fleet_secs >= max(sizes) / links.hub_path_bps * (1 - 1e-9)  # a blob's seeder has one path
    assert 1 <= o.depth <= math.ceil(math.log(hives, fan_out)) + 1  # a tree of fan-out `fan_out`


@settings(max_examples=30, deadline=None)
@given(links=links_st, sizes=sizes_st, hives=st.integers(2, 30), more=st.floats(0.01, 5))
def test_a_longer_lag_between_levels_is_never_faster(links: Links, sizes: list[int], hives: int, more: float) -> None:
    slower = Links(links.hub_uplink_bps, links.hub_path_bps, links.nic_bps, links.disk_bps, links.level_lag_secs + more)
    assert simulate(hives, sizes, slower).fleet_secs >= simulate(hives, sizes, links).fleet_secs


def test_holders_take_nothing_from_the_hub() -> None:
    o = simulate(50, MODEL, CLUSTER, holders=3)
    assert o.hub_bytes == 0 and o.fleet_secs < o.alone_secs


def test_seeding_twice_doubles_the_hub_bytes() -> None:
    assert simulate(20, MODEL, CLUSTER, hub_fetches_per_blob=2).hub_copies == pytest.approx(2.0)


def test_bad_input_is_refused() -> None:
    for hives, sizes in ((0, MODEL), (3, []), (3, [0])):
        with pytest.raises(ValueError):
            simulate(hives, sizes, CLUSTER)


def test_the_chosen_fan_out_keeps_a_thousand_hives_within_twice_one_hive_alone() -> None:
    """The README's table: FAN_OUT 2 is the fastest at 100 and 1,000 hives on the cluster's links,
    and every count stays within 2x one hive alone, under a hub that is the bottleneck too."""
    rows = table(CLUSTER, MODEL)
    for n in (100, 1000):
        by_fan_out = {f: o.fleet_secs for m, f, o in rows if m == n}
        assert min(by_fan_out, key=by_fan_out.__getitem__) == 2
    for links in (CLUSTER, HUB_BOUND):
        assert all(o.ratio <= 2.0 and o.hub_copies == 1.0 for _, f, o in table(links, MODEL, fan_outs=(2,)))
