"""One hub download's files and its progress over them: pure accounting, no I/O.

A whole model is one download: its bytes are the sum over its files, its total is known from the
listing, and `files_done` counts the files in place. Each file's transfer reports to a
`FileProgress`, which speaks the transfers' `Progress` protocol and folds the file's share into
the model's state; a file fetched again from zero lowers its share, and the model's bytes stay
where they were on the stream (the tracker never lets them go backwards) until they pass it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.hive.hub.api import RepoFile
from services.hive.tracker.tracker import DownloadTracker
from shared.models import DownloadState, DownloadStatus

__all__ = ["FileEntry", "FileProgress", "ModelProgress"]


@dataclass(slots=True)
class FileEntry:
    file: RepoFile
    bytes: int = 0
    status: str = DownloadStatus.QUEUED.value
    source: str | None = None  # where its bytes come from: "hub", or a peer hive's URL

    def to_json(self) -> dict[str, Any]:
        out = {"path": self.file.path, "size": self.file.size, "bytes": self.bytes, "status": self.status}
        return out if self.source is None else {**out, "source": self.source}


class ModelProgress:
    """The files of one download and what the tracker shows of them."""

    def __init__(self, tracker: DownloadTracker, download_id: str, files: Iterable[RepoFile], whole: bool) -> None:
        self.tracker = tracker
        self.download_id = download_id
        self.whole = whole  # a whole model shows files_total / files_done; one file does not
        self.entries = {f.path: FileEntry(f) for f in files}
        self.total = sum(f.size for f in self.files)
        self.bytes = 0
        self.done = 0
        self.discard = False  # partials of unfinished files go when the download stops (cancel, failure)

    @property
    def files(self) -> list[RepoFile]:
        return [e.file for e in self.entries.values()]

    def show_plan(self) -> None:
        """The total and file count, before any byte moves."""
        self.tracker.set_total(self.download_id, self.total)
        self._show_files()

    def moved(self, path: str, size: int) -> None:
        """The file's partial now holds `size` bytes."""
        entry = self.entries[path]
        self.bytes += size - entry.bytes
        entry.bytes = size
        if self.bytes > 0:
            self.tracker.update_progress(self.download_id, self.bytes)

    def source(self, path: str, source: str) -> None:
        self.entries[path].source = source

    def started(self, path: str) -> None:
        self.entries[path].status = DownloadStatus.DOWNLOADING.value

    def finished(self, path: str) -> None:
        """The file is in place: all its bytes count, and one more file is done."""
        entry = self.entries[path]
        if entry.status == DownloadStatus.COMPLETE.value:
            return
        self.moved(path, entry.file.size)
        entry.status = DownloadStatus.COMPLETE.value
        self.done += 1
        self._show_files()

    def stopped(self, status: DownloadStatus) -> None:
        """The download ended: every file not in place takes its status."""
        for entry in self.entries.values():
            if entry.status != DownloadStatus.COMPLETE.value:
                entry.status = status.value

    def file_states(self) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.entries.values()]

    def _show_files(self) -> None:
        if self.whole:
            self.tracker.set_files(self.download_id, len(self.entries), self.done)


class FileProgress:
    """A transfer's `Progress` for one file of a hub download: its bytes go to the download's sum,
    everything else (status, waits, state) is the download's own."""

    def __init__(self, model: ModelProgress, path: str) -> None:
        self.model = model
        self.path = path

    def update_progress(self, download_id: str, bytes_downloaded: int) -> None:
        self.model.moved(self.path, bytes_downloaded)

    def set_total(self, download_id: str, total_bytes: int | None) -> None:
        pass  # the listing said the size; the digest check proves it

    def set_commit(self, download_id: str, commit: str) -> None:
        pass  # the download is pinned to its commit before any file starts

    def set_status(self, download_id: str, status: DownloadStatus) -> None:
        self.model.started(self.path)
        state = self.model.tracker.get_download(self.model.download_id)
        if state is not None and state.status is not status:
            self.model.tracker.set_status(self.model.download_id, status)

    def set_waiting(self, download_id: str, until: datetime | None, reason: str | None = None) -> None:
        self.model.tracker.set_waiting(self.model.download_id, until, reason)

    def get_download(self, download_id: str) -> DownloadState | None:
        return self.model.tracker.get_download(self.model.download_id)
