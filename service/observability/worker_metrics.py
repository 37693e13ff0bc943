"""A worker's Prometheus metrics, served by its main process on ``TRAINSERVE_WORKER_METRICS_PORT``.

Celery's prefork pool runs jobs in child processes (a GPU worker's child exits after each job), so the
metrics use prometheus-client's multiprocess mode: each process writes its samples to files in a folder
of the worker's own, which the main process reads when scraped; a child that exits has its live gauges
dropped and its counters kept. The solo pool (one process) goes the same way.

Labels take few values: the architecture (``mlp``, ``lstm``, ...), the device (``cpu``, ``cuda``) and the
outcome. No job ids.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
EPOCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
CHECKPOINT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def prepare(folder: Path) -> None:
    """Before prometheus_client is first imported in a worker: an empty folder for this worker's samples."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ[ENV] = str(folder)


def serve(port: int) -> None:
    """The main process: serve every process's samples at :port/metrics (a thread of its own)."""
    from prometheus_client import CollectorRegistry, start_http_server, values
    from prometheus_client.multiprocess import MultiProcessCollector

    if values.ValueClass is values.MutexValue:
        raise RuntimeError("worker_metrics.prepare() must run before prometheus_client is first imported")
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    try:
        start_http_server(port, registry=registry)
    except OSError as exc:
        log.warning("worker metrics are not served: port %d: %s (set TRAINSERVE_WORKER_METRICS_PORT to a free "
                    "port, or 0)", port, exc)
        return
    log.info("worker metrics at http://0.0.0.0:%d/metrics", port)


def process_exited(pid: int) -> None:
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


class _Metrics:
    """Created on first use, so that a worker has set its folder first. Outside a worker (the tests' and
    the benchmarks' in-process jobs) they count in a registry of their own that nothing serves."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        registry = None if os.environ.get(ENV) else CollectorRegistry()
        labels = ["architecture", "device"]
        self.started = Counter("trainserve_worker_jobs_started", "Jobs this worker began (or resumed).", labels,
                               registry=registry)
        self.finished = Counter("trainserve_worker_jobs_finished", "Jobs this worker ended, by outcome: "
                                "succeeded, failed, cancelled, requeued (the worker stopped), lost.",
                                [*labels, "outcome"], registry=registry)
        self.epoch_seconds = Histogram("trainserve_worker_epoch_seconds", "Time per training epoch.", labels,
                                       buckets=EPOCH_BUCKETS, registry=registry)
        self.samples = Counter("trainserve_worker_samples", "Training samples processed (rate(): samples/s).",
                               labels, registry=registry)
        self.checkpoint_seconds = Histogram("trainserve_worker_checkpoint_seconds", "Time to save a checkpoint.",
                                            labels, buckets=CHECKPOINT_BUCKETS, registry=registry)
        self.running = Gauge("trainserve_worker_jobs_running", "Jobs running in this worker now.", labels,
                             multiprocess_mode="livesum", registry=registry)


_metrics: _Metrics | None = None


def metrics() -> _Metrics:
    global _metrics
    if _metrics is None:
        _metrics = _Metrics()
    return _metrics
