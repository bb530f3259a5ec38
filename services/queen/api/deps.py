"""FastAPI dependencies of the queen, as Annotated aliases (how they are served: shared/deps.py)."""

from __future__ import annotations

from typing import Annotated

from services.queen.models.store import ModelStore
from services.queen.pulls.service import PullService
from services.queen.pulls.streams import PullStreams
from services.queen.service import QueenService
from services.queen.settings import QueenSettings
from services.queen.streams.aggregate import AggregateHub
from services.queen.streams.relay import DownloadRelay
from shared.deps import from_state

ServiceDep = Annotated[QueenService, from_state("service", QueenService)]
RelayDep = Annotated[DownloadRelay, from_state("relay", DownloadRelay)]
HubDep = Annotated[AggregateHub, from_state("hub", AggregateHub)]
PullsDep = Annotated[PullService, from_state("pulls", PullService)]
PullStreamsDep = Annotated[PullStreams, from_state("pull_streams", PullStreams)]
SettingsDep = Annotated[QueenSettings, from_state("settings", QueenSettings)]
ModelsDep = Annotated[ModelStore, from_state("models", ModelStore)]
