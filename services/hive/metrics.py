"""Prometheus metrics of the hive: gauges read from the tracker at scrape time, counters kept in HiveStats."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from services.hive.store.models import ModelStore
from services.hive.tracker.tracker import DownloadTracker
from shared.models import DownloadStatus

__all__ = ["HiveCollector", "HiveStats", "render_metrics"]


@dataclass(slots=True)
class HiveStats:
    """Counters the downloader bumps (plain ints: one event loop, read at scrape time)."""

    bytes_downloaded: int = 0  # body bytes received from remotes, re-fetched ones included
    retries: int = 0  # failed attempts that were tried again
    resumes: int = 0  # transfers continued from an offset (Range) instead of from zero


class HiveCollector(Collector):
    def __init__(
        self, tracker: DownloadTracker, hive_id: str, stats: HiveStats | None = None, store: ModelStore | None = None
    ) -> None:
        self.tracker = tracker
        self.store = store
        self.hive_id = hive_id
        self.stats = stats or HiveStats()

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        states = self.tracker.list_all()
        by_status = Counter(s.status for s in states)
        downloads = GaugeMetricFamily(
            "rbee_hive_downloads", "Downloads known to this hive, by status", labels=["status"]
        )
        for status in DownloadStatus:
            downloads.add_metric([status.value], by_status.get(status, 0))
        yield downloads
        active = [s for s in states if not s.status.is_terminal]
        yield GaugeMetricFamily(
            "rbee_hive_active_bytes",
            "Bytes received by running downloads",
            value=sum(s.bytes_downloaded for s in active),
        )
        yield GaugeMetricFamily(
            "rbee_hive_speed_bps", "Sum of current download speeds", value=sum(s.speed_bps for s in active)
        )
        yield GaugeMetricFamily(
            "rbee_hive_queue_length", "Downloads waiting for a slot", value=by_status.get(DownloadStatus.QUEUED, 0)
        )
        yield GaugeMetricFamily(
            "rbee_hive_sse_clients", "Open SSE subscriptions", value=self.tracker.subscriber_count()
        )
        yield CounterMetricFamily(
            "rbee_hive_bytes_downloaded",
            "Body bytes received from remotes (bytes fetched again after a fault count again)",
            value=self.stats.bytes_downloaded,
        )
        yield CounterMetricFamily(
            "rbee_hive_retries", "Failed transfer attempts that were tried again", value=self.stats.retries
        )
        yield CounterMetricFamily(
            "rbee_hive_resumes", "Transfers continued from an offset with Range", value=self.stats.resumes
        )
        if self.store is not None:
            inventory = self.store.inventory
            yield GaugeMetricFamily(
                "rbee_hive_cache_bytes",
                "Bytes of the Hugging Face cache, as scan_cache_dir counts them",
                value=inventory.used(),
            )
            yield GaugeMetricFamily("rbee_hive_models", "Models in the Hugging Face cache", value=len(inventory.all()))
            yield CounterMetricFamily(
                "rbee_hive_model_evictions",
                "Models evicted to make room for a download",
                value=self.store.events.evictions,
            )


def render_metrics(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
