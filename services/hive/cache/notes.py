"""What the hive keeps of hub downloads outside the cache, under `{models}/.rbee` (never in `hub/`).

- `TreeCache`: the file listing of a commit (`trees/{models--org--repo}/{commit}.json`). A commit's
  files never change, so it is asked of the hub once and read from here after: by a restarted
  model, and by a request that finds the model already on disk.
- `PartialNotes`: beside a file's partial (`partial/{models--org--repo}/{digest}.part`), what its
  transfer learnt (`{digest}.json`: validator, total, segment plan), so that after a restart the
  partial is resumed, not fetched again. It speaks the transfers' `Checkpoints` protocol; the
  first segment plan is written durably (fsync) before the partial grows holes.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any

from services.hive.cache.repo import COMMIT_RE, repo_folder
from services.hive.hub.api import RepoFile

__all__ = ["PartialNotes", "TreeCache"]


class TreeCache:
    def __init__(self, models_dir: Path) -> None:
        self.root = models_dir / ".rbee" / "trees"

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
        _write_atomically(path, json.dumps({"files": [f.to_json() for f in files]}), durable=False)


class PartialNotes:
    """The notes of one partial; `download_id` arguments are the Checkpoints protocol's, unused."""

    def __init__(self, partial: Path) -> None:
        self.path = partial.with_name(partial.name.removesuffix(".part") + ".json")
        self._data: dict[str, Any] = {}

    @classmethod
    def load(cls, partial: Path) -> PartialNotes:
        """The notes of `partial`; none (and any stale file of them gone) when the partial is not there."""
        notes = cls(partial)
        if not partial.is_file():
            notes.remove()
            return notes
        try:
            data = json.loads(notes.path.read_text())
            notes._data = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            notes._data = {}
        return notes

    @property
    def validator(self) -> str | None:
        return _str(self._data.get("validator"))

    @property
    def total(self) -> int | None:
        total = self._data.get("total")
        return total if isinstance(total, int) else None

    @property
    def segments(self) -> str | None:
        return _str(self._data.get("segments"))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    # -- Checkpoints ---------------------------------------------------------------------------

    def checkpoint(self, download_id: str, validator: str | None, total: int | None, digest: str | None) -> None:
        if (self.validator, self.total) != (validator, total):
            self._data.update(validator=validator, total=total)
            self._write(durable=False)

    def checkpoint_segments(self, download_id: str, plan_json: str) -> None:
        self._data["segments"] = plan_json
        self._write(durable=False)

    async def persist_segments(self, download_id: str, plan_json: str) -> None:
        self._data["segments"] = plan_json
        text = json.dumps(self._data)
        await asyncio.to_thread(_write_atomically, self.path, text, True)

    def _write(self, durable: bool) -> None:
        try:
            _write_atomically(self.path, json.dumps(self._data), durable)
        except OSError:
            pass  # notes only save work after a restart; the digest check guards the bytes either way


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _write_atomically(path: Path, text: str, durable: bool) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:  # the rename itself, too
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:
        tmp.unlink(missing_ok=True)
