"""The file listing of a commit, kept under `{models}/.rbee/trees/{models--org--repo}/{commit}.json`.

A commit's files never change, so the listing is asked of the hub once and read from here after: by
a restarted model, and by a request that finds the model already on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

from services.hive.cache.layout import repo_folder, trees_dir
from services.hive.cache.repo import COMMIT_RE
from services.hive.disk.fileio import write_text_atomically
from services.hive.hub.api import RepoFile

__all__ = ["TreeCache"]


class TreeCache:
    def __init__(self, models_dir: Path) -> None:
        self.root = trees_dir(models_dir)

    def path(self, repo_id: str, commit: str) -> Path:
        if not COMMIT_RE.fullmatch(commit):
            raise ValueError(f"not a commit: {commit!r}")
        return self.root / repo_folder(repo_id) / f"{commit}.json"

    def load(self, repo_id: str, commit: str) -> list[RepoFile] | None:
        try:
            data = json.loads(self.path(repo_id, commit).read_text())
            return [RepoFile.from_json(item) for item in data["files"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, repo_id: str, commit: str, files: list[RepoFile]) -> None:
        path = self.path(repo_id, commit)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps({"files": [f.to_json() for f in files]}))
