"""Queen settings: QUEEN_* from the environment, plus RBEE_API_TOKEN."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from shared.limits import HIVE_ID_RE
from shared.settings import CommonSettings

__all__ = ["QueenSettings", "parse_hives"]


def parse_hives(value: str) -> dict[str, str]:
    """`id=url,id=url` -> {id: url}; raises ValueError on a malformed entry."""
    hives: dict[str, str] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        hive_id, sep, url = item.partition("=")
        hive_id, url = hive_id.strip(), url.strip().rstrip("/")
        if not sep or not HIVE_ID_RE.match(hive_id):
            raise ValueError(f"QUEEN_HIVES entry {item!r} is not id=url")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"QUEEN_HIVES entry {item!r}: the url must start with http:// or https://")
        hives[hive_id] = url
    return hives


class QueenSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="QUEEN_", extra="ignore", populate_by_name=True)

    orchestrator_id: str = Field(default="queen-1", min_length=1, max_length=64)
    hives: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)  # QUEEN_HIVES="id=url,id=url"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)

    health_interval: float = Field(default=5.0, gt=0)  # GET /healthz on every hive this often
    health_timeout: float = Field(default=2.0, gt=0)
    hive_timeout: float = Field(default=10.0, gt=0)  # one API call to a hive
    # A call the queen makes to every hive at once (the download list, finding a download's hive):
    # each hive gets this long, the answer has what came back, and the rest are `unreachable_hives`.
    fanout_timeout: float = Field(default=2.0, gt=0)
    # The relay: reconnect a dropped hive stream with backoff; give up (error event) after the budget.
    unreachable_budget: float = Field(default=30.0, gt=0)
    relay_backoff_initial: float = Field(default=0.2, gt=0)
    relay_backoff_max: float = Field(default=5.0, gt=0)
    upstream_read_timeout: float = Field(default=50.0, gt=0)  # well above 3x the hive's 15 s keep-alive
    client_queue_size: int = Field(default=10_000, ge=1)  # downloads pending per client on the aggregated stream
    send_timeout: float = Field(default=30.0, gt=0)  # a client that takes no bytes for this long is dropped
    max_tracked_downloads: int = Field(default=100_000, ge=1)  # download -> hive map, least recently used out
    # Fleet pulls: how many hives fetch one blob from the hub at once (the rest take it from them),
    # and how long each hive gets to make its plan (it asks the hub for the commit and the files).
    hub_fetches_per_blob: int = Field(default=1, ge=1, le=64)
    plan_timeout: float = Field(default=30.0, gt=0)

    @field_validator("hives", mode="before")
    @classmethod
    def _parse_hives(cls, value: Any) -> Any:
        return parse_hives(value) if isinstance(value, str) else value
