"""Pins and last uses outlive the hive, in `{models}/.rbee/models.json` (services/hive/store/marks.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from services.hive.cache.layout import marks_file
from services.hive.store.marks import Marks


def test_pins_and_last_uses_are_read_back_by_the_next_start(tmp_path: Path) -> None:
    path = marks_file(tmp_path)
    marks = Marks(path)
    marks.load()  # no file yet: nothing marked
    when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert marks.pin("org/a", True) and not marks.pin("org/a", True)  # the second changes nothing
    marks.used("org/b", when)
    again = Marks(path)
    again.load()
    assert again.pinned("org/a") and not again.pinned("org/b")
    assert again.last_used("org/b") == when and again.last_used("org/a") is None
    again.forget("org/a")
    again.forget("org/b")
    last = Marks(path)
    last.load()
    assert not last.pinned("org/a") and last.last_used("org/b") is None
    assert not (tmp_path / "hub").exists()  # never under hub/, where huggingface_hub looks


def test_an_unreadable_file_is_an_empty_one(tmp_path: Path) -> None:
    path = marks_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"models": {"org/a": {"pinned": true, "last_used": "not a time"}}')
    marks = Marks(path)
    marks.load()
    assert marks.last_used("org/a") is None and not marks.pinned("org/a")  # nothing half read
    marks.pin("org/b", True)  # and it is written whole again
    again = Marks(path)
    again.load()
    assert again.pinned("org/b")
