"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.modelserver.hub import Hub
from tests.e2e.fleet import FILES, REPO, Fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with Hub(tmp_path / "hub-store") as hub, contextlib.ExitStack() as stack:
        hub.add_repo(REPO)
        hub.commit(REPO, FILES)
        f = Fleet(tmp_path, hub, stack)
        f.start_queen()
        yield f  # the stack stops the hives, then the queen, before the hub goes
