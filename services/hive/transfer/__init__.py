"""How one file's bytes get from a source to the disk (what a server answered and how a request is
made are `services.hive.net`'s).

- `jobs` — what a Downloader is asked to do (DownloadJob), how (DownloaderConfig), what it answers
- `context` — what the transfers of a download share (collaborators, per-download state)
- `single` — the single-connection transfer, resumed with Range; its body read on the event loop
- `threaded` — a fast body read on a worker thread; `httpcore_tuning` the httpcore tuning it relies on
- `segmented` — the rest of a file over several range connections, hashed as it fills; `segments`
  its plan; `split` when a file is split
- `throttle` — the bandwidth limits every transfer takes its bytes through
- `downloader` — the thin Downloader that chooses among them
"""

from services.hive.net.errors import DownloadError
from services.hive.transfer.context import Checkpoints
from services.hive.transfer.downloader import Downloader
from services.hive.transfer.jobs import DownloaderConfig, DownloadJob, DownloadResult

__all__ = ["Checkpoints", "DownloadError", "DownloadJob", "DownloadResult", "Downloader", "DownloaderConfig"]
