"""Prometheus metrics of the hive, read from the tracker at scrape time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.hive.tracker import DownloadTracker
from shared.models import DownloadStatus

__all__ = ["HiveCollector", "render_metrics"]


class HiveCollector(Collector):
    def __init__(self, tracker: DownloadTracker, hive_id: str) -> None:
        self.tracker = tracker
        self.hive_id = hive_id

    def collect(self) -> Iterator[GaugeMetricFamily]:
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


def render_metrics(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
