"""Training jobs: create, read, cancel, and resend the ones the broker lost. Services flush; routes commit."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.architectures import parameter_count
from models.datasets import builtin_missing
from models.second_order import BFGS_MAX_PARAMS, bfgs_too_large
from service.datasets.schemas import DatasetRef
from service.datasets.service import builtin_stats, has_test_set, resolve_dataset
from service.http.errors import Conflict, InvalidInput, NotFound
from service.http.pagination import newest_first
from service.http.ratelimit import RateLimited
from service.jobs import events, translate
from service.jobs.schemas import EpochMetricsOut, JobOut, ModelRef, Progress
from service.jobs.spec import JobSpec
from service.platform.queue import job_queue
from service.platform.settings import Settings
from service.platform.tables import Dataset, JobMetric, JobStatus, TrainingJob, utcnow

log = logging.getLogger(__name__)


def check_job(session: Session, spec: JobSpec, settings: Settings) -> tuple[Dataset, str]:
    """Everything a job is checked against before it is accepted (its dataset, the model's size, a worker for
    its device): the dataset and the queue, or InvalidInput/NotFound saying what to change."""
    dataset = resolve_dataset(session, spec.dataset)
    _check_dataset_fits(session, spec, dataset)
    _check_model_fits(session, spec, dataset, settings.max_model_parameters)
    queue = job_queue(spec.training.device, settings)
    if queue is None:
        raise InvalidInput("training.device cuda: no GPU worker takes jobs in this deployment; use device auto "
                           "(a GPU where there is one) or cpu, or run GPU workers and set TRAINSERVE_GPU_WORKERS=true",
                           details=[{"field": "training.device", "message": "no GPU workers"}])
    return dataset, queue


def create_job(session: Session, spec: JobSpec, settings: Settings, key_id: uuid.UUID | None = None,
               **sweep: object) -> TrainingJob:
    """A queued job, flushed; ``sweep``: a trial's sweep_id and trial_number."""
    dataset, queue = check_job(session, spec, settings)
    job = TrainingJob(spec=spec.model_dump(mode="json"), dataset=dataset, epochs_total=spec.training.epochs,
                      status=JobStatus.queued, enqueued_at=utcnow(), queue=queue, key_id=key_id, **sweep)
    session.add(job)
    label = f"{dataset.name}@{dataset.version}"  # read now: the rollback below expires the row
    try:
        # The insert takes the dataset row's key-share lock (PostgreSQL) or the write lock (SQLite), so a delete
        # of the dataset either waits for this job and then sees it, or committed first and the insert fails.
        # Not a savepoint: on SQLite (pysqlite) the first SAVEPOINT of a transaction begins it, and its release
        # would commit the job before the request's own commit (an Idempotency-Key race then made four jobs).
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"dataset {label} was deleted while this job was being submitted; "
                       "upload it again, or name another") from None
    events.status(session, job.id, JobStatus.queued)
    return job


def check_queued_cap(session: Session, key_id: uuid.UUID | None, cap: int) -> None:
    """One key may have at most ``cap`` jobs queued at once (0: no cap); a key's backlog cannot starve others."""
    if key_id is None or cap == 0:
        return
    queued = session.scalar(select(func.count()).select_from(TrainingJob).where(
        TrainingJob.key_id == key_id, TrainingJob.status == JobStatus.queued)) or 0
    if queued >= cap:
        raise RateLimited(f"this key has {queued} jobs queued, the most it may (TRAINSERVE_MAX_QUEUED_JOBS_PER_KEY); "
                          "wait for some to start, or cancel some", headers={"Retry-After": "60"})


def _check_dataset_fits(session: Session, spec: JobSpec, dataset: Dataset) -> None:
    label = f"{dataset.name}@{dataset.version}"
    if dataset.source == "builtin" and (missing := builtin_missing(dataset.name)) is not None:
        raise InvalidInput(f"dataset {dataset.name} is not installed on this server: {missing}; or train on "
                           "digits or mnist-5k, which every server has",
                           details=[{"field": "dataset", "message": "not installed"}])
    if spec.task == "classification" and dataset.task != "classification":
        raise InvalidInput(f"dataset {label} is a time series; a classification job needs images with labels "
                           "(digits, mnist-5k, fashion-mnist or an image upload), or set \"task\": \"forecast\"",
                           details=[{"field": "dataset", "message": "not an image dataset"}])
    if spec.training.test_split == 0 and not has_test_set(dataset):
        raise InvalidInput(f"training.test_split 0: dataset {label} has no test set of its own; set test_split to "
                           "0.05-0.5 (default 0.2) to hold out a random part, or upload the data with its test part "
                           "(see docs/datasets.md)", details=[{"field": "training.test_split",
                                                               "message": "the dataset has no test set"}])
    if spec.task == "forecast":
        if dataset.task != "forecast":
            raise InvalidInput(f"dataset {label} holds images; a forecast job needs a time series (solar, or an "
                               "uploaded CSV with a timestamp column)",
                               details=[{"field": "dataset", "message": "not a time series"}])
        builtin_stats(session, dataset)
        columns = list((dataset.stats or {}).get("columns", {}))
        for field, names in (("forecast.target", [spec.forecast.target]), ("forecast.inputs", spec.forecast.inputs)):
            unknown = [n for n in names if n not in columns]
            if unknown and columns:
                raise InvalidInput(f"{field}: {', '.join(map(repr, unknown))} is not a column of {label}; its columns "
                                   f"are {', '.join(columns)}", details=[{"field": field, "message": "unknown column"}])


