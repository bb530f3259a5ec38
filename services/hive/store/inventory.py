"""The index of the models in the hive's Hugging Face cache (README, "The model store").

Read once at start (`load`, every model's folder); kept current by the hive's own changes (`rescan`,
`drop`) and by noticing what other tools change (`refresh`): a listing of `hub/` and a few `stat`s per
model (`scan.stamp_of`), at most once every `recheck_secs`, and only a folder whose stamp moved is read
again. Never a walk of every file per request. Call it from one thread at a time (the event loop).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from services.hive.cache.layout import hub_dir, repo_folder, repo_id_of
from services.hive.store.scan import model_folders, scan_repo, stamp_of
from services.hive.store.sizes import RepoScan

__all__ = ["Change", "Inventory"]

Change = tuple[str, RepoScan | None, RepoScan | None]  # repo_id, before, after (None: absent)


class Inventory:
    def __init__(
        self, models_dir: Path, recheck_secs: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.hub = hub_dir(models_dir)
        self.recheck_secs = recheck_secs
        self._clock = clock
        self._repos: dict[str, RepoScan] = {}  # by folder name
        self._checked = float("-inf")

    def load(self) -> None:
        """Read every model's folder (at start, off the event loop)."""
        repos: dict[str, RepoScan] = {}
        for name, entry in model_folders(self.hub).items():
            if (scan := scan_repo(Path(entry.path))) is not None:
                repos[name] = scan
        self._repos = repos
        self._checked = self._clock()

    def root(self, repo_id: str) -> Path:
        return self.hub / repo_folder(repo_id)

    def get(self, repo_id: str) -> RepoScan | None:
        return self._repos.get(repo_folder(repo_id))

    def all(self) -> list[RepoScan]:
        return list(self._repos.values())

    def used(self) -> int:
        return sum(scan.size_on_disk for scan in self._repos.values())

    def refresh(self, force: bool = False) -> list[Change]:
        """Notice what changed on disk since the last look (at most every `recheck_secs` unless `force`)."""
        now = self._clock()
        if not force and now - self._checked < self.recheck_secs:
            return []
        self._checked = now
        folders = model_folders(self.hub)
        changes: list[Change] = []
        for name in [n for n in self._repos if n not in folders]:
            gone = self._repos.pop(name)
            changes.append((gone.repo_id, gone, None))
        for name, entry in folders.items():
            before = self._repos.get(name)
            root = Path(entry.path)
            if before is not None and stamp_of(root) == before.stamp:
                continue
            after = scan_repo(root)
            self._put(name, after)
            changes.append((repo_id_of(name) or name, before, after))
        return changes

    def rescan(self, repo_id: str) -> Change:
        """Read one model's folder again now (the hive changed it)."""
        name = repo_folder(repo_id)
        before = self._repos.get(name)
        after = scan_repo(self.hub / name)
        self._put(name, after)
        return repo_id, before, after

    def _put(self, name: str, scan: RepoScan | None) -> None:
        if scan is None:
            self._repos.pop(name, None)
        else:
            self._repos[name] = scan
