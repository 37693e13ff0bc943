"""Resends queued jobs the broker lost and re-queues running jobs whose worker went silent.

It runs inside every API process. Several replicas doing it at once is harmless: a duplicate message finds
its job already claimed and returns.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from fastapi.concurrency import run_in_threadpool

from service.db import session_scope
from service.jobs.service import jobs_to_resend
from service.settings import Settings
from service.tables import utcnow
from service.queue import enqueue_job

log = logging.getLogger(__name__)


def reconcile_once(settings: Settings) -> int:
    with session_scope() as session:
        job_ids = jobs_to_resend(session, utcnow(), timedelta(seconds=settings.stale_after_seconds),
                                 settings.max_attempts)
    for job_id, queue in job_ids:
        enqueue_job(job_id, queue)
    if job_ids:
        log.info("reconciler: sent %d job(s) again", len(job_ids))
    return len(job_ids)


async def reconcile_forever(settings: Settings) -> None:
    while True:
        try:
            await run_in_threadpool(reconcile_once, settings)
        except Exception:
            log.exception("reconciler pass failed; trying again in %.0f s", settings.reconcile_seconds)
        await asyncio.sleep(settings.reconcile_seconds)
