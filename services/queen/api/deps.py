"""FastAPI dependencies of the queen, as Annotated aliases (plain `def` on purpose: services/hive/deps.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.queen.pulls.service import PullService
from services.queen.pulls.streams import PullStreams
from services.queen.service import QueenService
from services.queen.settings import QueenSettings
from services.queen.streams.aggregate import AggregateHub
from services.queen.streams.relay import DownloadRelay


def get_service(request: Request) -> QueenService:
    service: QueenService = request.app.state.service
    return service


def get_relay(request: Request) -> DownloadRelay:
    relay: DownloadRelay = request.app.state.relay
    return relay


def get_hub(request: Request) -> AggregateHub:
    hub: AggregateHub = request.app.state.hub
    return hub


def get_pulls(request: Request) -> PullService:
    pulls: PullService = request.app.state.pulls
    return pulls


def get_pull_streams(request: Request) -> PullStreams:
    streams: PullStreams = request.app.state.pull_streams
    return streams


def get_settings(request: Request) -> QueenSettings:
    settings: QueenSettings = request.app.state.settings
    return settings


ServiceDep = Annotated[QueenService, Depends(get_service)]
RelayDep = Annotated[DownloadRelay, Depends(get_relay)]
HubDep = Annotated[AggregateHub, Depends(get_hub)]
PullsDep = Annotated[PullService, Depends(get_pulls)]
PullStreamsDep = Annotated[PullStreams, Depends(get_pull_streams)]
SettingsDep = Annotated[QueenSettings, Depends(get_settings)]
