"""A job's life in the worker: claiming it, the fencing condition that every later write carries, the
heartbeat and the stop signals, and the ways a delivery ends (finished, back in the queue, or lost).

Every state change is a conditional update, so a duplicate delivery, a cancel and a reconciler pass can
race with a worker without one overwriting another.
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import timedelta

from sqlalchemy import func, update

from models.training import EpochMetrics
from service.jobs import events
from service.platform.queue import enqueue_job
from service.platform.runtime import Runtime
from service.platform.tables import JobMetric, JobStatus, TrainingJob, utcnow

log = logging.getLogger(__name__)


class JobRefused(Exception):
    """The job cannot run as specified, and the message says what to change. The only errors (with the
    training library's ``ConfigError`` and ``TrainingDiverged``) whose text reaches the job's user; anything
    else fails the job as an internal error, with the traceback in the worker's log."""


class StopTrial(Exception):
    """Raised by a job's hooks after an epoch: stop here, with the reason. The job ends ``pruned`` and keeps
    its metrics (a sweep's pruner stopping a trial that trails the others)."""


class Requeue(Exception):
    """The job goes back to the queue, to resume from its last checkpoint; the message says why."""

    send_now = False  # send it again at once, or leave it to the reconciler's next pass


class WorkerShutdown(Requeue):
    """The worker is stopping; the job goes to the next free worker at once."""

    send_now = True

    def __init__(self) -> None:
        super().__init__("its worker stopped; it resumes from its last checkpoint")


class GpuMemoryShort(Requeue):
    """The GPU is busy with other jobs and lacks the memory this one needs now; the reconciler sends it again
    on its next pass."""


class JobLost(Exception):
    """The job is no longer this delivery's to run: it finished, or a later delivery claimed it after this
    worker went silent. The delivery stops without writing anything more."""


def ours(job: TrainingJob):
    """This delivery's fencing condition: the job is running under the attempt this delivery claimed."""
    return (TrainingJob.id == job.id) & (TrainingJob.status == JobStatus.running) & (TrainingJob.attempts == job.attempts)


def update_ours(session, job: TrainingJob, **values: object) -> None:
    if not session.execute(update(TrainingJob).where(ours(job)).values(**values)).rowcount:
        raise JobLost()


def claim(runtime: Runtime, job_id: uuid.UUID) -> TrainingJob | None:
    """Mark the job running if it is ours to run: queued, or running under a worker that went silent."""
    now, stale_after = utcnow(), timedelta(seconds=runtime.settings.stale_after_seconds)
    with runtime.session() as session:
        claimed = session.execute(
            update(TrainingJob)
            .where(TrainingJob.id == job_id,
                   (TrainingJob.status == JobStatus.queued)
                   | ((TrainingJob.status == JobStatus.running) & (TrainingJob.heartbeat_at < now - stale_after)))
            .values(status=JobStatus.running, attempts=TrainingJob.attempts + 1, heartbeat_at=now,
                    started_at=func.coalesce(TrainingJob.started_at, now))
        ).rowcount
        if not claimed:
            return None
        job = session.get(TrainingJob, job_id)
        events.status(session, job_id, JobStatus.running, attempt=job.attempts)
        return job


def finish(runtime: Runtime, job: TrainingJob, status: JobStatus, **values: object) -> None:
    """Mark the job finished, if this delivery still owns it."""
    try:
        with runtime.session() as session:
            finish_in(session, job, status, **values)
    except JobLost:
        log.warning("job %s: not marked %s; attempt %d no longer owns it", job.id, status.value, job.attempts)


def finish_in(session, job: TrainingJob, status: JobStatus, model_id: uuid.UUID | None = None,
              **values: object) -> None:
    """Mark the job finished in ``session``'s transaction (where something else is written with it: the
    registered model, whose id its final event names)."""
    update_ours(session, job, status=status, finished_at=utcnow(), heartbeat_at=None, **values)
    told = {"model_id": str(model_id)} if model_id is not None else {}
    events.status(session, job.id, status, **told, **{k: values[k] for k in ("error", "result") if values.get(k)})


def requeue(runtime: Runtime, job: TrainingJob, reason: Requeue) -> bool:
    """Put the job back in the queue with its reason, if this delivery still owns it; with ``send_now``, send
    it to the next free worker at once. Its ``enqueued_at`` stays empty until it is sent, so the
    reconciler's next pass sends it if this does not."""
    with runtime.session() as session:
        requeued = session.execute(update(TrainingJob).where(ours(job)).values(
            status=JobStatus.queued, heartbeat_at=None, enqueued_at=None)).rowcount
        if requeued:
            events.status(session, job.id, JobStatus.queued, reason=str(reason))
    if requeued and reason.send_now:
        try:
            enqueue_job(runtime.celery, job.id, job.queue)
        except Exception:
            log.warning("job %s: could not send it again; the reconciler will", job.id, exc_info=True)
        else:
            with runtime.session() as session:
                session.execute(update(TrainingJob)
                                .where(TrainingJob.id == job.id, TrainingJob.status == JobStatus.queued)
                                .values(enqueued_at=utcnow()))
    return bool(requeued)


def record_epoch(runtime: Runtime, job: TrainingJob, metrics: EpochMetrics) -> None:
    with runtime.session() as session:
        update_ours(session, job, epochs_done=metrics.epoch, heartbeat_at=utcnow())
        session.add(JobMetric(job_id=job.id, **metrics.to_dict()))
        events.append(session, job.id, "epoch", **metrics.to_dict())


class JobMonitor:
    """Keeps the job's heartbeat going from a thread of its own while the job is being worked on, and tells
    the training loop (``should_stop``) about a cancel, a worker shutdown or a job lost to a later delivery.

    The heartbeat says the worker process is alive, so it must not wait on the training loop: loading data,
    restoring a checkpoint, a long full-batch step or the holdout evaluation would otherwise look like a dead
    worker to the reconciler, which would hand the job to another delivery.
    """

    def __init__(self, runtime: Runtime, job: TrainingJob, shutting_down: threading.Event):
        self.runtime, self.job, self.shutting_down = runtime, job, shutting_down
        self.every = runtime.settings.cancel_check_seconds
        self.cancelled = False
        self.lost = False
        self.step: tuple[int, int, int] | None = None  # (epoch, step, steps): set by the training loop
        self._reported: tuple[int, int, int] | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat_forever, name=f"heartbeat-{job.id}", daemon=True)

    def beat(self) -> None:
        """Write the heartbeat, and the progress within the epoch if it moved, and read the cancel flag, under
        this delivery's attempt."""
        step = self.step
        with self.runtime.session() as session:
            cancel_requested = session.scalar(update(TrainingJob).where(ours(self.job)).values(heartbeat_at=utcnow())
                                              .returning(TrainingJob.cancel_requested))
            if cancel_requested is not None and step is not None and step != self._reported:
                events.append(session, self.job.id, "progress", epoch=step[0], step=step[1], steps=step[2])
                self._reported = step
        if cancel_requested is None:
            self.lost = True
        else:
            self.cancelled = bool(cancel_requested)

    def _beat_forever(self) -> None:
        while not self._stopped.wait(self.every) and not self.lost:
            try:
                self.beat()
            except Exception:  # a database blip: the next beat tries again, well before the job looks stale
                log.warning("job %s: heartbeat failed; trying again in %.1f s", self.job.id, self.every,
                            exc_info=True)

    def __enter__(self) -> JobMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        self._thread.join()

    def at_step(self, epoch: int, step: int, steps: int) -> None:
        """The training loop, before each step: where it is (the heartbeat thread reports it)."""
        self.step = (epoch, step, steps)

    def __call__(self) -> bool:
        if self.shutting_down.is_set():
            raise WorkerShutdown()
        if self.lost:
            raise JobLost()
        return self.cancelled
