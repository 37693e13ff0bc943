"""Resends queued jobs the broker lost and re-queues running jobs whose worker went silent; advances sweeps
and retraining policies, prunes the prediction log and gauges live quality and drift.

It runs inside every API process. Several replicas doing it at once is harmless: a duplicate message finds
its job already claimed and returns.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from fastapi.concurrency import run_in_threadpool

from service.jobs.service import job_ages, job_counts, jobs_to_resend
from service.monitoring import service as monitoring
from service.platform.queue import broker_state, enqueue_job
from service.platform.runtime import Runtime
from service.platform.tables import utcnow
from service.retraining import service as retraining
from service.sweeps import service as sweeps

log = logging.getLogger(__name__)


class Reconciler:
    """One per API process. Each pass sends again the queued jobs whose messages may be lost: any that has
    not started a while after it was sent (jobs_to_resend), and every one at once when the broker restarted
    (a new Redis run id: an empty Redis, or a failover) or is back after an outage."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.broker: str | None = None  # the broker's identity in the last pass; None: did not answer
        self.passes = 0
        self.resent = 0  # messages sent again by this process, in all
        # Gauged every pass, for /metrics: a scrape reads these and runs no query.
        self.jobs_by_status: dict[str, int] = {}
        self.queue_depths: dict[str, int] = {}
        self.oldest_queued_seconds = 0.0  # how long the oldest queued job has waited
        self.silent_jobs = 0  # running jobs whose worker stopped beating (re-queued by a later pass)
        self.pruned_files_at: datetime | None = None
        # Each classifier version's labelled live instances in the last day and how many were right, for
        # /metrics; counted at most every minute.
        self.live_quality: dict[tuple[str, str], tuple[int, int]] = {}
        # ... and each classifier version's drift over the drift window (monitoring.drift_now).
        self.drift: dict[tuple[str, str], dict] = {}
        self.live_quality_at: datetime | None = None

    def once(self) -> int:
        runtime, settings, before = self.runtime, self.runtime.settings, self.broker
        self.broker, self.queue_depths = broker_state(runtime.celery, [settings.queue, settings.gpu_queue,
                                                                       settings.export_queue])
        self.passes += 1
        with runtime.session() as session:
            self.jobs_by_status = job_counts(session)
            self.oldest_queued_seconds, self.silent_jobs = job_ages(
                session, utcnow(), timedelta(seconds=settings.stale_after_seconds))
        if self.broker is None:
            if before is not None or self.passes == 1:
                log.warning("reconciler: the broker does not answer; queued jobs are kept and sent once it is back")
            return 0
        everything = self.passes > 1 and before != self.broker
        with runtime.session() as session:
            jobs = jobs_to_resend(session, utcnow(), timedelta(seconds=settings.stale_after_seconds),
                                  settings.max_attempts, timedelta(seconds=settings.resend_after_seconds),
                                  every_queued_job=everything)
        for job_id, queue in jobs:
            enqueue_job(runtime.celery, job_id, queue)
        self.resent += len(jobs)
        self.advance_sweeps()
        self.prune_predictions()
        self.count_live_quality()
        retraining.advance_all(runtime)
        if jobs:
            why = ("the broker is back after an outage" if before is None else "the broker restarted") if everything \
                else "not started in time"
            log.warning("reconciler: sent %d queued job(s) again (%s); %d in all by this process", len(jobs), why,
                        self.resent)
        return len(jobs)

    def count_live_quality(self, now: datetime | None = None, every: timedelta = timedelta(minutes=1)) -> None:
        now = now or utcnow()
        if self.live_quality_at is not None and now - self.live_quality_at < every:
            return
        try:
            settings = self.runtime.settings
            with self.runtime.session() as session:
                self.live_quality = monitoring.live_counts(session, now - timedelta(days=1))
                self.drift = monitoring.drift_now(session, now - timedelta(minutes=settings.drift_window_minutes),
                                                  settings)
            self.live_quality_at = now
        except Exception:
            log.exception("reconciler: could not count the live quality and drift")

    def prune_predictions(self, now: datetime | None = None) -> None:
        """Logged predictions past their model's retention go: the rows every pass, the Parquet files (a
        listing of the store) at most hourly."""
        now = now or utcnow()
        files = self.pruned_files_at is None or now - self.pruned_files_at >= timedelta(hours=1)
        try:
            with self.runtime.session() as session:
                deleted = monitoring.prune(session, self.runtime.store if files else None, self.runtime.settings, now)
        except Exception:
            log.exception("reconciler: could not prune the prediction log")
            return
        if files:
            self.pruned_files_at = now
            if deleted:
                log.info("reconciler: deleted %d prediction log file(s) past their retention", deleted)

    def advance_sweeps(self) -> None:
        """Every running sweep, advanced: a trial that ended while no worker could advance it (a worker killed
        after its job finished, an API restarted mid-sweep) is told to Optuna, free slots get trials, and a
        sweep whose trials are all done is finished."""
        with self.runtime.session() as session:
            running = sweeps.running_sweeps(session)
        for sweep_id in running:
            try:
                sweeps.step(self.runtime, sweep_id)
            except Exception:
                log.exception("reconciler: could not advance sweep %s", sweep_id)


async def reconcile_forever(reconciler: Reconciler) -> None:
    settings = reconciler.runtime.settings
    while True:
        try:
            await run_in_threadpool(reconciler.once)
        except Exception:
            log.exception("reconciler pass failed; trying again in %.0f s", settings.reconcile_seconds)
        await asyncio.sleep(settings.reconcile_seconds)
