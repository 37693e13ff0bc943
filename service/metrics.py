"""Prometheus metrics of an API process, at ``/metrics``.

Per request, one pure-ASGI middleware counts the request and times it by route template (never the raw
path) and status. Everything else is counted where it happens, in plain integers, and read only when
Prometheus scrapes: the model cache's hits, misses and loads, the forward passes /predict's requests
shared, and the jobs by status and broker queue depths that the reconciler already gauges every
TRAINSERVE_RECONCILE_SECONDS. A scrape runs no query.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from service.auth import allow
from service.errors import NotFound, errors
from service.keys.service import Scope
from service.predict.batching import PASS_SIZES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class State(Collector):
    """What the app already counts, turned into metrics when scraped."""

    def __init__(self, app_state) -> None:
        self.state = app_state

    def collect(self):
        cache, batcher, reconciler = self.state.models, self.state.batcher, self.state.reconciler
        events = CounterMetricFamily("trainserve_model_cache_lookups", "Model cache look-ups by result.",
                                     labels=["result"])
        events.add_metric(["hit"], cache.hits)
        events.add_metric(["miss"], cache.misses)
        yield events
        yield CounterMetricFamily("trainserve_model_loads", "Models loaded from the artifact store.", value=cache.loads)
        yield CounterMetricFamily("trainserve_model_load_seconds", "Time spent loading models.",
                                  value=cache.load_seconds)
        buckets, total = [], 0
        for bound, count in zip(PASS_SIZES, batcher.pass_sizes):
            total += count
            buckets.append(("+Inf" if bound == float("inf") else str(bound), total))
        yield HistogramMetricFamily("trainserve_predict_batch_requests", "Requests that shared one forward pass.",
                                    buckets=buckets, sum_value=batcher.requests)
        jobs = GaugeMetricFamily("trainserve_jobs", "Jobs by status (gauged by the reconciler).", labels=["status"])
        for status, count in sorted(reconciler.jobs_by_status.items()):
            jobs.add_metric([status], count)
        yield jobs
        depth = GaugeMetricFamily("trainserve_queue_messages", "Messages waiting in each broker queue (Redis).",
                                  labels=["queue"])
        for queue, count in sorted(reconciler.queue_depths.items()):
            depth.add_metric([queue], count)
        yield depth
        yield CounterMetricFamily("trainserve_jobs_resent", "Queued jobs this process sent again.",
                                  value=reconciler.resent)


class Metrics:
    def __init__(self, app_state) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("trainserve_http_requests", "HTTP requests by route template and status.",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("trainserve_http_request_duration_seconds", "Time to answer, by route template.",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(State(app_state))
        self._children: dict[tuple[str, str, int], tuple] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        children = self._children.get((method, route, status))
        if children is None:  # labels() takes a lock and a dict look-up; keep the children at hand
            children = self._children[(method, route, status)] = (
                self.requests.labels(method, route, str(status)), self.latency.labels(method, route))
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (``/v1/jobs/{job_id}``); a path that
    matched no route counts as ``unmatched``, so no label takes unbounded values."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_and_note(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            self.metrics.observe(scope["method"], getattr(route, "path", None) or "unmatched", status,
                                 time.perf_counter() - started)


router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, dependencies=[allow(Scope.read)],
            responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus's text format."},
                       **errors(404)})
def metrics(request: Request) -> Response:
    """This API process's metrics for Prometheus (a key with the read scope where keys are required)."""
    if getattr(request.app.state, "metrics", None) is None:
        raise NotFound("metrics are off in this process (TRAINSERVE_METRICS=false)")
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
