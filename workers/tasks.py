"""Celery tasks: thin; each carries an id and hands it to ``service/``.

The tasks are shared tasks: they bind to the app the worker process builds (``service.queue.celery_app``),
whose ``include`` names this module. Importing it builds nothing and connects nowhere.
"""

from __future__ import annotations

import threading
import uuid

from celery import shared_task
from celery.exceptions import Reject
from celery.signals import worker_process_init, worker_shutting_down

from service.queue import EXPORT_TASK, TRAIN_TASK

# Set when the worker begins a warm shutdown, so the job in hand stops at its next batch and goes back to
# the queue, to resume from its last checkpoint, instead of holding the shutdown for hours.
shutting_down = threading.Event()


@worker_shutting_down.connect
def _on_shutdown(**_: object) -> None:
    shutting_down.set()


@worker_process_init.connect
def _on_process_init(**_: object) -> None:
    shutting_down.clear()


@shared_task(name=TRAIN_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def train_job(job_id: str) -> None:
    if shutting_down.is_set():  # a stopping worker takes no new job: the message goes back for another
        raise Reject("this worker is shutting down", requeue=True)
    from service.jobs.runner import run_job  # PyTorch is imported only in the process that trains

    run_job(uuid.UUID(job_id), shutting_down)


@shared_task(name=EXPORT_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def export_model(model_id: str) -> None:
    from service.registry.exports import run_export

    run_export(uuid.UUID(model_id))
