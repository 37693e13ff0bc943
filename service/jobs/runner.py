"""Runs one training job: claims its row, trains through ``models/``, records everything as it goes, and
hands the trained model to the registry.

Every state change is a conditional update, so a duplicate delivery, a cancel and a reconciler pass can
race with a worker without one overwriting another.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import timedelta
from typing import Callable, Protocol

import optuna
import torch
from sqlalchemy import delete, func, select, update

from models.architectures import build_model
from models.export import checkpoint_from_bytes, checkpoint_to_bytes, model_to_bytes, tensor_to_bytes
from models.optimizers import build_optimizer
from models.training import EpochMetrics, TrainConfig, TrainingCancelled, TrainingDiverged, fit, resolve_device, \
    seed_everything
from models.usage import gpu_memory_free, gpu_memory_needed
from service import logs
from service.artifacts import ArtifactStore, store_for
from service.db import session_scope
from service.jobs import events
from service.jobs.plans import Plan, plan_for
from service.jobs.service import trial_held_out_key, trial_model_key
from service.jobs.spec import JobSpec
from service.queue import enqueue_export, enqueue_job
from service.registry import service as registry
from service.settings import get_settings, worker_threads
from service.tables import JobMetric, JobStatus, TrainedModel, TrainingJob, utcnow
from service.tracing import record_span, span
from service.worker_metrics import metrics

log = logging.getLogger(__name__)
EXPORT_CHECK_INPUTS = 256  # held-out inputs saved with a model, that its exports are checked on


class WorkerShutdown(Exception):
    """The worker is stopping; the job goes back to the queue."""


class GpuMemoryShort(Exception):
    """The GPU is busy with other jobs and lacks the memory this one needs now; it goes back to the queue and
    the reconciler sends it again on its next pass."""


def _check_gpu_memory(model: torch.nn.Module, data, batch_size: int, device: torch.device) -> None:
    need = gpu_memory_needed(model, data.x, data.y, batch_size)
    free, total = gpu_memory_free(device)
    mib = 2**20
    if need > total:
        raise ValueError(f"this job needs about {need // mib:,} MiB of GPU memory and the GPU has {total // mib:,} "
                         "MiB in all; use a smaller batch_size or model, or device cpu")
    if need > free:
        raise GpuMemoryShort(f"the GPU has {free // mib:,} MiB free and this job needs about {need // mib:,} MiB; "
                             "it waits in the queue until jobs sharing the GPU finish")


class JobLost(Exception):
    """The job is no longer this delivery's to run: it finished, or a later delivery claimed it after this
    worker went silent. The delivery stops without writing anything more."""


def _ours(job: TrainingJob):
    """This delivery's fencing condition: the job is running under the attempt this delivery claimed."""
    return (TrainingJob.id == job.id) & (TrainingJob.status == JobStatus.running) & (TrainingJob.attempts == job.attempts)


def _update_ours(session, job: TrainingJob, **values: object) -> None:
    if not session.execute(update(TrainingJob).where(_ours(job)).values(**values)).rowcount:
        raise JobLost()


def _claim(job_id: uuid.UUID, stale_after: timedelta) -> TrainingJob | None:
    """Mark the job running if it is ours to run: queued, or running under a worker that went silent."""
    now = utcnow()
    with session_scope() as session:
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


def _finish(job: TrainingJob, status: JobStatus, **values: object) -> None:
    """Mark the job finished, if this delivery still owns it."""
    try:
        with session_scope() as session:
            _update_ours(session, job, status=status, finished_at=utcnow(), heartbeat_at=None, **values)
            events.status(session, job.id, status, **({"error": values["error"]} if values.get("error") else {}),
                          **({"result": values["result"]} if values.get("result") else {}))
    except JobLost:
        log.warning("job %s: not marked %s; attempt %d no longer owns it", job.id, status.value, job.attempts)


