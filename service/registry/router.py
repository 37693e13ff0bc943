from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request, Response, status

from service.audit.router import record_request
from service.http.auth import allow
from service.http.errors import errors
from service.http.pagination import MAX_INT, PageLimit, PageOffset
from service.keys.service import Scope
from service.platform.db import SessionDep
from service.platform.queue import enqueue_export
from service.platform.runtime import RuntimeDep
from service.registry import service
from service.registry.schemas import ALIAS_PATTERN, AliasIn, AliasOut, ModelOut, ModelPage, PromoteIn, PromotionOut

router = APIRouter(prefix="/v1/models", tags=["models"])
AliasName = Annotated[str, Path(pattern=ALIAS_PATTERN, description="Lower-case letters, digits, - and _; "
                                                                   "starts with a letter, e.g. production.")]


@router.get("", response_model=ModelPage, dependencies=[allow(Scope.predict, Scope.read)])
def list_models(
    session: SessionDep,
    name: str | None = None,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
) -> ModelPage:
    """Registered model versions, newest first; `name` filters to one model's versions."""
    rows, total = service.list_models(session, name, limit, offset)
    return ModelPage(items=[service.model_out(m) for m in rows], total=total, limit=limit, offset=offset)


@router.get("/{ref}", response_model=ModelOut, dependencies=[allow(Scope.predict, Scope.read)], responses=errors(404))
def get_model(ref: str, session: SessionDep) -> ModelOut:
    """One model version by id, `name` (newest), `name@3` or `name@production`, with the input shape and pixel
    value range that `/predict` expects."""
    return service.model_out(service.resolve(session, ref))


@router.get("/{ref}/download", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}, **errors(404, 409)}, dependencies=[allow(Scope.predict, Scope.read)])
def download(ref: str, session: SessionDep, request: Request,
             format: Literal["pt", "torchscript", "onnx"] = "pt") -> Response:
    """The model file: `pt` (state_dict and config, for `torch.load(weights_only=True)`), `torchscript`
    (`torch.jit.load`) or `onnx` (ONNX Runtime; input `pixels`, output `logits`)."""
    model = service.resolve(session, ref)
    key, sha256, filename = service.artifact_for_download(model, format)
    data = request.app.state.runtime.store.get(key, sha256)
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.post("/{ref}/exports", status_code=status.HTTP_202_ACCEPTED, response_model=ModelOut, responses=errors(404),
             dependencies=[allow(Scope.train)])
def request_exports(ref: str, session: SessionDep, runtime: RuntimeDep) -> ModelOut:
    """Make the TorchScript and ONNX exports again (those not already made)."""
    model = service.resolve(session, ref)
    enqueue_export(runtime.celery, model.id)
    return service.model_out(model)


@router.get("/{name}/versions/{version}", response_model=ModelOut, dependencies=[allow(Scope.predict, Scope.read)],
            responses=errors(404))
def get_version(name: str, version: Annotated[int, Path(ge=1, le=MAX_INT)], session: SessionDep) -> ModelOut:
    return service.model_out(service.get_version(session, name, version))


@router.put("/{name}/aliases/{alias}", response_model=AliasOut, dependencies=[allow(Scope.admin)], responses=errors(404, 409))
def set_alias(name: str, alias: AliasName, body: AliasIn, session: SessionDep, request: Request) -> AliasOut:
    """Point `name@alias` at one version. `/predict` sees the move at once in this process, and within
    `TRAINSERVE_REF_CACHE_SECONDS` in every other."""
    before = service.alias_version(session, name, alias)
    row = service.set_alias(session, name, alias, body.version)
    record_request(request, session, "alias.set", f"{name}@{alias}", before={"version": before},
                   after={"version": body.version})
    session.commit()
    request.app.state.models.forget_refs()
    return service.alias_out(row)


@router.post("/{name}/versions/{version}/promote", response_model=PromotionOut, dependencies=[allow(Scope.admin)],
             responses=errors(404, 422))
def promote_version(name: str, version: Annotated[int, Path(ge=1, le=MAX_INT)], body: PromoteIn,
                    session: SessionDep, request: Request) -> PromotionOut:
    """Gated promotion, as a job's `promote` does it: point `name@alias` at this version only if it passes the
    gate (a classifier: `metric` clears `min`; a forecaster: `metric` within `max` and below the persistence
    and seasonal-naive baselines') and beats the version the alias points at now. The answer is the gate's
    verdict, with its reason, whether the alias moved or not."""
    decision = service.promote(session, service.get_version(session, name, version), body)
    session.commit()
    if decision["moved"]:
        request.app.state.models.forget_refs()
    return PromotionOut(**decision)


@router.delete("/{name}/aliases/{alias}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[allow(Scope.admin)],
               responses=errors(404, 409))
def delete_alias(name: str, alias: AliasName, session: SessionDep, request: Request) -> Response:
    before = service.alias_version(session, name, alias)
    service.delete_alias(session, name, alias)
    record_request(request, session, "alias.delete", f"{name}@{alias}", before={"version": before}, after=None)
    session.commit()
    request.app.state.models.forget_refs()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
