"""Celery tasks: thin; each carries an id and hands it to ``service/``.

The tasks are shared tasks: they bind to the app the worker process builds (``trainserve worker``, from
``service.platform.queue.make_celery``), whose ``include`` names this module. Importing it builds nothing
and connects nowhere.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import uuid

from celery import shared_task
from celery.exceptions import Reject
from celery.signals import worker_ready, worker_shutting_down

from service.platform.queue import EXPORT_TASK, TRAIN_TASK
from service.platform.runtime import Runtime
from service.platform.settings import load_settings

ALIVE_FILE = "worker.alive"  # in TRAINSERVE_HOME; deploy/k8s's liveness probe reads its age
ALIVE_EVERY = 10.0

# Set when the worker begins a warm shutdown, so the job in hand stops at its next batch and goes back to
# the queue, to resume from its last checkpoint, instead of holding the shutdown for hours. A process-shared
# event: the main process gets the signal, and under the prefork pool (a GPU worker's one job per child) the
# job runs in a child forked after this module was imported.
shutting_down = multiprocessing.get_context("fork").Event()
_runtime: Runtime | None = None


def runtime() -> Runtime:
    """This worker process's runtime: built from its settings at its first task, and again in a child forked
    after that (database connections and broker clients do not cross a fork)."""
    global _runtime
    if _runtime is None or _runtime.pid != os.getpid():
        _runtime = Runtime(load_settings())
    return _runtime


@worker_shutting_down.connect
def _on_shutdown(**_: object) -> None:
    shutting_down.set()


@worker_ready.connect
def _start_alive_file(**_: object) -> None:
    """Touch TRAINSERVE_HOME/worker.alive every 10 s from the worker's main process once it consumes: a
    liveness probe restarts a worker whose file grows old (a hung process), without asking the broker."""
    path = runtime().settings.home / ALIVE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)

    def beat() -> None:
        while True:
            path.touch()
            time.sleep(ALIVE_EVERY)

    threading.Thread(target=beat, name="trainserve-alive", daemon=True).start()


def hooks_for(runtime: Runtime, job):
    """A sweep's trial runs with its sweep's hooks; any other job with a plain job's, never passing through
    the sweeps package."""
    if job.sweep_id is None:
        from service.jobs.runner import JobHooks

        return JobHooks()
    from service.sweeps.trials import TrialHooks

    return TrialHooks(runtime, job)


@shared_task(name=TRAIN_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def train_job(job_id: str) -> None:
    if shutting_down.is_set():  # a stopping worker takes no new job: the message goes back for another
        raise Reject("this worker is shutting down", requeue=True)
    from service.jobs.runner import run_job  # PyTorch is imported only in the process that trains

    run_job(runtime(), uuid.UUID(job_id), shutting_down, hooks_for)


@shared_task(name=EXPORT_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def export_model(model_id: str) -> None:
    from service.registry.exports import run_export

    run_export(runtime(), uuid.UUID(model_id))
