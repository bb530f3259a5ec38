"""FastAPI dependencies of the hive, as Annotated aliases (how they are served: shared/deps.py)."""

from __future__ import annotations

from typing import Annotated

from services.hive.downloads.manager import DownloadManager
from services.hive.settings import HiveSettings
from services.hive.store.models import ModelStore
from services.hive.store.room import DiskRoom
from services.hive.tracker.tracker import DownloadTracker
from shared.deps import from_state

ManagerDep = Annotated[DownloadManager, from_state("manager", DownloadManager)]
TrackerDep = Annotated[DownloadTracker, from_state("tracker", DownloadTracker)]
SettingsDep = Annotated[HiveSettings, from_state("settings", HiveSettings)]
ModelStoreDep = Annotated[ModelStore, from_state("store", ModelStore)]
DiskRoomDep = Annotated[DiskRoom, from_state("room", DiskRoom)]
