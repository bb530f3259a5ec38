"""Prometheus metrics of the queen, read from the registry and the relays at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from services.queen.hives.registry import HiveRegistry
from services.queen.models.inventory import FleetInventory
from services.queen.streams.aggregate import AggregateHub
from services.queen.streams.relay import DownloadRelay
from services.queen.streams.upstream import RelayStats

__all__ = ["QueenCollector"]


class QueenCollector(Collector):
    def __init__(
        self,
        registry: HiveRegistry,
        relay: DownloadRelay,
        hub: AggregateHub,
        stats: RelayStats,
        inventory: FleetInventory | None = None,
    ) -> None:
        self.registry = registry
        self.inventory = inventory
        self.relay = relay
        self.hub = hub
        self.stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        hives = GaugeMetricFamily("rbee_queen_hives", "Hives known to this queen, by health", labels=["health"])
        for health, count in self.registry.health_counts().items():
            hives.add_metric([health.value], count)
        yield hives
        clients = GaugeMetricFamily("rbee_queen_sse_clients", "Connected relayed SSE clients", labels=["stream"])
        clients.add_metric(["download"], self.relay.clients() + self.hub.followers())
        clients.add_metric(["all"], self.hub.clients())
        yield clients
        upstreams = GaugeMetricFamily(
            "rbee_queen_upstream_subscriptions", "Open SSE connections to hives", labels=["stream"]
        )
        upstreams.add_metric(["download"], self.relay.subscriptions())
        upstreams.add_metric(["all"], self.hub.connected_upstreams())
        yield upstreams
        yield CounterMetricFamily(
            "rbee_queen_relay_reconnects", "Hive streams connected again after a drop", value=self.stats.reconnects
        )
        yield CounterMetricFamily(
            "rbee_queen_relay_reconnect_failures",
            "Attempts to reconnect a dropped hive stream that failed",
            value=self.stats.reconnect_failures,
        )
        yield CounterMetricFamily(
            "rbee_queen_relay_gave_up",
            "Download relays that ended with HIVE_UNREACHABLE after the budget",
            value=self.stats.gave_up,
        )
        yield GaugeMetricFamily(
            "rbee_queen_tracked_downloads",
            "Downloads whose hive the queen knows",
            value=self.registry.known_downloads(),
        )
        if self.inventory is not None:
            models = GaugeMetricFamily(
                "rbee_queen_hive_models", "Models in each hive's cache, as last known", labels=["hive_id"]
            )
            cached = GaugeMetricFamily(
                "rbee_queen_hive_cache_bytes", "Bytes of each hive's cache, as last known", labels=["hive_id"]
            )
            for hive_id, (count, used) in sorted(self.inventory.counts().items()):
                models.add_metric([hive_id], count)
                cached.add_metric([hive_id], used)
            yield models
            yield cached
