"""FastAPI dependencies of the hive, as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.hive.manager import DownloadManager
from services.hive.settings import HiveSettings
from services.hive.tracker import DownloadTracker


def get_manager(request: Request) -> DownloadManager:
    manager: DownloadManager = request.app.state.manager
    return manager


def get_tracker(request: Request) -> DownloadTracker:
    tracker: DownloadTracker = request.app.state.tracker
    return tracker


def get_settings(request: Request) -> HiveSettings:
    settings: HiveSettings = request.app.state.settings
    return settings


ManagerDep = Annotated[DownloadManager, Depends(get_manager)]
TrackerDep = Annotated[DownloadTracker, Depends(get_tracker)]
SettingsDep = Annotated[HiveSettings, Depends(get_settings)]
