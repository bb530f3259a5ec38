"""The hive's one HubQuota: what the hub's RateLimit headers leave of a window, and when to wait."""

from __future__ import annotations

import pytest

from services.hive.net.errors import RateLimited
from services.hive.net.quota import HubQuota, bucket_of

HUB = "https://hub.example"
RESOLVE = f"{HUB}/org/m/resolve/main/w.bin"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def said(r: int, t: int, q: int | None = 8, resource: str = "resolvers") -> dict[str, str]:
    headers = {"ratelimit": f'"{resource}";r={r};t={t}'}
    if q is not None:
        headers["ratelimit-policy"] = f'"fixed window";"{resource}";q={q};w=3'
    return headers


def held_back(quota: HubQuota) -> RateLimited:
    """What the quota says instead of admitting a resolve."""
    with pytest.raises(RateLimited) as refused:
        quota.admit(RESOLVE)
    return refused.value


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_buckets() -> None:
    assert bucket_of(RESOLVE) == "resolvers"
    # a small file's resolve-cache hop is on the API's path: the resolve that led there was counted
    assert bucket_of(f"{HUB}/api/resolve-cache/models/org/m/{'0' * 40}/config.json") == "api"
    assert bucket_of(f"{HUB}/api/models/org/m/revision/main") == "api"
    assert bucket_of(f"{HUB}/org/m") == "pages"


def test_a_bucket_the_hub_said_nothing_of_is_never_held_back(clock: Clock) -> None:
    quota = HubQuota(clock)
    for _ in range(10_000):
        quota.admit(RESOLVE)
    quota.heard({"content-type": "text/plain"})
    quota.admit(RESOLVE)


def test_what_is_left_is_counted_down_and_then_waited_out_with_slack(clock: Clock) -> None:
    quota = HubQuota(clock, slack=1.0)
    quota.heard(said(r=2, t=3))
    quota.admit(RESOLVE)
    quota.admit(RESOLVE)
    clock.now += 0.5
    limited = held_back(quota)
    assert limited.wait == pytest.approx(3.5)  # t from when it was read, + 1 s for t's rounding
    assert str(limited) == "rate limited by the hub (resolvers), r=0"
    quota.admit(f"{HUB}/api/models/org/m/revision/main")  # another bucket: not held back
    clock.now += 3.5
    for _ in range(8):  # the window ended: the policy's q again, for its w
        quota.admit(RESOLVE)
    assert held_back(quota).wait == pytest.approx(3.0)


def test_the_least_the_hub_said_in_a_window_counts_and_its_latest_end(clock: Clock) -> None:
    """Answers overtake each other, and another hive behind the same address spends the window too."""
    quota = HubQuota(clock, slack=0.0)
    quota.heard(said(r=5, t=2))
    quota.heard(said(r=7, t=3))  # an older answer, read late: not more left
    quota.heard(said(r=1, t=2))  # another hive took 4
    quota.admit(RESOLVE)
    assert held_back(quota).wait == pytest.approx(2.0)


def test_the_hubs_word_overrules_the_window_it_was_expected_to_be(clock: Clock) -> None:
    """After a window the next is taken to be full for the policy's w; a 429 then says otherwise."""
    quota = HubQuota(clock, slack=1.0)
    quota.heard(said(r=0, t=1, q=3000))
    clock.now += 2.0  # waited out: a full window of 3000 is expected
    quota.admit(RESOLVE)
    quota.heard(said(r=0, t=1, q=3000))  # but the hub refuses again, for 1 s more
    assert held_back(quota).wait == pytest.approx(2.0)


def test_a_429_holds_back_every_download(clock: Clock) -> None:
    quota = HubQuota(clock, slack=1.0)
    quota.heard(said(r=0, t=2, q=None))
    held_back(quota)
    clock.now += 3.0
    for _ in range(100):  # no policy: nothing is known of the new window until the hub says
        quota.admit(RESOLVE)
    quota.heard(said(r=0, t=3, q=None))
    held_back(quota)
