"""The tracker under test, driven by a fake clock, with every event it emits recorded."""

from __future__ import annotations

import pytest

from services.hive.tracker.tracker import DownloadTracker
from tests.hive.tracker.support import INTERVAL, FakeClock, Recorder


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tracker(clock: FakeClock) -> DownloadTracker:
    return DownloadTracker(progress_interval=INTERVAL, alpha=0.3, clock=clock)


@pytest.fixture
def rec(tracker: DownloadTracker) -> Recorder:
    return Recorder(tracker)
