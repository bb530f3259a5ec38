"""The bandwidth scenario's arithmetic (bench/scenarios/bandwidth.py): rates over windows of lo's
counter samples, and the settle time, on made-up samples."""

from __future__ import annotations

import pytest

from bench.scenarios.bandwidth import in_band_share, mean_rate, settle_time, window_rates

MB = 1_000_000


def samples(rates: list[tuple[float, float]], step: float = 0.05) -> list[tuple[float, int]]:
    """Counter samples every `step` s, the count growing at each (until, bytes/s) in turn."""
    out, t, count = [(0.0, 0)], 0.0, 0.0
    for until, rate in rates:
        while t + step <= until + 1e-9:
            t += step
            count += rate * step
            out.append((round(t, 6), int(count)))
    return out


def test_window_rates_are_the_counter_s_slope() -> None:
    rates = window_rates(samples([(2.0, 10 * MB)]))
    assert rates and all(r == pytest.approx(10 * MB, rel=0.01) for _, r in rates)
    assert rates[0][0] == 0.0


def test_settle_time_is_when_the_total_first_enters_the_band() -> None:
    # the budget's 50 MB/s, then 80 MB/s for 1.5 s after the flow starts at t=3, then back in the band
    trace = samples([(3.0, 50 * MB), (4.5, 80 * MB), (10.0, 52 * MB)])
    settled = settle_time(trace, 3.0, 50 * MB)
    assert settled is not None and 1.2 <= settled <= 1.55  # (a window a little into the excess is in the band)
    assert in_band_share(trace, 3.0 + settled, 10.0, 50 * MB) == 1.0
    assert mean_rate(trace, 5.0, 10.0) == pytest.approx(52 * MB, rel=0.01)


def test_windows_out_of_the_band_count_against_the_share() -> None:
    trace = samples([(3.0, 50 * MB), *((3.0 + i, (80 if i % 2 else 50) * MB) for i in range(1, 8))])
    share = in_band_share(trace, 3.0, 10.0, 50 * MB)
    assert share is not None and 0.05 < share < 0.5
    assert settle_time(samples([(3.0, 50 * MB)]), 3.0, 50 * MB) is None  # nothing after the start
    assert settle_time(samples([(3.0, 50 * MB), (9.0, 80 * MB)]), 3.0, 50 * MB) is None  # never in the band
