"""Open Inference Protocol (KServe v2) endpoints, so that KServe and Triton clients work unchanged."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from service.auth import allow
from service.ratelimit import limited
from service.keys.service import Scope
from service.errors import Unavailable
from service.health import database_reachable
from service.inference_v2 import service
from service.serving import resolve

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])


@router.get("")
async def server_metadata() -> dict:
    return {"name": "trainserve", "version": "0.1.0", "extensions": []}


@router.get("/health/live")
async def live() -> dict:
    return {"live": True}


@router.get("/health/ready")
async def ready() -> dict:
    if not await run_in_threadpool(database_reachable):
        raise Unavailable("the model registry's database is unreachable")
    return {"ready": True}


@router.get("/models/{name}", dependencies=[allow(Scope.predict, Scope.read)])
@router.get("/models/{name}/versions/{version}", dependencies=[allow(Scope.predict, Scope.read)])
async def model_metadata(request: Request, name: str, version: str | None = None) -> dict:
    return await run_in_threadpool(service.metadata, request.app.state.models, name, version)


@router.get("/models/{name}/ready", dependencies=[allow(Scope.predict, Scope.read)])
@router.get("/models/{name}/versions/{version}/ready", dependencies=[allow(Scope.predict, Scope.read)])
async def model_ready(request: Request, name: str, version: str | None = None) -> dict:
    """Ready once the model is loaded in this process (loading it if need be)."""
    model = await run_in_threadpool(resolve, request.app.state.models, service.model_ref(name, version), None)
    return {"name": model.name, "ready": True}


INFER = [allow(Scope.predict), limited("inference")]


@router.post("/models/{name}/infer", dependencies=INFER)
@router.post("/models/{name}/versions/{version}/infer", dependencies=INFER)
async def infer(request: Request, name: str, version: str | None = None) -> JSONResponse:
    body = await request.body()
    result = await run_in_threadpool(service.infer, body, request.app.state.models, name, version,
                                     request.app.state.settings.max_batch)
    return JSONResponse(result)
