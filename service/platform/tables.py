"""Database tables. They are created and changed only by the Alembic migrations in ``migrations/``."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every database; SQLite stores them without the zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime}


class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    pruned = "pruned"  # a sweep's trial its pruner stopped at an epoch's end; its metrics are kept

    @property
    def finished(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled, JobStatus.pruned)


class Dataset(Base):
    __tablename__ = "datasets"
    # The same content under one name is one version: a second upload finds the first.
    __table_args__ = (UniqueConstraint("name", "version"), UniqueConstraint("name", "sha256", name="uq_datasets_name_sha256"))

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer, default=1)
    source: Mapped[str] = mapped_column(String(20))  # "builtin", "upload" or "import"
    task: Mapped[str] = mapped_column(String(20))  # "classification" or "forecast"
    description: Mapped[str] = mapped_column(Text, default="")
    format: Mapped[str | None] = mapped_column(String(20))  # idx, npz, image_csv, image_zip, timeseries_csv
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)  # of the files as accepted
    size_bytes: Mapped[int | None]
    # The files as accepted: [{"name", "key", "sha256", "size_bytes"}], kept byte for byte.
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    data_key: Mapped[str | None] = mapped_column(String(500))  # the canonical .npz that workers load
    data_sha256: Mapped[str | None] = mapped_column(String(64))
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    source_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingJob(Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    status: Mapped[JobStatus] = mapped_column(Enum(JobStatus, name="job_status", native_enum=False, length=20),
                                              default=JobStatus.queued, index=True)
    spec: Mapped[dict[str, Any]]
    # NULL once the dataset was deleted after the job finished; the spec still names it.
    dataset_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("datasets.id"))
    epochs_total: Mapped[int]
    epochs_done: Mapped[int] = mapped_column(default=0)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    attempts: Mapped[int] = mapped_column(default=0)
    # The broker queue the job was sent to: the CPU queue or the GPU queue (NULL: sent before queues had a
    # choice, i.e. the CPU queue).
    queue: Mapped[str | None] = mapped_column(String(200))
    key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)  # the API key that submitted it
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    enqueued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    # A sweep's trial: the sweep, and the trial's number in it (Optuna's, from 0).
    sweep_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("sweeps.id"), index=True)
    trial_number: Mapped[int | None]

    dataset: Mapped[Dataset | None] = relationship(lazy="joined")
    model: Mapped["TrainedModel | None"] = relationship(back_populates="job", lazy="joined", uselist=False)
    metrics: Mapped[list["JobMetric"]] = relationship(order_by="JobMetric.epoch", cascade="all, delete-orphan",
                                                      lazy="raise")


class Sweep(Base):
    """A hyperparameter search: trials are ordinary jobs (``TrainingJob.sweep_id``); Optuna's study, in its own
    tables, holds the sampler's and the pruner's view of them (service/sweeps)."""

    __tablename__ = "sweeps"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))  # the model name the best trial is registered under
    status: Mapped[str] = mapped_column(String(20), default="running", index=True)  # running, succeeded, failed, cancelled
    request: Mapped[dict[str, Any]]  # the sweep as accepted: base spec, space, metric, sampler, budget, pruner
    study_name: Mapped[str] = mapped_column(String(200))
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    best_job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    model_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # at the end: the best trial, the promotion
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # Written first by every pass that advances the sweep: the write lock that keeps two passes (an API
    # process's reconciler, a worker that finished a trial) from launching the same free slot twice.
    advanced_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class EventColumns:
    """An event's own columns: its number within its owner (from 1, no gaps), kind, data and time."""

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(20))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SweepEvent(EventColumns, Base):
    """What happened to a sweep, in order: each trial launched and ended, and the sweep's own status; the
    same shape and numbering as :class:`JobEvent`, written under the sweep's row lock."""

    __tablename__ = "sweep_events"
    OWNER = "sweep_id"  # service/platform/events.py

    sweep_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True)


class JobEvent(EventColumns, Base):
    """What happened to a job, in order: status changes, progress within an epoch, each epoch's metrics.
    ``seq`` counts from 1 for each job, and is the event's id on ``GET /v1/jobs/{id}/events``. Each is
    written in the transaction of the change it tells of, which also updates the job's row: writers of
    one job take turns, so ``seq`` has no gaps."""

    __tablename__ = "job_events"
    OWNER = "job_id"  # service/platform/events.py

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)


