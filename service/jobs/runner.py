"""Runs one training job in the worker: claims it (service/jobs/lifecycle.py), then the training path: plan,
build, resume, fit, evaluate and hand the trained model to the job's hooks, which register it.

What happens around the run is the hooks' decision (:class:`JobHooks`): a plain job's model is registered as
a new version; a caller may pass other hooks that report each epoch (and may stop the run with
``StopTrial``), keep the model somewhere else, and act once the job has ended. This module knows nothing of
who those callers are.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import torch
from sqlalchemy import delete, select

from models.architectures import build_model
from models.drift import profile_of
from models.errors import ConfigError
from models.export import checkpoint_from_bytes, checkpoint_to_bytes, model_to_bytes, tensor_to_bytes
from models.metrics import CHANCE_MARGIN, chance_accuracy
from models.optimizers import build_optimizer
from models.training import EpochMetrics, TrainingCancelled, TrainingDiverged, fit, resolve_device, seed_everything
from models.usage import gpu_memory_free, gpu_memory_needed
from service.jobs import translate
from service.jobs.lifecycle import (
    GpuMemoryShort,
    JobLost,
    JobMonitor,
    JobRefused,
    Requeue,
    StopTrial,
    claim,
    finish,
    finish_in,
    record_epoch,
    requeue,
    update_ours,
)
from service.jobs.plans import Plan, plan_for
from service.jobs.spec import JobSpec
from service.observability import logs
from service.observability.tracing import record_span, span
from service.observability.worker_metrics import metrics
from service.platform.queue import enqueue_export
from service.platform.runtime import Runtime
from service.platform.settings import worker_threads
from service.platform.tables import JobMetric, JobStatus, TrainedModel, TrainingJob
from service.registry import service as registry

log = logging.getLogger(__name__)
EXPORT_CHECK_INPUTS = 256  # held-out inputs saved with a model, that its exports are checked on
USER_ERRORS = (JobRefused, ConfigError, TrainingDiverged)  # their message says what to change


@dataclass
class Trained:
    """A job's trained model, on its way to the hooks."""

    job: TrainingJob
    spec: JobSpec
    plan: Plan
    model: torch.nn.Module
    report: dict

    def model_file(self) -> bytes:
        return model_to_bytes(self.model, self.plan.final_config())

    def held_out(self) -> bytes:
        """Inputs from the test part, saved with the model: its exports are checked on them."""
        return tensor_to_bytes(self.plan.held_out[:EXPORT_CHECK_INPUTS])

    def profile(self) -> dict | None:
        """A classifier's reference profile of its test part, that live drift is measured against."""
        if self.plan.task != "classification":
            return None
        config = self.plan.final_config()
        return profile_of(self.model, self.plan.held_out, config.input_shape, config.value_range, config.num_classes)


class JobHooks:
    """What happens around a job's run. These, a plain job's: nothing after each epoch, and the model
    registered as the next version under the job's name (with its gated promotion), then its exports asked
    for."""

    def after_epoch(self, job: TrainingJob, metrics: EpochMetrics) -> None:
        """After each epoch's row and checkpoint are written; raise :class:`StopTrial` to stop here."""

    def hand_off(self, runtime: Runtime, trained: Trained) -> None:
        """Take the trained model and mark the job succeeded (``finish_in``), in one transaction; a classifier
        no better than chance is refused instead (the job fails saying so), so that it never becomes a
        version that /predict might answer with."""
        job, spec, plan = trained.job, trained.spec, trained.plan
        if (reason := no_better_than_chance(trained.report, spec)) is not None:
            raise JobRefused(reason)
        config = plan.final_config()

        def succeed(session, result: dict) -> None:
            model_id = session.scalar(select(TrainedModel.id).where(TrainedModel.job_id == job.id))
            finish_in(session, job, JobStatus.succeeded, model_id=model_id, result=result)

        version = registry.NewVersion(
            name=spec.name or f"{job.dataset.name}-{config.architecture}", task=plan.task, job_id=job.id,
            dataset_id=job.dataset_id, config=config, data=trained.model_file(), held_out=trained.held_out(),
            metrics=trained.report, promote=spec.promote, profile=trained.profile())
        with span("registration") as registration:
            model_id = registry.register_version(runtime, version, succeed)
            registration.set_attribute("trainserve.model_id", str(model_id))
        try:
            with span("export"):  # sent to the export queue; the export worker's spans follow in this trace
                enqueue_export(runtime.celery, model_id)
        except Exception:  # the model is registered and served; its exports can be asked for again
            log.exception("job %s: could not ask for the exports of model %s", job.id, model_id)

    def ended(self, runtime: Runtime, job: TrainingJob) -> None:
        """Once the job has reached a final status in this delivery."""