class JobMonitor:
    """Keeps the job's heartbeat going from a thread of its own while the job is being worked on, and tells
    the training loop (``should_stop``) about a cancel, a worker shutdown or a job lost to a later delivery.

    The heartbeat says the worker process is alive, so it must not wait on the training loop: loading data,
    restoring a checkpoint, a long full-batch step or the holdout evaluation would otherwise look like a dead
    worker to the reconciler, which would hand the job to another delivery.
    """

    def __init__(self, job: TrainingJob, every: float, shutting_down: threading.Event):
        self.job, self.every, self.shutting_down = job, every, shutting_down
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
        with session_scope() as session:
            cancel_requested = session.scalar(update(TrainingJob).where(_ours(self.job)).values(heartbeat_at=utcnow())
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


def _record_epoch(job: TrainingJob, metrics: EpochMetrics) -> None:
    with session_scope() as session:
        _update_ours(session, job, epochs_done=metrics.epoch, heartbeat_at=utcnow())
        session.add(JobMetric(job_id=job.id, **metrics.to_dict()))
        events.append(session, job.id, "epoch", **metrics.to_dict())


def _send_again(job_id: uuid.UUID, queue: str | None) -> None:
    """A job put back in the queue by a stopping worker goes to the next free worker at once; if the broker
    cannot take it now, the reconciler sends it (its enqueued_at stays empty)."""
    try:
        enqueue_job(job_id, queue)
    except Exception:
        log.warning("job %s: could not send it again; the reconciler will", job_id, exc_info=True)
        return
    with session_scope() as session:
        session.execute(update(TrainingJob).where(TrainingJob.id == job_id, TrainingJob.status == JobStatus.queued)
                        .values(enqueued_at=utcnow()))


def _headline(report: dict) -> str:
    if "test_accuracy" in report:
        return f"test accuracy {report['test_accuracy']:.4f}"
    return (f"test RMSE {report['model']['rmse']:.4g} (persistence "
            f"{report['persistence']['rmse'] if report['persistence'] else float('nan'):.4g})")


def _keep_trial_model(job: TrainingJob, plan: Plan, model: torch.nn.Module, report: dict,
                     store: ArtifactStore) -> None:
    """A sweep's trial keeps its model file where the sweep finds it, and succeeds with its report."""
    config = plan.final_config()
    store.put(trial_model_key(job.id), model_to_bytes(model, config))
    store.put(trial_held_out_key(job.id), tensor_to_bytes(plan.held_out[:EXPORT_CHECK_INPUTS]))
    _finish(job, JobStatus.succeeded, result=report)


def _register(job: TrainingJob, spec: JobSpec, plan: Plan, model: torch.nn.Module, report: dict,
              store: ArtifactStore) -> uuid.UUID:
    """Register the model as a new version and mark the job succeeded, in one transaction."""
    config = plan.final_config()

    def succeed(session, result: dict) -> None:
        _update_ours(session, job, status=JobStatus.succeeded, finished_at=utcnow(), heartbeat_at=None,
                     result=result)
        model_id = session.scalar(select(TrainedModel.id).where(TrainedModel.job_id == job.id))
        events.status(session, job.id, JobStatus.succeeded, model_id=str(model_id), result=result)

    version = registry.NewVersion(
        name=spec.name or f"{job.dataset.name}-{config.architecture}", task=plan.task, job_id=job.id,
        dataset_id=job.dataset_id, config=config, data=model_to_bytes(model, config),
        held_out=tensor_to_bytes(plan.held_out[:EXPORT_CHECK_INPUTS]), metrics=report,
        promote=spec.promote)
    return registry.register_version(store, version, succeed)


class TrialHooks(Protocol):
    """What a sweep adds to its trials' runs (service/sweeps/trials.py): a report after each epoch, which may
    stop the trial (``optuna.TrialPruned``), and a call once the trial has ended."""

    def reporter(self, job: TrainingJob) -> Callable[[int, EpochMetrics], None]: ...

    def ended(self, job: TrainingJob, store: ArtifactStore) -> None: ...


def run_job(job_id: uuid.UUID, shutting_down: threading.Event, trial: TrialHooks | None = None) -> None:
    settings = get_settings()
    token = logs.job_id.set(str(job_id))
    try:
        with span("claim", **{"trainserve.job_id": str(job_id)}) as claim:
            job = _claim(job_id, timedelta(seconds=settings.stale_after_seconds))
            claim.set_attribute("trainserve.claimed", job is not None)
        if job is None:
            log.info("job %s: not queued (done, cancelled, running elsewhere or gone); nothing to do", job_id)
            return
        store = store_for(settings)
        checkpoint_key = f"jobs/{job_id}/checkpoint.pt"
        torch.set_num_threads(worker_threads(settings))
        with JobMonitor(job, settings.cancel_check_seconds, shutting_down) as monitor:
            _run_claimed(job, store, checkpoint_key, monitor, trial)
    finally:
        logs.job_id.reset(token)


def _labels(spec: JobSpec) -> tuple[str, str]:
    """The job's architecture and device, as the worker's metrics label them."""
    return spec.architecture.type, resolve_device(spec.training.device).type


def _run_claimed(job: TrainingJob, store: ArtifactStore, checkpoint_key: str, monitor: JobMonitor,
                 trial: TrialHooks | None = None) -> None:
    job_id, labels, outcome = job.id, ("unknown", "unknown"), "failed"
    try:
        spec = JobSpec.model_validate(job.spec)
        labels = _labels(spec)
        metrics().started.labels(*labels).inc()
        metrics().running.labels(*labels).inc()
        training = spec.training
        with span("data load", **{"trainserve.dataset": job.dataset.name}):
            plan = plan_for(spec, job.dataset, store)
        if plan.config is None:  # a forecasting baseline: nothing to train, only its report
            report = plan.report(None, None, training.loss)
            _finish(job, JobStatus.succeeded, result=report)
            outcome = "succeeded"
            log.info("job %s: baseline %s evaluated", job_id, spec.architecture.type)
            return
        seed_everything(training.seed)
        model = build_model(plan.config)
        options = spec.optimizer.model_dump(exclude={"type"}, exclude_none=True)
        optimizer = build_optimizer(spec.optimizer.type, model.parameters(), training.learning_rate, **options)
        resume = checkpoint_from_bytes(store.get(checkpoint_key)) if store.exists(checkpoint_key) else None
        with session_scope() as session:  # epochs after the checkpoint were not finished; forget them
            done = int(resume["epoch"]) if resume else 0
            _update_ours(session, job, epochs_done=done)
            session.execute(delete(JobMetric).where(JobMetric.job_id == job_id, JobMetric.epoch > done))
        if resume:
            log.info("job %s: resuming after epoch %d", job_id, done)
        reporter = trial.reporter(job) if trial is not None and job.sweep_id else None

        def on_epoch(metrics: EpochMetrics, checkpoint) -> None:
            # The row first: killed between the two, the next delivery resumes from the previous checkpoint,
            # forgets this row and trains the epoch again. The other order would resume after an epoch whose
            # row was never written.
            ended = time.time_ns()
            record_span("epoch", ended - int(metrics.seconds * 1e9), ended, **{
                "trainserve.epoch": metrics.epoch, "trainserve.train_loss": metrics.train_loss,
                "trainserve.samples_per_second": metrics.samples_per_second})
            worker.epoch_seconds.labels(*labels).observe(metrics.seconds)
            worker.samples.labels(*labels).inc(metrics.samples_per_second * metrics.seconds)
            _record_epoch(job, metrics)
            started = time.perf_counter()
            with span("checkpoint", **{"trainserve.epoch": metrics.epoch}):
                store.put(checkpoint_key, checkpoint_to_bytes(checkpoint()))
            worker.checkpoint_seconds.labels(*labels).observe(time.perf_counter() - started)
            if reporter is not None:  # a sweep's trial: its pruner may stop it here (optuna.TrialPruned)
                reporter(metrics.epoch, metrics)

        worker = metrics()
        train_config = TrainConfig.from_dict(training.model_dump())
        train_config.cancel_check_seconds = get_settings().stop_check_seconds
        device = resolve_device(train_config.device)
        if device.type == "cuda":  # several jobs may share this GPU (trainserve worker --concurrency)
            _check_gpu_memory(model, plan.train, train_config.batch_size or len(plan.train), device)
        with span("train", **{"trainserve.epochs": training.epochs}):
            fitted = fit(model, optimizer, plan.train, plan.validation, train_config, on_epoch=on_epoch,
                         should_stop=monitor, resume=resume, on_step=monitor.at_step)
        with span("evaluate"):
            report = plan.report(model, device, train_config.loss)
        report.update(best_epoch=fitted.best_epoch, stopped_early=fitted.stopped_early,
                      training_path=fitted.path.to_dict())
        if job.sweep_id:  # the sweep registers its best trial's model when it ends
            _keep_trial_model(job, plan, model, report, store)
            outcome = "succeeded"
            store.delete(checkpoint_key)
            log.info("job %s: trial %d of sweep %s succeeded: %s", job_id, job.trial_number, job.sweep_id,
                     _headline(report))
            return
        with span("registration") as registration:
            model_id = _register(job, spec, plan, model, report, store)
            registration.set_attribute("trainserve.model_id", str(model_id))
        outcome = "succeeded"
        store.delete(checkpoint_key)
        try:
            with span("export"):  # sent to the export queue; the export worker's spans follow in this trace
                enqueue_export(model_id)
        except Exception:  # the model is registered and served; its exports can be asked for again
            log.exception("job %s: could not ask for the exports of model %s", job_id, model_id)
        log.info("job %s: succeeded: %s", job_id, _headline(report))
    except JobLost:
        outcome = "lost"
        log.warning("job %s: attempt %d no longer owns the job (finished, or claimed again after this worker "
                    "went silent); stopping without writing", job_id, job.attempts)
    except optuna.TrialPruned as exc:
        outcome = "pruned"
        _finish(job, JobStatus.pruned, error=str(exc))
        store.delete(checkpoint_key)
        log.info("job %s: %s", job_id, exc)
    except TrainingCancelled:
        outcome = "cancelled"
        _finish(job, JobStatus.cancelled)
        store.delete(checkpoint_key)
        log.info("job %s: cancelled", job_id)
    except WorkerShutdown:
        outcome = "requeued"
        with session_scope() as session:
            requeued = session.execute(update(TrainingJob).where(_ours(job))
                                       .values(status=JobStatus.queued, heartbeat_at=None, enqueued_at=None)).rowcount
            if requeued:
                events.status(session, job_id, JobStatus.queued, reason="its worker stopped; it resumes from its "
                              "last checkpoint")
        if requeued:
            _send_again(job_id, job.queue)
        log.info("job %s: worker shutting down; back in the queue, it resumes from its last checkpoint", job_id)
    except GpuMemoryShort as exc:
        outcome = "requeued"
        with session_scope() as session:  # enqueued_at empty: the reconciler's next pass sends it again
            if session.execute(update(TrainingJob).where(_ours(job)).values(
                    status=JobStatus.queued, heartbeat_at=None, enqueued_at=None)).rowcount:
                events.status(session, job_id, JobStatus.queued, reason=str(exc))
        log.info("job %s: back in the queue: %s", job_id, exc)
    except (TrainingDiverged, ValueError, FileNotFoundError) as exc:  # the message says what to change
        _finish(job, JobStatus.failed, error=str(exc))
        log.warning("job %s: failed: %s", job_id, exc)
    except Exception as exc:
        _finish(job, JobStatus.failed, error=f"training failed unexpectedly ({type(exc).__name__}: {exc}); "
                                              "the worker log has the traceback")
        log.exception("job %s: failed", job_id)
    finally:
        metrics().finished.labels(*labels, outcome).inc()
        if trial is not None and job.sweep_id and outcome in ("succeeded", "failed", "cancelled", "pruned"):
            try:  # the next trial starts now, not at the reconciler's next pass
                trial.ended(job, store)
            except Exception:
                log.exception("job %s: could not advance sweep %s; the reconciler will", job_id, job.sweep_id)
        if labels != ("unknown", "unknown"):
            metrics().running.labels(*labels).dec()