class JobMetric(Base):
    __tablename__ = "job_metrics"
    __table_args__ = (UniqueConstraint("job_id", "epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int]
    train_loss: Mapped[float] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    val_accuracy: Mapped[float | None] = mapped_column(Float)
    learning_rate: Mapped[float] = mapped_column(Float)
    samples_per_second: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)
    train_accuracy: Mapped[float | None] = mapped_column(Float)
    cpu_seconds: Mapped[float | None] = mapped_column(Float)
    peak_rss_bytes: Mapped[int | None] = mapped_column(BigInteger)
    gpu_name: Mapped[str | None] = mapped_column(String(200))
    gpu_peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    gpu_utilization: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainedModel(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int]
    task: Mapped[str] = mapped_column(String(20), index=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id"), unique=True)
    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("datasets.id"))
    architecture: Mapped[str] = mapped_column(String(50))
    input_shape: Mapped[list[int]] = mapped_column(JSON)  # e.g. [1, 8, 8]
    value_range: Mapped[list[float]] = mapped_column(JSON)  # e.g. [0, 16]: the pixel scale /predict takes
    num_classes: Mapped[int]
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    artifact_key: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int]
    # Per format ("torchscript", "onnx"): {"status": "ok"|"failed", "key", "sha256", "max_abs_difference", "error"}
    exports: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # A classifier's reference profile of its test part, that live traffic's drift is measured against
    # (models/drift.py); None for forecasters and for versions registered before it was kept.
    profile: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    job: Mapped[TrainingJob] = relationship(back_populates="model")
    dataset: Mapped[Dataset] = relationship(lazy="joined")
    aliases: Mapped[list["ModelAlias"]] = relationship(back_populates="model", lazy="selectin",
                                                       order_by="ModelAlias.alias")


class ModelAlias(Base):
    """A movable name for one version of a model: ``digits-mlp@production``."""

    __tablename__ = "model_aliases"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    model: Mapped[TrainedModel] = relationship(back_populates="aliases")


class Rollout(Base):
    """A candidate version taking over ``name@alias`` step by step (service/rollouts): a share of live traffic
    (canary) or a mirror of it (shadow), judged at each step on the counts the API replicas add to
    :class:`RolloutCount`. The alias moves only when the last step passes."""

    __tablename__ = "rollouts"
    # One rollout at a time per alias: a second one running or paused on the same alias breaks this index.
    __table_args__ = (Index("ix_rollouts_active_alias", "name", "alias", unique=True,
                            sqlite_where=text("status IN ('running', 'paused')"),
                            postgresql_where=text("status IN ('running', 'paused')")),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), index=True)
    alias: Mapped[str] = mapped_column(String(64))
    stable_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("models.id"))
    candidate_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("models.id"))
    mode: Mapped[str] = mapped_column(String(20))  # canary, shadow
    request: Mapped[dict[str, Any]]  # the rollout as accepted: steps, gates, compare share
    status: Mapped[str] = mapped_column(String(20), default="running", index=True)  # running, paused, succeeded, rolled_back
    step: Mapped[int] = mapped_column(default=0)  # the index of the step running now
    step_started_at: Mapped[datetime] = mapped_column(default=utcnow)
    reason: Mapped[str | None] = mapped_column(Text)  # why it ended
    key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # Written first by every pass that judges the rollout: the write lock that keeps two replicas from
    # deciding the same step twice.
    judged_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    stable: Mapped[TrainedModel] = relationship(foreign_keys=[stable_id], lazy="joined")
    candidate: Mapped[TrainedModel] = relationship(foreign_keys=[candidate_id], lazy="joined")


class RolloutEvent(EventColumns, Base):
    """What happened to a rollout, in order: its status, each step begun, each verdict with its numbers."""

    __tablename__ = "rollout_events"
    OWNER = "rollout_id"  # service/platform/events.py

    rollout_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True)


