"""Token buckets on a fake clock, and the hive-wide plus per-download Throttle."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.hive.transfer.throttle import Throttle, TokenBucket

KiB = 1024


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_unlimited_bucket_never_waits() -> None:
    bucket = TokenBucket(0, clock=Clock())
    assert bucket.take(10**12) == 0.0
    assert bucket.debt_wait() == 0.0


def test_a_bucket_starts_empty_and_its_debt_is_paid_off_at_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(1000 * KiB, clock=clock)
    assert bucket.take(500 * KiB) == pytest.approx(0.5)
    clock.now += 0.2
    assert bucket.debt_wait() == pytest.approx(0.3)
    clock.now += 0.3
    assert bucket.debt_wait() == 0.0


def test_idle_time_saves_up_at_most_one_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(1000 * KiB, burst_secs=0.2, clock=clock)
    clock.now += 60.0  # a long idle spell
    assert bucket.take(200 * KiB) == 0.0  # the burst (0.2 s of rate) is there...
    assert bucket.take(100 * KiB) == pytest.approx(0.1)  # ...and no more


def test_a_small_rate_still_allows_a_64_kib_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(KiB, clock=clock)
    clock.now += 3600.0
    assert bucket.take(64 * KiB) == 0.0
    assert bucket.take(KiB) == pytest.approx(1.0)


def test_a_lower_rate_drops_saved_tokens_beyond_its_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(10_000 * KiB, burst_secs=0.2, clock=clock)
    clock.now += 1.0
    bucket.set_rate(1000 * KiB)
    assert bucket.take(200 * KiB) == 0.0
    assert bucket.take(1000 * KiB) == pytest.approx(1.0)
    bucket.set_rate(0)
    assert bucket.take(10**9) == 0.0


def test_throttle_is_active_for_a_hive_limit_or_a_download_limit() -> None:
    throttle = Throttle()
    assert throttle.limit == 0 and not throttle.active("dl-a")
    throttle.set_download_limit("dl-a", 5 * KiB)
    assert throttle.active("dl-a") and not throttle.active("dl-b")
    throttle.forget("dl-a")
    assert not throttle.active("dl-a")
    throttle.set_download_limit("dl-a", 5 * KiB)
    throttle.set_download_limit("dl-a", None)  # no limit any more
    assert not throttle.active("dl-a")
    throttle.set_limit(10 * KiB)
    assert throttle.limit == 10 * KiB and throttle.active("dl-a") and throttle.active("dl-b")


def test_consume_waits_for_the_downloads_own_limit_only() -> None:
    throttle = Throttle()
    throttle.set_download_limit("dl-a", 1000 * KiB)

    async def go() -> tuple[float, float]:
        started = time.monotonic()
        await throttle.consume("dl-a", 200 * KiB)  # an empty bucket: 0.2 s of debt
        own = time.monotonic() - started
        started = time.monotonic()
        await throttle.consume("dl-b", 10**9)  # no limit of its own, none hive-wide
        return own, time.monotonic() - started

    own, other = asyncio.run(go())
    assert own >= 0.15
    assert other < own


def test_a_raised_rate_reaches_a_consumer_already_waiting_within_a_wait_slice() -> None:
    bucket = TokenBucket(10 * KiB)

    async def go() -> float:
        waiting = asyncio.create_task(bucket.consume(1000 * KiB))  # ~100 s of debt at 10 KiB/s
        await asyncio.sleep(0.3)
        assert not waiting.done()
        raised = time.monotonic()
        bucket.set_rate(100_000 * KiB)  # the governor's change: the debt is paid in 10 ms now
        await asyncio.wait_for(waiting, timeout=5)
        return time.monotonic() - raised

    assert asyncio.run(go()) < 1.0  # one wait slice (0.2 s) plus a loaded machine's slack


def test_peer_uploads_have_their_own_bucket_that_counts_what_was_sent() -> None:
    throttle = Throttle(5 * KiB)
    assert throttle.upload.rate == 0  # downloads' limit is not the uploads'
    asyncio.run(throttle.upload.consume(3 * KiB))
    asyncio.run(throttle.upload.consume(KiB))
    assert throttle.upload.taken == 4 * KiB
