"""The test hub, started, with one multi-file repo on three revisions: shared by the hub's test files.

`running_hub` starts one; `HubSetup` says how a test module's hub runs for the `hub` and
`make_hub_hive` fixtures of tests/hive/conftest.py (a module overrides the `hub_setup` fixture).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.modelserver.cdn import CLOUDFRONT_MAX_BYTES
from services.modelserver.hub import Hub, HubSwitches
from services.modelserver.hub_repo import Generated

REPO = "org/model"
LFS_SIZE = 3 * 1024 * 1024 + 7  # LFS by pattern (*.safetensors), well under the 10 MiB rule
CDN_LIMIT = 1024 * 1024  # the CDN refuses unbounded reads of blobs above this (the real limit is 50 GB)


@dataclass
class Revisions:
    first: str  # the commit main pointed at before the second commit
    main: str
    pr: str  # refs/pr/1


def build_repo(hub: Hub) -> Revisions:
    hub.add_repo(REPO)
    first = hub.commit(
        REPO,
        {
            "config.json": b'{"hidden": 64}\n',
            "tokenizer.json": b'{"vocab": ["a", "b"]}\n',
            "model.safetensors": Generated(LFS_SIZE, seed=1),
            "sub/dir/notes.txt": b"notes\n",
        },
    )
    main = hub.commit(REPO, {"config.json": b'{"hidden": 128}\n', "model.safetensors": Generated(LFS_SIZE, seed=2)})
    pr = hub.commit(REPO, {"config.json": b'{"hidden": 256}\n'}, branch="refs/pr/1")
    return Revisions(first, main, pr)


def small_pages() -> HubSwitches:
    """Tree pages of 2 entries, so listings take several pages."""
    return HubSwitches(tree_page_size=2)


@dataclass(frozen=True)
class HubSetup:
    """How a test module's hub runs and what its hives are told (tests/hive/conftest.py)."""

    repos: tuple[str, ...] = ()  # empty repos the hub holds from the start
    cdn_max_unranged_bytes: int = CLOUDFRONT_MAX_BYTES
    switches: HubSwitches = field(default_factory=small_pages)
    hive: dict[str, Any] = field(default_factory=dict)  # HiveSettings of every hive `make_hub_hive` starts


@contextmanager
def running_hub(
    tmp_path: Path, cdn_max_unranged_bytes: int = CLOUDFRONT_MAX_BYTES, switches: HubSwitches | None = None
) -> Iterator[Hub]:
    """A started hub; by default with tree pages of 2 entries (`small_pages`)."""
    switches = switches or small_pages()
    with Hub(tmp_path / "hub-store", cdn_max_unranged_bytes=cdn_max_unranged_bytes, switches=switches) as h:
        yield h