# Per parameter, besides the weights and their gradients: what each optimizer keeps (momentum, running
# averages, L-BFGS's history of 10 pairs, the line searches' copies). An estimate, for the refusal's message.
STATE_COPIES = {"sgd": 1, "adagrad": 1, "rmsprop": 2, "adam": 2, "lbfgs": 22, "newton": 2, "conjugate_gradient": 3,
                "bfgs": 2}


def _check_model_fits(session: Session, spec: JobSpec, dataset: Dataset, max_parameters: int) -> None:
    """Count the model's parameters before it is queued (on PyTorch's meta device: nothing is allocated):
    refused when it is larger than a worker takes, or, for bfgs, whose dense matrix grows with the square of
    the count, larger than bfgs can hold."""
    architecture = spec.architecture.type
    if architecture in ("persistence", "seasonal_naive"):
        return
    if spec.task == "forecast":
        config = translate.forecaster_config(spec, translate.forecast_setup(spec))
    else:
        builtin_stats(session, dataset)
        stats = dataset.stats or {}
        config = translate.model_config(spec, tuple(stats.get("shape", (1, 28, 28))),
                                        len(stats.get("classes", range(10))), (0.0, 1.0))
    n = parameter_count(config)
    if n > max_parameters:
        optimizer = spec.optimizer.type
        gigabytes = n * 4 * (2 + STATE_COPIES.get(optimizer, 2)) / 1e9
        raise InvalidInput(f"architecture: this {architecture} has {n:,} parameters (about {gigabytes:,.1f} GB to "
                           f"train with {optimizer}: weights, gradients and the optimizer's state), more than the "
                           f"{max_parameters:,} a worker takes (TRAINSERVE_MAX_MODEL_PARAMETERS); make it smaller",
                           details=[{"field": "architecture", "message": "model too large"}])
    if spec.optimizer.type == "bfgs" and n > BFGS_MAX_PARAMS:
        raise InvalidInput(bfgs_too_large(n), details=[{"field": "optimizer.type", "message": "model too large "
                                                        "for bfgs"}])


def get_job(session: Session, job_id: uuid.UUID) -> TrainingJob:
    job = session.get(TrainingJob, job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id}")
    return job


def list_jobs(session: Session, status: JobStatus | None, limit: int, offset: int) -> tuple[list[TrainingJob], int]:
    query = select(TrainingJob)
    if status is not None:
        query = query.where(TrainingJob.status == status)
    return newest_first(session, query, TrainingJob, limit, offset)


def job_metrics(session: Session, job_id: uuid.UUID) -> list[JobMetric]:
    get_job(session, job_id)
    return list(session.scalars(select(JobMetric).where(JobMetric.job_id == job_id).order_by(JobMetric.epoch)))


def cancel_job(session: Session, job_id: uuid.UUID) -> TrainingJob:
    """A queued job is cancelled at once; a running one is asked to stop at its next batch."""
    job = get_job(session, job_id)
    if job.status.finished:
        raise Conflict(f"job {job_id} has already {job.status.value}; there is nothing to cancel")
    # Conditional updates: a worker may claim or finish the job between the read above and these writes.
    queued = session.execute(
        update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.status == JobStatus.queued)
        .values(status=JobStatus.cancelled, cancel_requested=True, finished_at=utcnow())
    ).rowcount
    if queued:
        events.status(session, job_id, JobStatus.cancelled)
    else:
        session.execute(update(TrainingJob).where(TrainingJob.id == job_id, TrainingJob.status == JobStatus.running)
                        .values(cancel_requested=True))
    session.refresh(job)
    return job


