"""The notes of a hub blob's partial, kept beside it under `{models}/.rbee/partial` (never in `hub/`).

Beside a file's partial (`partial/{models--org--repo}/{digest}.part`), what its transfer learnt
(`{digest}.json`: validator, total, segment plan), so that after a restart the partial is resumed,
not fetched again. It speaks the transfers' `Checkpoints` protocol; the first segment plan is written
durably (fsync) before the partial grows holes. Read here only: by a resumed transfer and by a peer
serving the partial (`PartialNotes.read`).
"""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path
from typing import Any

from services.hive.disk.fileio import write_text_atomically

__all__ = ["PartialNotes"]


class PartialNotes:
    """The notes of one partial; `download_id` arguments are the Checkpoints protocol's, unused."""

    def __init__(self, partial: Path) -> None:
        self.path = partial.with_name(partial.name.removesuffix(".part") + ".json")
        self._data: dict[str, Any] = {}

    @classmethod
    def load(cls, partial: Path) -> PartialNotes:
        """The notes of `partial`; none (and any stale file of them gone) when the partial is not there."""
        if not partial.is_file():
            notes = cls(partial)
            notes.remove()
            return notes
        return cls.read(partial)

    @classmethod
    def read(cls, partial: Path) -> PartialNotes:
        """The notes as they are on disk (none if unreadable), nothing removed: for a reader of the partial."""
        notes = cls(partial)
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
        await asyncio.to_thread(functools.partial(write_text_atomically, self.path, text, durable=True))

    def _write(self, durable: bool) -> None:
        try:
            write_text_atomically(self.path, json.dumps(self._data), durable=durable)
        except OSError:
            pass  # notes only save work after a restart; the digest check guards the bytes either way


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
