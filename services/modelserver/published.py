"""A model published on the test hub, as its clients check it: the repo, the commit its main names, and
each file's sha256 (and size) by path.

Built from the hub in this process (`Published.of`, the benchmarks) or read from the JSON line
`hub_cli` prints (`Published.parse`, the demo, which runs the hub as a subprocess).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.modelserver.hub import Hub

__all__ = ["Published", "shard_names"]


def shard_names(count: int) -> list[str]:
    """The names a sharded safetensors checkpoint gives its `count` shards."""
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


@dataclass(frozen=True)
class Published:
    """A repo on the test hub whose main is `commit`, holding `files` (path -> sha256)."""

    repo: str
    commit: str
    files: Mapping[str, str]
    sizes: Mapping[str, int] = field(default_factory=dict)  # path -> bytes, when the hub is in this process
    url: str = ""  # the hub's, when it runs as a subprocess (`parse`)

    @classmethod
    def of(cls, hub: Hub, repo: str, commit: str) -> Published:
        """Every file of `commit` of `repo` on `hub` (`.gitattributes` too)."""
        files = hub.repo(repo).commits[commit].files
        return cls(repo, commit, {p: f.sha256 for p, f in files.items()}, {p: f.size for p, f in files.items()})

    @classmethod
    def parse(cls, line: str) -> Published:
        """The JSON line `hub_cli` prints: {"url", "repo", "commit", "files": {path: sha256}}."""
        info = json.loads(line)
        files = {str(p): str(h) for p, h in info["files"].items()}
        return cls(str(info["repo"]), str(info["commit"]), files, url=str(info["url"]))

    @property
    def size(self) -> int:
        return sum(self.sizes.values())

    @property
    def ref(self) -> str:
        return f"hf:{self.repo}"
