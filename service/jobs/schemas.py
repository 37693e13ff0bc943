"""What the jobs API answers; the request, the job spec, is in :mod:`service.jobs.spec`."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from service.datasets.schemas import DatasetRef
from service.jobs.spec import JobSpec
from service.platform.tables import JobStatus


class ModelRef(BaseModel):
    id: uuid.UUID
    name: str
    version: int


class EpochMetricsOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    epoch: int
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    train_accuracy: float | None = Field(None, description="Classification: the share of training samples "
                                         "right as the epoch trained (weights changing, dropout on); null for "
                                         "full-batch optimizers and forecasters.")
    learning_rate: float
    samples_per_second: float
    seconds: float
    cpu_seconds: float | None = Field(description="The worker process's CPU time in the epoch, every thread.")
    peak_rss_bytes: int | None = Field(description="The worker process's peak resident memory so far.")
    gpu_name: str | None = Field(description="On CUDA: the GPU.")
    gpu_peak_memory_bytes: int | None = Field(description="On CUDA: the most PyTorch had allocated in the epoch.")
    gpu_utilization: float | None = Field(description="On CUDA: percent busy, NVML's sample at the epoch's end "
                                                       "(null without NVML).")


class Progress(BaseModel):
    epoch: int
    epochs: int


class JobOut(BaseModel):
    id: uuid.UUID
    status: JobStatus
    spec: JobSpec
    dataset: DatasetRef | None = Field(description="null once the dataset was deleted; spec.dataset still names it")
    progress: Progress
    latest_metrics: EpochMetricsOut | None
    result: dict | None = Field(description="Test-split metrics once the job has succeeded.")
    error: str | None
    cancel_requested: bool
    attempts: int
    queue: str | None = Field(description="The broker queue the job was sent to: the CPU queue, or the GPU "
                                          "queue (device cuda, or auto where GPU workers exist)")
    model: ModelRef | None
    sweep_id: uuid.UUID | None = Field(None, description="The sweep this job is a trial of (GET /v1/sweeps/{id})")
    trial_number: int | None = Field(None, description="The trial's number in its sweep, from 0")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobPage(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class MetricsOut(BaseModel):
    job_id: uuid.UUID
    items: list[EpochMetricsOut]
