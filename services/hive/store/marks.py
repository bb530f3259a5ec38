"""What the model store remembers of each model beyond the disk: whether it is pinned and when it was
last used, in `{models}/.rbee/models.json` (never under `hub/`: README, "The model store").

Each change is written at once, atomically (the old file or the new one, never half); a missing or
unreadable file is an empty one. Loaded once at start; the hive is its only writer.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from services.hive.disk.fileio import write_text_atomically

__all__ = ["Marks"]

log = structlog.get_logger()


class Marks:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._pinned: set[str] = set()
        self._used: dict[str, datetime] = {}

    def load(self) -> None:
        pinned: set[str] = set()
        used: dict[str, datetime] = {}
        try:
            data: Any = json.loads(self.path.read_text())
            for repo_id, mark in data["models"].items():
                if mark.get("pinned") is True:
                    pinned.add(repo_id)
                if isinstance(when := mark.get("last_used"), str):
                    used[repo_id] = datetime.fromisoformat(when)
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("model_marks_unreadable", path=str(self.path), error=str(exc))
            return
        self._pinned, self._used = pinned, used

    def pinned(self, repo_id: str) -> bool:
        return repo_id in self._pinned

    def last_used(self, repo_id: str) -> datetime | None:
        return self._used.get(repo_id)

    def pin(self, repo_id: str, pinned: bool) -> bool:
        """Pin or unpin; True when that changed anything."""
        if (repo_id in self._pinned) == pinned:
            return False
        if pinned:
            self._pinned.add(repo_id)
        else:
            self._pinned.discard(repo_id)
        self._save()
        return True

    def used(self, repo_id: str, when: datetime | None = None) -> datetime:
        now = when or datetime.now(UTC)
        self._used[repo_id] = now
        try:
            self._save()
        except OSError as exc:  # (a full or read-only disk: the use is kept in memory, saved with the next change)
            log.warning("model_marks_not_saved", repo_id=repo_id, error=str(exc))
        return now

    def forget(self, repo_id: str) -> None:
        """The model is gone: its pin and last use go with it."""
        if self._used.pop(repo_id, None) is not None or repo_id in self._pinned:
            self._pinned.discard(repo_id)
            self._save()

    def _save(self) -> None:
        names = sorted(self._pinned | set(self._used))
        models = {
            name: {"pinned": name in self._pinned, "last_used": u.isoformat() if (u := self._used.get(name)) else None}
            for name in names
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.path, json.dumps({"models": models}, indent=1))
