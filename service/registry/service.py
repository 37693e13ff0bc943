"""The model registry: every succeeded job's model, by id or as the newest of a task."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import NotFound
from service.jobs.schemas import DatasetRef
from service.pagination import newest_first
from service.registry.schemas import ModelOut
from service.tables import TrainedModel


def get_model(session: Session, model_id: uuid.UUID) -> TrainedModel:
    model = session.get(TrainedModel, model_id)
    if model is None:
        raise NotFound(f"no model with id {model_id}")
    return model


def newest_model(session: Session, task: str) -> TrainedModel:
    model = session.scalars(select(TrainedModel).where(TrainedModel.task == task)
                            .order_by(TrainedModel.created_at.desc()).limit(1)).first()
    if model is None:
        raise NotFound(f"no {task} model has been trained yet; submit a job to POST /v1/jobs first")
    return model


def list_models(session: Session, name: str | None, limit: int, offset: int) -> tuple[list[TrainedModel], int]:
    query = select(TrainedModel)
    if name is not None:
        query = query.where(TrainedModel.name == name)
    return newest_first(session, query, TrainedModel, limit, offset)


def model_out(model: TrainedModel) -> ModelOut:
    d = model.dataset
    return ModelOut(
        id=model.id, name=model.name, version=model.version, task=model.task, architecture=model.architecture,
        dataset=DatasetRef(id=d.id, name=d.name, version=d.version), job_id=model.job_id,
        input_shape=model.input_shape, value_range=model.value_range, num_classes=model.num_classes,
        metrics=model.metrics, sha256=model.sha256, size_bytes=model.size_bytes, created_at=model.created_at,
    )
