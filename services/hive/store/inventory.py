"""The index of the models in the hive's Hugging Face cache (README, "The model store").

Read once at start (`load`, every model's folder); kept current by the hive's own changes (`rescan`)
and by noticing what other tools change: `look` lists `hub/` and takes a few `stat`s per model
(`scan.stamp_of`), reading again only a folder whose stamp moved, and `apply` puts what it found in
the index. `look` only reads the disk and what it is given, so the store runs it on a thread, off the
event loop, once a second; `apply` and everything else run on the event loop. A request never walks
the tree.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from services.hive.cache.layout import hub_dir, repo_folder, repo_id_of
from services.hive.store.scan import Stamp, model_folders, scan_repo, stamp_of
from services.hive.store.sizes import RepoScan

__all__ = ["Change", "Inventory", "Looked"]

Change = tuple[str, RepoScan | None, RepoScan | None]  # repo_id, before, after (None: absent)
Stamps = Mapping[str, Stamp]  # folder name -> its stamp as the index holds it


@dataclass(frozen=True, slots=True)
class Looked:
    """What a look at the disk found against the stamps it was given."""

    known: Stamps
    version: int  # the index's version when the look began
    gone: frozenset[str]
    read: Mapping[str, RepoScan | None]  # folders new or changed, read again


class Inventory:
    def __init__(self, models_dir: Path) -> None:
        self.hub = hub_dir(models_dir)
        self._repos: dict[str, RepoScan] = {}  # by folder name
        self._used = 0
        self._version = 0  # counts the hive's own changes (`rescan`)
        self._touched: dict[str, int] = {}  # folder name -> the version of the hive's last change to it
        self._changing: set[str] = set()  # folders the hive is changing now (`changing`)

    def load(self) -> None:
        """Read every model's folder (at start, off the event loop)."""
        repos: dict[str, RepoScan] = {}
        for name, entry in model_folders(self.hub).items():
            if (scan := scan_repo(Path(entry.path))) is not None:
                repos[name] = scan
        self._repos = repos
        self._used = sum(scan.size_on_disk for scan in repos.values())

    def root(self, repo_id: str) -> Path:
        return self.hub / repo_folder(repo_id)

    def get(self, repo_id: str) -> RepoScan | None:
        return self._repos.get(repo_folder(repo_id))

    def all(self) -> list[RepoScan]:
        return list(self._repos.values())

    def used(self) -> int:
        return self._used

    def stamps(self) -> tuple[dict[str, Stamp], int]:
        """What a look compares the disk with: each folder's stamp, and the index's version."""
        return {name: scan.stamp for name, scan in self._repos.items()}, self._version

    def look(self, known: Stamps, version: int) -> Looked:
        """What changed on disk against `known` (safe on a thread: touches nothing of the index)."""
        folders = model_folders(self.hub)
        read = {
            name: scan_repo(Path(entry.path))
            for name, entry in folders.items()
            if (stamp := known.get(name)) is None or stamp_of(Path(entry.path), stamp) != stamp
        }
        return Looked(known, version, frozenset(known.keys() - folders.keys()), read)

    def apply(self, looked: Looked) -> list[Change]:
        """Put what `look` found in the index, but for a model the hive changed since the look began (the
        next look sees it as it is then)."""
        changes: list[Change] = []
        for name in [*looked.gone, *looked.read]:
            if name in self._changing or self._touched.get(name, 0) > looked.version:
                continue
            current = self._repos.get(name)
            after = looked.read.get(name)
            self._put(name, after)
            changes.append((repo_id_of(name) or name, current, after))
        return changes

    def refresh(self) -> list[Change]:
        """Look and apply at once, on this thread."""
        return self.apply(self.look(*self.stamps()))

    @contextmanager
    def changing(self, repo_id: str) -> Iterator[None]:
        """While the hive changes a model's folder (a delete on a thread), a look does not apply what it
        saw of it half way; `rescan` it before the end."""
        name = repo_folder(repo_id)
        self._changing.add(name)
        try:
            yield
        finally:
            self._changing.discard(name)

    def is_changing(self, repo_id: str) -> bool:
        return repo_folder(repo_id) in self._changing

    def rescan(self, repo_id: str) -> Change:
        """Read one model's folder again now (the hive changed it)."""
        name = repo_folder(repo_id)
        self._version += 1
        self._touched[name] = self._version
        before = self._repos.get(name)
        after = scan_repo(self.hub / name)
        self._put(name, after)
        return repo_id, before, after

    def _put(self, name: str, scan: RepoScan | None) -> None:
        before = self._repos.pop(name, None)
        self._used -= before.size_on_disk if before is not None else 0
        if scan is not None:
            self._repos[name] = scan
            self._used += scan.size_on_disk
