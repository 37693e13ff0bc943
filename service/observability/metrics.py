"""Prometheus metrics of an API process, at ``/metrics``.

Per request, the telemetry middleware (service/observability/telemetry.py) counts the request and times it by route
template (never the raw path) and status, in plain numbers. Everything else is counted where it happens, in
plain integers, and read only when Prometheus scrapes: the model cache's hits, misses and loads, the
forward passes /predict's requests shared, and the jobs by status and broker queue depths that the
reconciler already gauges every TRAINSERVE_RECONCILE_SECONDS. A scrape runs no query.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from service.http.auth import allow
from service.http.errors import NotFound, errors
from service.keys.service import Scope
from service.observability.timings import Timings
from service.platform.artifacts import STORE_TIMINGS
from service.serving.batching import PASS_SIZES

log = logging.getLogger(__name__)
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
        yield GaugeMetricFamily("trainserve_queue_oldest_job_age_seconds",
                                "How long the oldest queued job has waited (gauged by the reconciler).",
                                value=reconciler.oldest_queued_seconds)
        yield GaugeMetricFamily("trainserve_jobs_silent", "Running jobs whose worker stopped sending heartbeats "
                                "(gauged by the reconciler, which queues them again).", value=reconciler.silent_jobs)
        hub = self.state.events
        yield GaugeMetricFamily("trainserve_event_watchers", "Clients watching a job's events now.",
                                value=hub.watchers)
        yield CounterMetricFamily("trainserve_event_polls", "Database polls for job events (one per watched job "
                                  "per interval, whatever the number of its watchers).", value=hub.polls)
        yield STORE_TIMINGS.family("trainserve_artifact_store_seconds", "Artifact store operations this process "
                                   "made, by backend and operation.", ["backend", "operation"])
        yield CounterMetricFamily("trainserve_jobs_resent", "Queued jobs this process sent again.",
                                  value=reconciler.resent)
        labels = GaugeMetricFamily("trainserve_live_labels", "A classifier version's live instances labelled by "
                                   "feedback in the last day (counted by the reconciler).", labels=["model", "version"])
        accuracy = GaugeMetricFamily("trainserve_live_accuracy", "A classifier version's accuracy on its labelled "
                                     "live instances of the last day.", labels=["model", "version"])
        for (name, version), (n, correct) in sorted(reconciler.live_quality.items()):
            labels.add_metric([name, version], n)
            if n:
                accuracy.add_metric([name, version], correct / n)
        yield labels
        yield accuracy
        yield from drift_families(reconciler.drift)
        yield from rollout_families(self.state.rollouts)


def drift_families(drift: dict[tuple[str, str], dict]):
    """Each classifier version's drift over TRAINSERVE_DRIFT_WINDOW_MINUTES of logged traffic (gauged by the
    reconciler): every summary's PSI, the instances it is measured on, and the name's threshold."""
    psi = GaugeMetricFamily("trainserve_drift_psi", "Population stability index of a classifier version's logged "
                            "live traffic against its test part, by summary (the predicted classes: "
                            "summary=\"predictions\").", labels=["model", "version", "summary"])
    instances = GaugeMetricFamily("trainserve_drift_instances", "Logged live instances that a classifier version's "
                                  "drift is measured on.", labels=["model", "version"])
    threshold = GaugeMetricFamily("trainserve_drift_threshold", "The PSI past which the version drifts (its model "
                                  "name's, or TRAINSERVE_DRIFT_THRESHOLD), where it has enough instances for a "
                                  "verdict.", labels=["model", "version"])
    for (name, version), report in sorted(drift.items()):
        instances.add_metric([name, version], report["instances"])
        for summary, scores in report["scores"].items():
            psi.add_metric([name, version, summary], scores["psi"])
        if report["drifting"] is not None:
            threshold.add_metric([name, version], report["threshold"])
    yield psi
    yield instances
    yield threshold


def rollout_families(router):
    """Traffic in rollouts, by model, version and role (stable, canary: the candidate serving, shadow: the
    candidate's duplicate pass), the rollouts' steps and weights, and the rollouts by status."""
    requests = CounterMetricFamily("trainserve_rollout_requests", "Requests in a rollout, by model, version and "
                                   "role.", labels=["model", "version", "role"])
    failures = CounterMetricFamily("trainserve_rollout_errors", "Requests in a rollout that failed, by model, "
                                   "version and role.", labels=["model", "version", "role"])
    for (name, version, role), (count, failed) in sorted(list(router.by_role.items())):
        requests.add_metric([name, str(version), role], count)
        failures.add_metric([name, str(version), role], failed)
    yield requests
    yield failures
    yield router.timings.family("trainserve_rollout_request_seconds", "Time to answer in a rollout (shadow: the "
                                "duplicate pass), by model, version and role.", ["model", "version", "role"])
    step = GaugeMetricFamily("trainserve_rollout_step", "The running rollout's step, from 0.", labels=["model", "alias"])
    weight = GaugeMetricFamily("trainserve_rollout_weight", "The running rollout's weight in % (canary: the "
                               "candidate's share; shadow: the share mirrored).", labels=["model", "alias"])
    for (_, alias), route in sorted(router.routes.items(), key=lambda item: str(item[0])):
        step.add_metric([route.stable.name, alias], route.step)
        weight.add_metric([route.stable.name, alias], route.weight)
    yield step
    yield weight
    statuses = GaugeMetricFamily("trainserve_rollouts", "Rollouts by status (gauged each rollout pass).",
                                 labels=["status"])
    for status, count in sorted(router.by_status.items()):
        statuses.add_metric([status], count)
    yield statuses
    yield CounterMetricFamily("trainserve_rollout_comparisons_dropped", "Duplicate passes dropped because they "
                              "fell behind.", value=router.dropped)


class Requests(Collector):
    """Requests counted and timed in plain integers and floats on the event loop's thread (no lock, no
    label look-up: a dict hit and a bisect), and turned into a counter and a histogram when scraped."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        self.latency = Timings(LATENCY_BUCKETS)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.latency.observe(key[:2], seconds)

    def collect(self):
        counts = CounterMetricFamily("trainserve_http_requests", "HTTP requests by route template and status.",
                                     labels=["method", "route", "status"])
        for (method, route, status), count in sorted(list(self.counts.items())):  # a copy: scraped from a thread
            counts.add_metric([method, route, str(status)], count)
        yield counts
        yield self.latency.family("trainserve_http_request_duration_seconds", "Time to answer, by route template.",
                                  ["method", "route"])


class Metrics:
    def __init__(self, app_state) -> None:
        self.registry = CollectorRegistry()
        self.requests = Requests()
        self.observe = self.requests.observe
        self.registry.register(self.requests)
        self.registry.register(State(app_state))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, port: int) -> None:
        """Also serve these metrics on ``port`` (a thread of prometheus-client's), without a key: for a
        scraper inside the cluster; the network policy lets nothing else reach it (docs/observability.md)."""
        start_http_server(port, registry=self.registry)
        log.info("metrics also at http://0.0.0.0:%d/metrics (TRAINSERVE_API_METRICS_PORT)", port)


router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, dependencies=[allow(Scope.read)],
            responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus's text format."},
                       **errors(404)})
def metrics(request: Request) -> Response:
    """This API process's metrics for Prometheus (a key with the read scope where keys are required)."""
    if getattr(request.app.state, "metrics", None) is None:
        raise NotFound("metrics are off in this process (TRAINSERVE_METRICS=false)")
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
