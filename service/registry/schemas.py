from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel

from service.jobs.schemas import DatasetRef


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
    metrics: dict
    sha256: str
    size_bytes: int
    created_at: datetime


class ModelPage(BaseModel):
    items: list[ModelOut]
    total: int
    limit: int
    offset: int
