"""The Celery app and the two messages trainserve sends: "train this job" and "export this model".

Messages carry an id only; the worker reads the rest from the database. A process's app is its
``Runtime``'s, built on first use from that process's settings, so importing this module opens no connection
and writes nothing to disk.

The task bodies live in ``workers.tasks`` (named in ``include``, which the worker imports when it starts):
this side knows them only by name.
"""

from __future__ import annotations

import uuid

from celery import Celery

from service.platform import broker
from service.platform.settings import Settings

TRAIN_TASK = "trainserve.train_job"
EXPORT_TASK = "trainserve.export_model"
TASK_MODULES = ["workers.tasks"]


def broker_options(settings: Settings) -> dict:
    folder = settings.broker_folder
    if folder is None:
        # A training task can run for hours; without a long visibility timeout Redis would hand a running
        # task to a second worker. A worker that really died is caught by the reconciler's heartbeat check.
        return {"visibility_timeout": 24 * 3600}
    return {
        # One folder for both directions makes it one shared queue for the API and every local worker.
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "control_folder": str(folder / "control"),
        "polling_interval": 0.05,
    }


def make_celery(settings: Settings) -> Celery:
    # The filesystem transport (ours writes atomically) takes its folders from the options; "localhost"
    # keeps kombu from warning about a missing host.
    broker_url = f"{broker.SCHEME}://localhost/" if settings.broker_folder else settings.broker_url
    app = Celery("trainserve", broker=broker_url, include=TASK_MODULES, set_as_current=False)
    app.conf.update(
        broker_transport_options=broker_options(settings),
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.queue,
        # Exports have a queue of their own, so a worker that trains never spends a job's start on one.
        task_routes={TRAIN_TASK: {"queue": settings.queue}, EXPORT_TASK: {"queue": settings.export_queue}},
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


def gpu_workers_present(settings: Settings) -> bool:
    """Whether GPU workers take the GPU queue: TRAINSERVE_GPU_WORKERS, or else whether this machine has a
    CUDA device (``trainserve up`` then runs a worker that takes the GPU queue too)."""
    if settings.gpu_workers is not None:
        return settings.gpu_workers
    import torch

    return torch.cuda.is_available()


def job_queue(device: str, settings: Settings) -> str | None:
    """The queue a job for ``device`` goes to: cuda to the GPU queue, auto there too where GPU workers exist,
    the rest to the CPU queue. None: the job asks for a GPU and no GPU worker takes jobs here."""
    gpus = gpu_workers_present(settings)
    if device == "cuda":
        return settings.gpu_queue if gpus else None
    return settings.gpu_queue if device == "auto" and gpus else settings.queue


def _send(celery: Celery, task: str, row_id: uuid.UUID, **options: object) -> None:
    celery.send_task(task, args=[str(row_id)], retry=True,
                           retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5}, **options)


def enqueue_job(celery: Celery, job_id: uuid.UUID, queue: str | None = None) -> None:
    """Send the task for a committed job, to the queue it was given (the CPU queue when None)."""
    _send(celery, TRAIN_TASK, job_id, **({"queue": queue} if queue else {}))


def enqueue_export(celery: Celery, model_id: uuid.UUID) -> None:
    """Ask for a registered model's TorchScript and ONNX exports."""
    _send(celery, EXPORT_TASK, model_id)


def broker_reachable(celery: Celery, timeout: float = 2.0) -> bool:
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:
        return False


def broker_state(celery: Celery, queues: list[str] = (), timeout: float = 2.0) -> tuple[str | None, dict[str, int]]:
    """Which broker instance answers, and how many messages wait in each of ``queues``.

    The identity is Redis's run id (new after every restart or failover), else the transport's name; None
    when the broker does not answer. The reconciler sends every queued job again when it changes, or when
    the broker comes back after an outage. Depths are Redis list lengths (none for other transports)."""
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
            if conn.transport.driver_type != "redis":
                return conn.transport.driver_type, {}
            client = conn.default_channel.client
            return str(client.info("server")["run_id"]), {q: int(client.llen(q)) for q in queues}
    except Exception:
        return None, {}

