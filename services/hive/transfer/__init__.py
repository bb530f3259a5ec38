"""The download path: how one file's bytes get from a source to the disk.

- `answers` — pure parsing of what a server answered (Content-Range, Retry-After, validators, etags)
- `source` — where the bytes come from: a URL and the headers each request to it carries
- `request` — redirects by hand, a source's headers per hop, allowed hosts, status -> error
- `single` — the single-connection transfer, resumed with Range; its body read on the event loop
- `threaded` — a fast body read on a worker thread; `httpcore_tuning` the httpcore tuning it relies on
- `segmented` — the rest of a file over several range connections, hashed as it fills
- `context` — what those share (config, job, per-download state); `errors` — how they fail
- `downloader` — the thin Downloader that chooses among them
"""

from services.hive.net.answers import parse_retry_after, sha256_from_etag
from services.hive.net.errors import DownloadError
from services.hive.net.source import Source
from services.hive.transfer.context import (
    Checkpoints,
    DownloaderConfig,
    DownloadJob,
    DownloadResult,
    backoff_delay,
)
from services.hive.transfer.downloader import Downloader

__all__ = [
    "Checkpoints",
    "DownloadError",
    "DownloadJob",
    "DownloadResult",
    "Downloader",
    "DownloaderConfig",
    "Source",
    "backoff_delay",
    "parse_retry_after",
    "sha256_from_etag",
]
