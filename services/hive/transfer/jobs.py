"""What a Downloader is asked to do (DownloadJob), how (DownloaderConfig), and what it answers
(DownloadResult)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from services.hive.disk.partfile import part_path
from services.hive.net.retry import RetryPolicy

__all__ = ["DownloadJob", "DownloadResult", "DownloaderConfig"]


@dataclass(frozen=True, slots=True)
class DownloadJob:
    download_id: str
    url: str
    dest: Path
    expected_sha256: str | None = None
    token_origin: str | None = None  # the only origin HF_TOKEN is sent to (the hub's)
    validator: str | None = None  # set when resuming a partial left by an earlier run
    total: int | None = None
    segments: str | None = None  # a saved SegmentPlan (JSON) when that partial was segmented
    hub_digest: str | None = None  # what the hub said the file's digest is, when an earlier run learnt it
    partial: Path | None = None  # where the bytes gather (default: beside `dest`, `part_path`)
    # the bytes are pinned by `hub_digest`, whatever serves them: a partial resumes, and ranges of it
    # may come from several connections or sources, without If-Range (the digest check guards them)
    pinned: bool = False
    peer_token: str | None = field(default=None, repr=False)  # RBEE_API_TOKEN, for a peer hive's blob URL
    max_attempts: int | None = None  # consecutive failed attempts before giving up (default: the config's)
    # may the file be split over several connections: not a fleet pull's from the hub, whose peers
    # follow a partial's contiguous prefix as it grows (a split one's hardly grows before its end);
    # a peer's blob is split once it is complete there (never a partial it follows)
    may_split: bool = True
    # from a peer hive (a fleet pull's source): dropped for the next source when it sends too slowly
    # (DownloaderConfig.peer_min_bps over peer_slow_secs, see transfer/pace.py)
    peer: bool = False
    # other peers' URLs of the same blob: once the file is split, those that hold it complete serve
    # ranges of it too (transfer/mirrors.py); with any, a large file is split at once
    mirrors: tuple[str, ...] = ()

    @property
    def part_file(self) -> Path:
        return self.partial if self.partial is not None else part_path(self.dest)


@dataclass(frozen=True, slots=True)
class DownloadResult:
    sha256: str
    size: int
    resumed: int  # how many times a transfer was resumed with Range


@dataclass(frozen=True, slots=True)
class DownloaderConfig:
    connect_timeout: float = 10.0
    stall_timeout: float = 30.0
    max_attempts: int = 6
    retry_base_delay: float = 0.5
    retry_max_delay: float = 30.0
    write_batch_bytes: int = 2 * 1024 * 1024
    hf_token: str | None = field(default=None, repr=False)  # never in a repr, so never in a log
    segments: int = 1  # parallel range connections for a large file
    segment_min_bytes: int = 8 * 1024 * 1024  # smallest chunk; files under two chunks use one connection
    # split over `segments` connections only while one connection is slower than this (bytes/s);
    # 0 = split every large file at once, after a one-byte probe
    split_below_bps: int = 0
    direct_io: bool = True  # write the partial with O_DIRECT where the filesystem allows (see blockwriter.py)
    # A body starts on the event loop; one that runs faster than thread_above_bps (over a RateWindow)
    # with at least thread_min_rest left goes on from there on a worker thread (0 = always on a thread).
    # On the loop, httpx took 1.90 s per GiB from local nginx against 1.46 s on a thread; but 100 slow
    # downloads on threads raised the SSE p99 from 43 to 67 ms (their wake-ups cost the whole
    # machine), so slow bodies stay on the loop. A peer's blob of thread_min_rest or more is read on a
    # thread from its first byte (transfer/single.py): a peer on the cluster's network proves fast anyway.
    thread_above_bps: int = 50_000_000
    thread_min_rest: int = 64 * 1024 * 1024
    allowed_hosts: frozenset[tuple[str, int | None]] | None = None  # HIVE_ALLOWED_HOSTS; None = any
    hub_cdn_hosts: frozenset[tuple[str, int | None]] | None = None  # HIVE_HUB_CDN_HOSTS
    range_limit: int | None = 50_000_000_000  # HIVE_RANGE_LIMIT_BYTES: the longest range one request asks for
    rate_limit_max_wait: float = 300.0  # the longest rate-limit window of the hub's waited out (seconds)
    # a server that plans the file but has not begun it (a peer hive's 503 planned) is waited for this
    # long in all (seconds) before the transfer fails and the next source goes on
    peer_wait_secs: float = 30.0
    # a peer job's source that sends under peer_min_bps (bytes/s) over a window of peer_slow_secs is
    # dropped for the next source; 0 = never (see transfer/pace.py)
    peer_min_bps: int = 262_144
    peer_slow_secs: float = 30.0

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.retry_base_delay, self.retry_max_delay, self.rate_limit_max_wait)
