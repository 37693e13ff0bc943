from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status

from service.db import SessionDep
from service.registry import service
from service.registry.schemas import ALIAS_PATTERN, AliasIn, AliasOut, ModelOut, ModelPage

router = APIRouter(prefix="/v1/models", tags=["models"])
AliasName = Annotated[str, Path(pattern=ALIAS_PATTERN, description="Lower-case letters, digits, - and _; "
                                                                   "starts with a letter, e.g. production.")]


@router.get("", response_model=ModelPage)
def list_models(
    session: SessionDep,
    name: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ModelPage:
    """Registered model versions, newest first; `name` filters to one model's versions."""
    rows, total = service.list_models(session, name, limit, offset)
    return ModelPage(items=[service.model_out(m) for m in rows], total=total, limit=limit, offset=offset)


@router.get("/{ref}", response_model=ModelOut)
def get_model(ref: str, session: SessionDep) -> ModelOut:
    """One model version by id, `name` (newest), `name@3` or `name@production`, with the input shape and pixel
    value range that `/predict` expects."""
    return service.model_out(service.resolve(session, ref))


@router.get("/{name}/versions/{version}", response_model=ModelOut)
def get_version(name: str, version: Annotated[int, Path(ge=1)], session: SessionDep) -> ModelOut:
    return service.model_out(service.get_version(session, name, version))


@router.put("/{name}/aliases/{alias}", response_model=AliasOut)
def set_alias(name: str, alias: AliasName, body: AliasIn, session: SessionDep, request: Request) -> AliasOut:
    """Point `name@alias` at one version. `/predict` sees the move at once in this process, and within
    `TRAINSERVE_REF_CACHE_SECONDS` in every other."""
    row = service.set_alias(session, name, alias, body.version)
    session.commit()
    request.app.state.models.forget_refs()
    return service.alias_out(row)


@router.delete("/{name}/aliases/{alias}", status_code=status.HTTP_204_NO_CONTENT)
def delete_alias(name: str, alias: AliasName, session: SessionDep, request: Request) -> Response:
    service.delete_alias(session, name, alias)
    session.commit()
    request.app.state.models.forget_refs()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
