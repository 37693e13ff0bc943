from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from service.db import SessionDep
from service.errors import parse_id
from service.registry import service
from service.registry.schemas import ModelOut, ModelPage

router = APIRouter(prefix="/v1/models", tags=["models"])
ModelId = Annotated[uuid.UUID, Depends(lambda model_id: parse_id(model_id, "model"))]


@router.get("", response_model=ModelPage)
def list_models(
    session: SessionDep,
    name: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ModelPage:
    """Registered model versions, newest first."""
    rows, total = service.list_models(session, name, limit, offset)
    return ModelPage(items=[service.model_out(m) for m in rows], total=total, limit=limit, offset=offset)


@router.get("/{model_id}", response_model=ModelOut)
def get_model(model_id: ModelId, session: SessionDep) -> ModelOut:
    """One model version, with the input shape and pixel value range that `/predict` expects."""
    return service.model_out(service.get_model(session, model_id))
