"""The test hub for the hive's tests, and real hives on it.

A module says how its hub runs by overriding `hub_setup` (a `HubSetup`: its repos, the CDN's limit
on unranged reads, the hub's switches, the settings of its hives); `hub` is that hub, started, and
`make_hub_hive` starts real hives whose HF_ENDPOINT is it. (`make_hive`, of tests/conftest.py, is a
hive on the plain model server.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.modelserver.hub import Hub
from tests.conftest import hive_factory
from tests.hub_fixtures import HubSetup, running_hub
from tests.support import ServerThread

MakeHive = Callable[..., ServerThread]


@pytest.fixture
def hub_setup() -> HubSetup:
    return HubSetup()


@pytest.fixture
def hub(tmp_path: Path, hub_setup: HubSetup) -> Iterator[Hub]:
    with running_hub(tmp_path, hub_setup.cdn_max_unranged_bytes, hub_setup.switches) as h:
        for repo in hub_setup.repos:
            h.add_repo(repo)
        yield h


@pytest.fixture
def make_hub_hive(tmp_path: Path, hub: Hub, hub_setup: HubSetup) -> Iterator[MakeHive]:
    """Start a real hive (in-process uvicorn) whose HF_ENDPOINT is the hub; keywords override HiveSettings."""
    with hive_factory(tmp_path, hub.url, **hub_setup.hive) as make:
        yield make
