"""The one backoff: growth to a cap, each caller's jitter, reset, and no overflow after hours."""

from __future__ import annotations

import pytest

from shared.backoff import Backoff


def test_delays_double_to_the_cap_and_reset_starts_over() -> None:
    backoff = Backoff(0.25, 2.0, jitter=0.0)
    assert [backoff.next() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    backoff.reset()
    assert backoff.next() == 0.25


def test_delay_of_an_attempt_needs_no_state() -> None:
    backoff = Backoff(0.5, 30.0, jitter=0.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 7, 8)] == [0.5, 1.0, 2.0, 30.0, 30.0]
    assert backoff.next() == 0.5  # delay() did not advance it


@pytest.mark.parametrize(("draw", "expected"), [(0.0, 0.5), (0.5, 0.75), (1.0, 1.0)])
def test_spread_scales_the_delay_uniformly_between_its_ends(draw: float, expected: float) -> None:
    assert Backoff(1.0, 1.0, spread=(0.5, 1.0), rng=lambda: draw).delay(1) == pytest.approx(expected)


@pytest.mark.parametrize(("draw", "expected"), [(0.0, 0.9), (1.0, 1.1)])
def test_jitter_is_proportional_noise_either_side(draw: float, expected: float) -> None:
    assert Backoff(1.0, 1.0, jitter=0.1, rng=lambda: draw).next() == pytest.approx(expected)


def test_a_maximum_below_the_initial_delay_keeps_the_initial_delay() -> None:
    backoff = Backoff(3.0, 1.0, jitter=0.0)
    assert [backoff.next() for _ in range(3)] == [3.0, 3.0, 3.0]


def test_thousands_of_attempts_stay_at_the_cap() -> None:
    backoff = Backoff(1.0, 10.0, jitter=0.0)
    assert backoff.delay(5000) == 10.0
    assert Backoff(0.0, 10.0, jitter=0.0).delay(5000) == 0.0
