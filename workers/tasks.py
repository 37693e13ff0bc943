"""Celery tasks: thin; they carry a job id and hand it to :mod:`workers.jobs`."""

from __future__ import annotations

import threading
import uuid

from celery.signals import worker_process_init, worker_shutting_down

from workers.celery_app import EXPORT_TASK, TRAIN_TASK, celery_app

# Set when the worker begins a warm shutdown, so the job in hand stops at its next batch and goes back to
# the queue, to resume from its last checkpoint, instead of holding the shutdown for hours.
shutting_down = threading.Event()


@worker_shutting_down.connect
def _on_shutdown(**_: object) -> None:
    shutting_down.set()


@worker_process_init.connect
def _on_process_init(**_: object) -> None:
    shutting_down.clear()


@celery_app.task(name=TRAIN_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def train_job(job_id: str) -> None:
    from workers.jobs import run_job  # PyTorch is imported only in the process that trains

    run_job(uuid.UUID(job_id), shutting_down)


@celery_app.task(name=EXPORT_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def export_model(model_id: str) -> None:
    from workers.exports import run_export

    run_export(uuid.UUID(model_id))
