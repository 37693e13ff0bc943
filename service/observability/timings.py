"""Histograms in plain numbers: a dict look-up and a bisect per observation, turned into Prometheus's
histogram family only when scraped (service/observability/metrics.py). Cheaper than prometheus-client's own objects,
which take a lock and look up their labels on every observation."""

from __future__ import annotations

import threading
from bisect import bisect_left
from contextlib import nullcontext

from prometheus_client.core import HistogramMetricFamily


class Timings:
    """Observations by a tuple of label values. ``threads``: observed from several threads (a lock);
    without it, from the event loop's thread only."""

    def __init__(self, buckets: tuple[float, ...], threads: bool = False) -> None:
        self.buckets = buckets
        self.by_labels: dict[tuple, list] = {}  # [sum, one count per bucket, +Inf]
        self._lock = threading.Lock() if threads else nullcontext()

    def observe(self, labels: tuple, seconds: float) -> None:
        with self._lock:
            timing = self.by_labels.get(labels)
            if timing is None:
                timing = self.by_labels[labels] = [0.0] + [0] * (len(self.buckets) + 1)
            timing[0] += seconds
            timing[1 + bisect_left(self.buckets, seconds)] += 1

    def family(self, name: str, documentation: str, labels: list[str]) -> HistogramMetricFamily:
        histogram = HistogramMetricFamily(name, documentation, labels=labels)
        for values, timing in sorted(list(self.by_labels.items())):  # a copy: scraped from another thread
            buckets, total = [], 0
            for bound, count in zip((*self.buckets, "+Inf"), timing[1:]):
                total += count
                buckets.append((str(bound), total))
            histogram.add_metric(list(values), buckets, timing[0])
        return histogram