def no_better_than_chance(report: dict, spec: JobSpec) -> str | None:
    """Why a classifier must not be registered: its test accuracy is within CHANCE_MARGIN of always
    answering the most common test label (a diverged run lands there). None for a useful one, and for
    forecasters, which are judged against their own baselines."""
    chance, accuracy = chance_accuracy(report), report.get("test_accuracy")
    if accuracy is None or chance is None or accuracy > chance + CHANCE_MARGIN:
        return None
    rate = spec.training.learning_rate
    return (f"the model learned nothing: test accuracy {accuracy:.4f}, no better than always answering the most "
            f"common label ({chance:.4f}); it was not registered. Lower the learning rate"
            f"{f' (it is {rate:g})' if rate else ''}, train longer, or check the dataset's labels")


def plain_hooks(runtime: Runtime, job: TrainingJob) -> JobHooks:
    return JobHooks()


def run_job(runtime: Runtime, job_id: uuid.UUID, shutting_down: threading.Event,
            hooks_for: Callable[[Runtime, TrainingJob], JobHooks] = plain_hooks) -> None:
    """Claim the job and run it, if it is ours to run. ``hooks_for(runtime, job)``: the hooks for the claimed
    job (the worker's give a sweep's trial its sweep's)."""
    token = logs.job_id.set(str(job_id))
    try:
        with span("claim", **{"trainserve.job_id": str(job_id)}) as claimed:
            job = claim(runtime, job_id)
            claimed.set_attribute("trainserve.claimed", job is not None)
        if job is None:
            log.info("job %s: not queued (done, cancelled, running elsewhere or gone); nothing to do", job_id)
            return
        torch.set_num_threads(worker_threads(runtime.settings))
        with JobMonitor(runtime, job, shutting_down) as monitor:
            _run_claimed(runtime, job, monitor, hooks_for)
    finally:
        logs.job_id.reset(token)


def _labels(spec: JobSpec) -> tuple[str, str]:
    """The job's architecture and device, as the worker's metrics label them."""
    return spec.architecture.type, resolve_device(spec.training.device).type


def _checkpoint_key(job: TrainingJob) -> str:
    return f"jobs/{job.id}/checkpoint.pt"


def _run_claimed(runtime: Runtime, job: TrainingJob, monitor: JobMonitor, hooks_for) -> None:
    """The job's outcome, from how its training path ended."""
    store, labels, outcome, hooks = runtime.store, ("unknown", "unknown"), "failed", None
    try:
        hooks = hooks_for(runtime, job)
        spec = JobSpec.model_validate(job.spec)
        labels = _labels(spec)
        metrics().started.labels(*labels).inc()
        metrics().running.labels(*labels).inc()
        report = _train(runtime, job, spec, monitor, hooks, labels)
        outcome = "succeeded"
        log.info("job %s: succeeded: %s", job.id, report)
    except JobLost:
        outcome = "lost"
        log.warning("job %s: attempt %d no longer owns the job (finished, or claimed again after this worker "
                    "went silent); stopping without writing", job.id, job.attempts)
    except StopTrial as exc:
        outcome = "pruned"
        finish(runtime, job, JobStatus.pruned, error=str(exc))
        log.info("job %s: %s", job.id, exc)
    except TrainingCancelled:
        outcome = "cancelled"
        finish(runtime, job, JobStatus.cancelled)
        log.info("job %s: cancelled", job.id)
    except Requeue as exc:
        outcome = "requeued"
        requeue(runtime, job, exc)
        log.info("job %s: back in the queue: %s", job.id, exc)
    except USER_ERRORS as exc:
        finish(runtime, job, JobStatus.failed, error=str(exc))
        log.warning("job %s: failed: %s", job.id, exc)
    except Exception as exc:
        incident = uuid.uuid4().hex[:12]
        finish(runtime, job, JobStatus.failed, error=f"training failed unexpectedly ({type(exc).__name__}); this "
                                                      f"is trainserve's fault, not the job's: the worker log has "
                                                      f"the traceback under incident {incident}")
        log.exception("job %s: failed unexpectedly (incident %s)", job.id, incident)
    finally:
        metrics().finished.labels(*labels, outcome).inc()
        if outcome in ("succeeded", "cancelled", "pruned"):  # a failed job keeps its last checkpoint
            store.delete(_checkpoint_key(job))
        if hooks is not None and outcome in ("succeeded", "failed", "cancelled", "pruned"):
            try:
                hooks.ended(runtime, job)
            except Exception:
                log.exception("job %s: its end hook failed", job.id)
        if labels != ("unknown", "unknown"):
            metrics().running.labels(*labels).dec()


