"""The model store's news: a `model` event on the hive's aggregated stream (`GET /v2/downloads/stream`,
SSE `event: model` with its own `id:`) and a structured log line, for every add, delete, eviction, pin
and unpin (README, "The model store"). A download's own stream never carries one."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import structlog

from shared.models import EventType, ProgressEvent
from shared.wire.models import ModelAction, ModelEventBody

__all__ = ["ModelEvents"]

log = structlog.get_logger()


class ModelEvents:
    def __init__(self, hive_id: str, offer: Callable[[ProgressEvent], None]) -> None:
        """`offer` hands an event to the aggregated readers (DownloadTracker.broadcast)."""
        self.hive_id = hive_id
        self._offer = offer
        self._ids = itertools.count(1)
        self.evictions = 0  # for the metrics

    def emit(self, action: ModelAction, repo_id: str, commit: str | None = None, size_on_disk: int = 0) -> None:
        body = ModelEventBody(
            action=action, repo_id=repo_id, commit=commit, size_on_disk=size_on_disk, hive_id=self.hive_id
        )
        if action is ModelAction.EVICTED:
            self.evictions += 1
        log.info("model_" + action.value, repo_id=repo_id, commit=commit, size_on_disk=size_on_disk)
        self._offer(ProgressEvent(next(self._ids), EventType.MODEL, body.model_dump(mode="json")))
