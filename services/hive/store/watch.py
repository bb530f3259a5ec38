"""What the hive's downloads tell the model store: which models are in use (a download of them runs,
and the commit it fills once pinned), and, from the tracker's events, that a download or a request that
found the model on disk used it, and that a finished download put files in place (README, "The model
store")."""

from __future__ import annotations

from services.hive.refs import InvalidModelRef, parse_model_ref
from services.hive.store.models import ModelStore
from services.hive.tracker.tracker import DownloadTracker
from shared.models import DownloadState, EventType, ProgressEvent

__all__ = ["ActiveModels", "DownloadWatch", "repo_of"]


def repo_of(model_ref: str, hf_endpoint: str) -> str | None:
    """The hub repo a download's ref names; None for a URL download (not in the Hugging Face cache)."""
    try:
        hub_ref = parse_model_ref(model_ref, hf_endpoint).hub_ref
    except InvalidModelRef:
        return None
    return None if hub_ref is None else hub_ref.repo_id


class ActiveModels:
    """The models in use: repo_id -> the commits its running downloads fill (None while a download's
    commit is not pinned yet). The ModelStore's `running`."""

    def __init__(self, tracker: DownloadTracker, hf_endpoint: str) -> None:
        self.tracker = tracker
        self.hf_endpoint = hf_endpoint

    def __call__(self) -> dict[str, set[str | None]]:
        models: dict[str, set[str | None]] = {}
        for state in self.tracker.list_active():
            if (repo := repo_of(state.model_ref, self.hf_endpoint)) is not None:
                models.setdefault(repo, set()).add(state.commit)
        return models


class DownloadWatch:
    """A tracker listener: a download's first event marks its model used, its `complete` event too, and
    has the store read the model's folder again."""

    def __init__(self, store: ModelStore, hf_endpoint: str) -> None:
        self.store = store
        self.hf_endpoint = hf_endpoint
        self._repos: dict[str, str | None] = {}  # download_id -> repo, for the downloads seen running

    def on_event(self, state: DownloadState, event: ProgressEvent) -> None:
        download_id = state.download_id
        first = download_id not in self._repos
        repo = self._repos.get(download_id) if not first else repo_of(state.model_ref, self.hf_endpoint)
        if event.is_terminal:
            self._repos.pop(download_id, None)
        else:
            self._repos[download_id] = repo
        if repo is None:
            return
        if event.event is EventType.COMPLETE:
            self.store.written(repo)  # (its `added` event, then its last use)
            self.store.mark_used(repo)
        elif first:
            self.store.mark_used(repo)