def _check_gpu_memory(model: torch.nn.Module, data, batch_size: int, device: torch.device) -> None:
    need = gpu_memory_needed(model, data.x, data.y, batch_size)
    free, total = gpu_memory_free(device)
    mib = 2**20
    if need > total:
        raise JobRefused(f"this job needs about {need // mib:,} MiB of GPU memory and the GPU has {total // mib:,} "
                         "MiB in all; use a smaller batch_size or model, or device cpu")
    if need > free:
        raise GpuMemoryShort(f"the GPU has {free // mib:,} MiB free and this job needs about {need // mib:,} MiB; "
                             "it waits in the queue until jobs sharing the GPU finish")


def _headline(report: dict) -> str:
    if "test_accuracy" in report:
        return f"test accuracy {report['test_accuracy']:.4f}"
    return (f"test RMSE {report['model']['rmse']:.4g} (persistence "
            f"{report['persistence']['rmse'] if report['persistence'] else float('nan'):.4g})")


def _train(runtime: Runtime, job: TrainingJob, spec: JobSpec, monitor: JobMonitor, hooks: JobHooks,
           labels: tuple[str, str]) -> str:
    """The training path, top to bottom; returns the headline of the test report."""
    store, training, checkpoint_key = runtime.store, spec.training, _checkpoint_key(job)
    with span("data load", **{"trainserve.dataset": job.dataset.name}):
        plan = plan_for(spec, job.dataset, store)
    if plan.config is None:  # a forecasting baseline: nothing to train, only its report
        report = plan.report(None, None, training.loss)
        finish(runtime, job, JobStatus.succeeded, result=report)
        return f"baseline {spec.architecture.type} evaluated"
    seed_everything(training.seed)
    model = build_model(plan.config)
    optimizer = build_optimizer(spec.optimizer.type, model.parameters(), training.learning_rate,
                                **translate.optimizer_options(spec))
    resume = checkpoint_from_bytes(store.get(checkpoint_key)) if store.exists(checkpoint_key) else None
    with runtime.session() as session:  # epochs after the checkpoint were not finished; forget them
        done = int(resume["epoch"]) if resume else 0
        update_ours(session, job, epochs_done=done)
        session.execute(delete(JobMetric).where(JobMetric.job_id == job.id, JobMetric.epoch > done))
    if resume:
        log.info("job %s: resuming after epoch %d", job.id, done)
    worker = metrics()

    def on_epoch(epoch: EpochMetrics, checkpoint) -> None:
        # The row first: killed between the two, the next delivery resumes from the previous checkpoint,
        # forgets this row and trains the epoch again. The other order would resume after an epoch whose
        # row was never written.
        ended = time.time_ns()
        record_span("epoch", ended - int(epoch.seconds * 1e9), ended, **{
            "trainserve.epoch": epoch.epoch, "trainserve.train_loss": epoch.train_loss,
            "trainserve.samples_per_second": epoch.samples_per_second})
        worker.epoch_seconds.labels(*labels).observe(epoch.seconds)
        worker.samples.labels(*labels).inc(epoch.samples_per_second * epoch.seconds)
        record_epoch(runtime, job, epoch)
        started = time.perf_counter()
        with span("checkpoint", **{"trainserve.epoch": epoch.epoch}):
            store.put(checkpoint_key, checkpoint_to_bytes(checkpoint()))
        worker.checkpoint_seconds.labels(*labels).observe(time.perf_counter() - started)
        hooks.after_epoch(job, epoch)  # may stop the run here (StopTrial)

    train_config = translate.train_config(spec, runtime.settings.stop_check_seconds)
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
    hooks.hand_off(runtime, Trained(job, spec, plan, model, report))
    return _headline(report)
