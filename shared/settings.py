"""Settings common to both services (pydantic-settings; each service adds its own prefix)."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["CommonSettings"]


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"  # each service sets its own default port
    port: int = Field(default=0, ge=0, le=65535)
    api_token: str | None = Field(default=None, validation_alias=AliasChoices("RBEE_API_TOKEN", "api_token"))
    log_level: str = "INFO"
    # SSE: at most one progress event per download per interval while bytes move; comment keep-alive period.
    progress_interval: float = 0.5
    keepalive_secs: float = 15.0