class RolloutCount(Base):
    """What one API replica saw of one arm of a rollout's step in a few seconds: added, never updated, so
    replicas never wait on each other; the judge sums them. ``latency`` is a fixed-bucket histogram
    (service/serving/rollouts.py) so that the replicas' percentiles can be merged."""

    __tablename__ = "rollout_counts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"), index=True)
    step: Mapped[int]
    arm: Mapped[str] = mapped_column(String(20))  # stable, candidate
    requests: Mapped[int]
    errors: Mapped[int]
    compared: Mapped[int]  # requests run on both versions
    agreed: Mapped[int]  # of those, a classifier's with the same top-1 label
    difference: Mapped[float] = mapped_column(Float)  # of those, a forecaster's |candidate - stable|, summed
    scale: Mapped[float] = mapped_column(Float)  # ... and its |stable|: difference / scale is the relative one
    latency: Mapped[list[int]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Prediction(Base):
    """One logged inference request (service/serving/predlog.py): what feedback and live quality need. Its
    inputs and outputs in full are in the Parquet files of the prediction log, by model and hour."""

    __tablename__ = "predictions"

    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int]
    role: Mapped[str] = mapped_column(String(20))  # stable, canary
    task: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(index=True)
    instances: Mapped[int]
    predicted: Mapped[list[Any]] = mapped_column(JSON)  # a classifier's labels; a forecaster's forecasts
    key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    actual: Mapped[list[Any] | None] = mapped_column(JSON)  # feedback: the true labels, or the readings that came
    labelled_at: Mapped[datetime | None] = mapped_column(index=True)


class MonitoringSettings(Base):
    """A model name's prediction logging, where it differs from the deployment's defaults."""

    __tablename__ = "monitoring_settings"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    log_share: Mapped[float | None] = mapped_column(Float)  # None: TRAINSERVE_PREDICTION_LOG_SHARE
    retention_days: Mapped[int | None]  # None: TRAINSERVE_PREDICTION_LOG_RETENTION_DAYS
    drift_threshold: Mapped[float | None] = mapped_column(Float)  # None: TRAINSERVE_DRIFT_THRESHOLD
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RetrainingPolicy(Base):
    """When a model name is trained again by itself (service/retraining): its triggers, the gate the new
    version must pass and the rollout it then gets, and where the loop stands (the job it started, the
    rollout that followed)."""

    __tablename__ = "retraining_policies"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    policy: Mapped[dict[str, Any]]  # the policy as accepted (service/retraining/schemas.PolicyIn)
    enabled: Mapped[bool] = mapped_column(default=True)
    # The retraining job it started and has not seen end (at most one at a time); the rollout that followed.
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    rollout_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    last_started_at: Mapped[datetime | None]
    last_reason: Mapped[str | None] = mapped_column(Text)  # the trigger of the last retraining, or why it stopped
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RetrainingEvent(EventColumns, Base):
    """What a retraining policy did, in order: each trigger, job, gate verdict and rollout."""

    __tablename__ = "retraining_events"
    OWNER = "policy_id"  # service/platform/events.py

    policy_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("retraining_policies.id", ondelete="CASCADE"),
                                                 primary_key=True)


class DriftCount(Base):
    """A classifier version's logged instances that one API replica summarised in one write of its prediction
    log, counted in the bins of the version's reference profile (models/drift.count): added, never updated,
    and summed over a window to measure drift."""

    __tablename__ = "drift_counts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(index=True)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON)  # with its number of instances


class ApiKey(Base):
    """A key for the API. Only its SHA-256 is stored: the key itself is shown once, when it is made."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))  # the key's first characters, to recognise it in a list
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class AuditEvent(Base):
    """Who changed what that moves traffic or removes data: alias moves, promotions, deletes, key changes."""

    __tablename__ = "audit_events"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(50), index=True)
    target: Mapped[str] = mapped_column(String(300))
    key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)  # None: the command line, or keys not required
    key_name: Mapped[str | None] = mapped_column(String(100))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class IdempotentRequest(Base):
    """The first answer to a POST sent with an Idempotency-Key, given again to a retry within 24 hours."""

    __tablename__ = "idempotent_requests"
    __table_args__ = (UniqueConstraint("owner", "path", "key"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(String(64))  # the API key's id, or "anonymous" where keys are off
    path: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of the request, to refuse a reused key
    status_code: Mapped[int]
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    location: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
