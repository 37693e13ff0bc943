from __future__ import annotations

import uuid
from datetime import datetime

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.datasets.schemas import DatasetRef

ALIAS_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"


class ModelOut(BaseModel):
    id: uuid.UUID
    name: str
    version: int
    task: str
    architecture: str
    dataset: DatasetRef
    job_id: uuid.UUID
    input_shape: list[int]
    value_range: list[float]
    num_classes: int
    aliases: list[str] = Field(description="Aliases that point at this version, e.g. production.")
    exports: dict[str, dict] = Field(description="TorchScript and ONNX exports: status, the largest difference "
                                                 "from the eager model's probabilities on held-out inputs, error.")
    metrics: dict
    sha256: str
    size_bytes: int
    created_at: datetime


class ModelPage(BaseModel):
    items: list[ModelOut]
    total: int
    limit: int
    offset: int



class AliasIn(BaseModel):
    version: int = Field(ge=1, le=2**31 - 1, description="The version of the model the alias should point at.")


class PromoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: str = Field(pattern=ALIAS_PATTERN, examples=["production"])
    metric: Literal["test_accuracy", "test_macro_f1"] = "test_accuracy"
    min: float = Field(0.0, ge=0.0, le=1.0, description="the bar the metric must clear")


class PromotionOut(BaseModel):
    alias: str
    metric: str
    min: float
    value: float | None = Field(description="this version's metric")
    moved: bool = Field(description="whether the alias now points at this version")
    previous_version: int | None = Field(description="the version the alias pointed at before")
    reason: str


class AliasOut(BaseModel):
    name: str
    alias: str
    version: int
    model_id: uuid.UUID
    updated_at: datetime
