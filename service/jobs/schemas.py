"""What a client sends to start a training job, and what it gets back."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.tables import JobStatus


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogisticRegressionSpec(Strict):
    """Multiclass (softmax) logistic regression."""

    type: Literal["logistic_regression"]


class MLPSpec(Strict):
    """Fully connected network; the course's default is two hidden ReLU layers of 400 and 200."""

    type: Literal["mlp"]
    hidden_sizes: list[Annotated[int, Field(ge=1, le=8192)]] = Field([400, 200], min_length=1, max_length=16)
    activation: Literal["relu", "tanh", "sigmoid"] = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


ArchitectureSpec = Annotated[Union[LogisticRegressionSpec, MLPSpec], Field(discriminator="type")]


class SGDSpec(Strict):
    type: Literal["sgd"]
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> "SGDSpec":
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0; set optimizer.momentum (e.g. 0.9) or nesterov: false")
        return self


class AdamSpec(Strict):
    type: Literal["adam"]
    betas: tuple[Annotated[float, Field(ge=0.0, lt=1.0)], Annotated[float, Field(ge=0.0, lt=1.0)]] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)


OptimizerSpec = Annotated[Union[SGDSpec, AdamSpec], Field(discriminator="type")]


class TrainingSpec(Strict):
    epochs: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(64, ge=1, le=65536)
    learning_rate: float = Field(0.01, gt=0.0, le=10.0)
    validation_split: float = Field(0.1, ge=0.0, le=0.5, description="Share of the data held out for validation.")
    test_split: float = Field(0.2, ge=0.05, le=0.5, description="Share of the data held out for the final test.")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class JobSpec(Strict):
    dataset: str = Field(..., min_length=1, max_length=200, description="Dataset name, name@version or id.",
                         examples=["digits"])
    architecture: ArchitectureSpec
    optimizer: OptimizerSpec
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    name: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                             description="Model name to register under; default '<dataset>-<architecture>'.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "dataset": "digits",
        "architecture": {"type": "logistic_regression"},
        "optimizer": {"type": "sgd", "momentum": 0.9},
        "training": {"epochs": 20, "batch_size": 64, "learning_rate": 0.05},
    }]})


class DatasetRef(BaseModel):
    id: uuid.UUID
    name: str
    version: int


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
    learning_rate: float
    samples_per_second: float
    seconds: float


class Progress(BaseModel):
    epoch: int
    epochs: int


class JobOut(BaseModel):
    id: uuid.UUID
    status: JobStatus
    spec: JobSpec
    dataset: DatasetRef
    progress: Progress
    latest_metrics: EpochMetricsOut | None
    result: dict | None = Field(description="Test-split metrics once the job has succeeded.")
    error: str | None
    cancel_requested: bool
    attempts: int
    model: ModelRef | None
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
