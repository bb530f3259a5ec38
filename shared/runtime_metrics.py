"""What a service process holds, for /metrics: its asyncio tasks, open files and memory.

A long-running service must hold nothing per finished download or departed client, so these are
the figures that show a leak (the README's "what a long-running queen and hive hold"). Open
files and resident memory come from prometheus_client's ProcessCollector (`process_open_fds`,
`process_resident_memory_bytes`, read from /proc where there is one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client import ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["RuntimeCollector", "register_runtime_metrics"]


class RuntimeCollector(Collector):
    """`rbee_asyncio_tasks`: the tasks alive on the event loop that serves the scrape."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # scraped off the loop (a test's own registry): nothing to count
            return
        yield GaugeMetricFamily("rbee_asyncio_tasks", "Tasks alive on the service's event loop", value=tasks)


def register_runtime_metrics(registry: CollectorRegistry) -> None:
    ProcessCollector(registry=registry)
    registry.register(RuntimeCollector())