def latest_metrics(session: Session, job: TrainingJob) -> JobMetric | None:
    return session.scalar(select(JobMetric).where(JobMetric.job_id == job.id).order_by(JobMetric.epoch.desc()).limit(1))


def job_out(session: Session, job: TrainingJob) -> JobOut:
    latest = latest_metrics(session, job)
    model = job.model
    return JobOut(
        id=job.id,
        status=job.status,
        spec=JobSpec.model_validate(job.spec),
        dataset=DatasetRef(id=job.dataset.id, name=job.dataset.name, version=job.dataset.version)
        if job.dataset else None,
        progress=Progress(epoch=job.epochs_done, epochs=job.epochs_total),
        latest_metrics=EpochMetricsOut.model_validate(latest) if latest else None,
        result=job.result,
        error=job.error,
        cancel_requested=job.cancel_requested,
        attempts=job.attempts,
        queue=job.queue,
        model=ModelRef(id=model.id, name=model.name, version=model.version) if model else None,
        sweep_id=job.sweep_id,
        trial_number=job.trial_number,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def job_counts(session: Session) -> dict[str, int]:
    """How many jobs are in each status (every status, zeros included)."""
    counts = dict(session.execute(select(TrainingJob.status, func.count()).group_by(TrainingJob.status)).all())
    return {status.value: counts.get(status, 0) for status in JobStatus}


def job_ages(session: Session, now: datetime, stale_after: timedelta) -> tuple[float, int]:
    """How long the oldest queued job has waited (seconds; 0 with none queued), and how many running jobs'
    workers have gone silent (no heartbeat for ``stale_after``): for /metrics' alerts."""
    oldest = session.scalar(select(func.min(TrainingJob.created_at)).where(TrainingJob.status == JobStatus.queued))
    silent = session.scalar(select(func.count()).where(TrainingJob.status == JobStatus.running,
                                                       TrainingJob.heartbeat_at < now - stale_after))
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=now.tzinfo)
    return (max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0), int(silent or 0)


def jobs_to_resend(session: Session, now: datetime, stale_after: timedelta, max_attempts: int,
                   resend_after: timedelta | None = None,
                   every_queued_job: bool = False) -> list[tuple[uuid.UUID, str | None]]:
    """Find the work the broker may have lost and put it back in order; returns the jobs to send again, each
    with its queue.

    - A queued job that has not started ``resend_after`` (default: ``stale_after``) after its message was
      sent is sent again, and again after twice as long, up to every ``stale_after``: a broker that lost its
      messages costs a minute, while a job that merely waits in a long queue gets few duplicates. A
      duplicate is harmless: only one worker can claim a queued job.
    - ``every_queued_job``: all of them now (the broker restarted, or is back after an outage).
    - A running job whose worker has not written a heartbeat for ``stale_after`` is queued again, to resume
      from its last checkpoint, or failed once it has used up ``max_attempts`` deliveries.
    """
    resend_after = resend_after or stale_after
    cutoff = now - stale_after
    stale_running = session.scalars(select(TrainingJob).where(
        TrainingJob.status == JobStatus.running, TrainingJob.heartbeat_at < cutoff)).unique()
    for job in stale_running:
        if job.attempts >= max_attempts:
            job.status, job.finished_at = JobStatus.failed, now
            job.error = (f"the worker running this job stopped responding {job.attempts} times (last heartbeat "
                         f"{job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC); check the worker logs for crashes or "
                         "out-of-memory kills, then submit the job again")
            events.status(session, job.id, JobStatus.failed, error=job.error)
        else:
            job.status, job.enqueued_at = JobStatus.queued, None  # resend it in this same pass
            log.warning("job %s: worker silent since %s, queueing it again", job.id, job.heartbeat_at)
            events.status(session, job.id, JobStatus.queued, reason="its worker went silent; it resumes from "
                          "its last checkpoint")
    session.flush()
    query = select(TrainingJob.id, TrainingJob.queue, TrainingJob.created_at, TrainingJob.enqueued_at).where(
        TrainingJob.status == JobStatus.queued)
    if not every_queued_job:
        query = query.where(TrainingJob.enqueued_at.is_(None) | (TrainingJob.enqueued_at <= now - resend_after))
    lost = []
    for row in session.execute(query):
        sent = row.enqueued_at
        wait = min(stale_after, max(resend_after, sent - row.created_at)) if sent is not None else timedelta(0)
        if every_queued_job or sent is None or now - sent >= wait:
            lost.append((row.id, row.queue))
    if lost:
        session.execute(update(TrainingJob).where(TrainingJob.id.in_([job_id for job_id, _ in lost]))
                        .values(enqueued_at=now))
    return lost
