"""Hive settings: HIVE_* from the environment, plus HF_ENDPOINT / HF_TOKEN / RBEE_API_TOKEN.

The hub token is `HF_TOKEN` (the setting), else where huggingface_hub looks (`hub_token`)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from services.hive.bandwidth.schedule import parse_rate, parse_schedule
from services.hive.cache import layout
from services.hive.net.hub_headers import find_token
from services.hive.refs import parse_allowed_hosts
from services.hive.store.budget import check_budget
from shared.settings import CommonSettings

__all__ = ["HiveSettings"]

# bytes/s as a number or with a unit (`50MB`, `50MiB`: services/hive/bandwidth/schedule.py)
Rate = Annotated[int, BeforeValidator(lambda v: parse_rate(v) if isinstance(v, str) else v), Field(ge=0)]


class HiveSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="HIVE_", extra="ignore", populate_by_name=True)

    id: str = Field(default="hive-local", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    host: str = "127.0.0.1"
    port: int = Field(default=9200, ge=0, le=65535)
    public_url: str | None = None  # how a queen reaches this hive; default http://{host}:{port}
    models_dir: Path = Path("./models")
    state_db: Path | None = None  # default <models_dir>/.rbee/hive.db
    hf_endpoint: str = Field(
        default="https://huggingface.co", validation_alias=AliasChoices("HF_ENDPOINT", "hf_endpoint")
    )
    hf_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("HF_TOKEN", "hf_token"))
    max_concurrent: int = Field(default=3, ge=1, le=256)
    model_files_concurrent: int = Field(default=4, ge=1, le=64)  # large files of one model at once (small ones beside)
    bandwidth_limit: int = Field(default=0, ge=0)
    # README, "Bandwidth": time windows with their own cap, the zone they are in (unset: this host's
    # local time), and the interface the hive shares with serving, its budget and the hive's floor
    bandwidth_schedule: str | None = Field(default=None, max_length=4096)
    bandwidth_tz: str | None = None
    nic: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,31}$")
    nic_budget: Rate | None = None  # bytes/s each direction; unset: the link's speed
    bandwidth_floor: Rate = 1_000_000  # the least the NIC controller leaves the hive, bytes/s
    bandwidth_tick: float = Field(default=1.0, ge=0.05, le=60)  # seconds between looks at the counters
    bandwidth_clock_offset: float = 0.0  # seconds added to the schedule's clock (for tests)
    segments: int = Field(default=8, ge=1, le=32)  # parallel range connections (8: see BENCHMARKS.md)
    segment_min_bytes: int = Field(default=8 * 1024 * 1024, ge=256 * 1024)  # smallest chunk
    # a download starts on one connection and splits over `segments` once that connection runs
    # slower than this (bytes/s); 0 = split every large file at once (see BENCHMARKS.md)
    split_below_bps: int = Field(default=200_000_000, ge=0)
    direct_io: bool = True  # write partials with O_DIRECT where the filesystem allows it
    # a body read on the event loop moves to a worker thread once it runs faster than this
    # (bytes/s); 0 = every body on a thread (see DownloaderConfig)
    thread_above_bps: int = Field(default=50_000_000, ge=0)
    queen_url: str | None = None
    # comma-separated host names or host:port (`*.example.com` for subdomains); when set, refs and
    # every redirect target must match. Unset = any host.
    allowed_hosts: str | None = Field(default=None, max_length=4096)
    # hosts (same syntax) a redirect from the hub itself may go to even outside allowed_hosts: the
    # hub's CDN; the default names the real hub's (cdn-lfs.hf.co, cas-bridge.xethub.hf.co, ...)
    hub_cdn_hosts: str = Field(default="*.hf.co,*.huggingface.co", max_length=4096)
    # the longest byte range one request asks for; a bigger file is fetched in bounded ranges (the
    # real hub's CDN refuses an open-ended range of a file over 50 GB)
    range_limit_bytes: int = Field(default=50_000_000_000, ge=1024 * 1024)
    heartbeat_secs: float = Field(default=10.0, gt=0)  # re-register with the queen this often
    history_ttl: float = Field(default=7 * 86400.0, gt=0)  # seconds a finished entry is kept
    history_max: int = Field(default=1000, ge=1)  # finished entries kept at most
    # the model store's budget (README, "The model store"): the Hugging Face cache's size at most, in
    # bytes or `NN%` of its filesystem (0 = none); a download evicts least recently used models to fit
    cache_max_bytes: str = Field(default="0", max_length=32)
    # free bytes a download always leaves on the cache's filesystem (evicting models for them if it must)
    min_free_bytes: int = Field(default=1024**3, ge=0)

    # downloader tuning
    connect_timeout: float = Field(default=10.0, gt=0)
    stall_timeout: float = Field(default=30.0, gt=0)  # no bytes for this long = dropped connection
    max_attempts: int = Field(default=6, ge=1)  # consecutive failed attempts with no bytes received
    retry_base_delay: float = Field(default=0.5, ge=0)
    retry_max_delay: float = Field(default=30.0, ge=0)
    # bytes handed to the writer and hash threads at once (one batch fills while one is written);
    # 2 MiB: the same speed as 4 MiB, and 106 MB instead of 134 MB peak for four 1 GiB downloads
    write_batch_bytes: int = Field(default=2 * 1024 * 1024, ge=64 * 1024)
    # the longest rate-limit window of the hub's (429) a download waits out; a longer one fails it
    rate_limit_max_wait: float = Field(default=300.0, ge=0)
    # fleet pulls: how long in all a file waits for a peer that plans a blob to begin it (its 503 planned)
    # before the next source or the hub. 30 s, as HIVE_STALL_TIMEOUT: a seeder fetches the blobs it
    # seeds first and begins within seconds; one that has not in 30 s is queued behind other work, and
    # the hub could have sent much of the file meanwhile
    peer_wait_secs: float = Field(default=30.0, ge=0)
    # a peer that sends under peer_min_bps (bytes/s) over peer_slow_secs is dropped for the next source
    # (0 = never). 256 KiB/s: an honest peer sends as fast as its own hub connection fills its partial,
    # far above this on any link worth pulling models over; under it for 30 s, it is broken or hostile
    peer_min_bps: int = Field(default=256 * 1024, ge=0)
    peer_slow_secs: float = Field(default=30.0, gt=0)

    @field_validator("cache_max_bytes")
    @classmethod
    def _check_cache_max_bytes(cls, value: str) -> str:
        return check_budget(value)

    @field_validator("allowed_hosts", "hub_cdn_hosts")
    @classmethod
    def _check_allowed_hosts(cls, value: str | None) -> str | None:
        parse_allowed_hosts(value)  # raises ValueError on a malformed entry
        return value

    @field_validator("bandwidth_schedule")
    @classmethod
    def _check_schedule(cls, value: str | None) -> str | None:
        if value is not None:
            parse_schedule(value)  # raises ScheduleError (a ValueError) naming the bad part
        return value or None

    @field_validator("bandwidth_tz")
    @classmethod
    def _check_zone(cls, value: str | None) -> str | None:
        if value:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as e:
                raise ValueError(f"unknown time zone {value!r}: an IANA name such as Europe/Berlin or UTC") from e
        return value or None

    @property
    def allowed_host_set(self) -> frozenset[tuple[str, int | None]] | None:
        return parse_allowed_hosts(self.allowed_hosts)

    def hub_token(self, environ: Mapping[str, str] | None = None) -> str | None:
        """HF_TOKEN; unset, `HUGGING_FACE_HUB_TOKEN`, then the token file (`HF_TOKEN_PATH`, else
        `$HF_HOME/token`, else `~/.cache/huggingface/token`), as huggingface_hub finds it."""
        if self.hf_token is not None and (token := self.hf_token.get_secret_value().strip()):
            return token
        return find_token(os.environ if environ is None else environ)

    @property
    def hub_cdn_host_set(self) -> frozenset[tuple[str, int | None]] | None:
        return parse_allowed_hosts(self.hub_cdn_hosts)

    @property
    def state_db_path(self) -> Path:
        return self.state_db or layout.state_db(self.models_dir)

    @property
    def advertised_url(self) -> str:
        """How a queen reaches this hive: HIVE_PUBLIC_URL, else the bind address - or, when bound to
        every interface (0.0.0.0, ::), this machine's host name, since 0.0.0.0 reaches nothing."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"
