"""The Celery app, configured from trainserve's settings. Importing it does not import PyTorch."""

from __future__ import annotations

import uuid

from celery import Celery

from service.settings import Settings, get_settings
from workers import broker

TRAIN_TASK = "trainserve.train_job"
EXPORT_TASK = "trainserve.export_model"


def broker_options(settings: Settings) -> dict:
    folder = settings.broker_folder
    if folder is None:
        # A training task can run for hours; without a long visibility timeout Redis would hand a running
        # task to a second worker. A worker that really died is caught by the reconciler's heartbeat check.
        return {"visibility_timeout": 24 * 3600}
    for sub in ("queue", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return {
        # One folder for both directions makes it one shared queue for the API and every local worker.
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "control_folder": str(folder / "control"),
        "polling_interval": 0.1,
    }


def make_celery(settings: Settings) -> Celery:
    # The filesystem transport (ours writes atomically) takes its folders from the options; "localhost"
    # keeps kombu from warning about a missing host.
    broker_url = f"{broker.SCHEME}://localhost/" if settings.broker_folder else settings.broker_url
    app = Celery("trainserve", broker=broker_url, include=["workers.tasks"])
    app.conf.update(
        broker_transport_options=broker_options(settings),
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.queue,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # acks_late: a worker that dies mid-task leaves the message to be delivered again.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
    )
    return app


celery_app = make_celery(get_settings())


def _send(task: str, row_id: uuid.UUID) -> None:
    """Tasks carry an id only; the worker reads the rest from the database."""
    celery_app.send_task(task, args=[str(row_id)], queue=get_settings().queue, retry=True,
                         retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5})


def enqueue_job(job_id: uuid.UUID) -> None:
    """Send the task for a committed job."""
    _send(TRAIN_TASK, job_id)


def enqueue_export(model_id: uuid.UUID) -> None:
    """Ask for a registered model's TorchScript and ONNX exports."""
    _send(EXPORT_TASK, model_id)


def broker_reachable(timeout: float = 2.0) -> bool:
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:
        return False
