"""One `/metrics` page for a group of worker processes.

Each worker keeps its own registry and endpoint on a private loopback port; the supervisor
scrapes them before rendering its own page and re-exposes every sample with a `worker` label.
This keeps every metric type working (callback gauges, histograms), which prometheus-client's
multiprocess mode does not, and Prometheus still scrapes one target per server.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

WORKER_LABEL = "worker"


def merge_expositions(pages: Mapping[str, str]) -> list[Metric]:
    """Families of all pages (keyed by worker name), each sample labelled with its worker.

    A family that appears in several pages becomes one family; the first page's help and
    type win (workers run the same code, so they agree).
    """
    merged: dict[str, Metric] = {}
    for worker, text in pages.items():
        for family in text_string_to_metric_families(text):
            target = merged.get(family.name)
            if target is None:
                target = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                target.add_sample(
                    sample.name, {**sample.labels, WORKER_LABEL: worker}, sample.value,
                    sample.timestamp, sample.exemplar)
    return list(merged.values())


class GroupCollector(Collector):
    """Yields the last scraped pages of the workers; `update` replaces them."""

    def __init__(self) -> None:
        self._families: list[Metric] = []

    def update(self, pages: Mapping[str, str]) -> None:
        self._families = merge_expositions(pages)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)

    def describe(self) -> Iterable[Metric]:
        return ()  # families are only known after a scrape: never registered up front
