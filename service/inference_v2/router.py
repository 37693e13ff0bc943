"""Open Inference Protocol (KServe v2) endpoints over HTTP, so that KServe and Triton clients work unchanged:
JSON tensors, the binary tensor data extension, and compressed bodies (``service/inference_v2/tensors.py``).
gRPC serves the same calls (``service/inference_v2/grpc.py``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from service.http.auth import allow, authorize, openapi_security
from service.http.errors import Unavailable, errors
from service.http.health import database_reachable
from service.http.ratelimit import spend
from service.inference_v2 import service
from service.inference_v2.tensors import decode_http, encode_http
from service.keys.service import Scope
from service.serving.rollouts import Routing, routing_key
from service.serving.routing import SMALL_BODY, RequestRoute

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])


@router.get("")
async def server_metadata() -> dict:
    """The server's name, version and the protocol extensions it speaks."""
    return service.server_metadata()


@router.get("/health/live")
async def live() -> dict:
    return {"live": True}


@router.get("/health/ready", responses=errors(503, v2=True))
async def ready(request: Request) -> dict:
    if not await run_in_threadpool(database_reachable, request.app.state.runtime.engine):
        raise Unavailable("the model registry's database is unreachable")
    return {"ready": True}


MODEL_READ = {"dependencies": [allow(Scope.predict, Scope.read)], "responses": errors(404, v2=True)}

def _path_parameters(*names: str) -> list[dict]:
    return [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names]


# As /predict: the endpoint takes the request and checks the key and rate limit itself (RequestRoute), since
# solving dependencies and path parameters cost more per request than the model does (docs/benchmarks.md).
INFER = {"responses": errors(400, 404, 413, 415, 429, v2=True), "route_class_override": RequestRoute}
Version = Annotated[str, Path(pattern=r"^[1-9][0-9]{0,9}$", description="A version number of the model, e.g. 3.")]


async def _metadata(request: Request, name: str, version: str | None) -> dict:
    return await run_in_threadpool(service.metadata, request.app.state.models, name, version)


async def _ready(request: Request, name: str, version: str | None) -> dict:
    """Ready once the model is loaded in this process (loading it if need be)."""
    model = await run_in_threadpool(service.ready_model, request.app.state.models, name, version)
    return {"name": model.name, "ready": True}


async def _infer(request: Request, name: str, version: str | None) -> Response:
    await authorize(request, Scope.predict.value)
    spend(request, "inference")
    state = request.app.state
    routing = Routing(state.models, state.rollouts, None, routing_key(state.rollouts, request.headers),
                      state.prediction_log)
    served = await service.find_model(routing, name, version, run_in_threadpool)
    body = await request.body()
    if len(body) > SMALL_BODY or "content-encoding" in request.headers:  # inflating and parsing off the loop
        parsed = await run_in_threadpool(decode_http, body, request.headers, state.settings.max_request_bytes)
    else:
        parsed = decode_http(body, request.headers, state.settings.max_request_bytes)
    outputs = await service.infer(parsed, served, routing, state.batcher, state.settings.max_batch, run_in_threadpool)
    body, headers = encode_http(service.response_header(served[0], parsed), outputs,
                                request.headers.get("accept-encoding", ""))
    return Response(body, headers=headers)


@router.get("/models/{name}", **MODEL_READ)
async def model_metadata(request: Request, name: str) -> dict:
    """The model's inputs, outputs and versions (its newest version, or `name@alias`)."""
    return await _metadata(request, name, None)


@router.get("/models/{name}/versions/{version}", **MODEL_READ)
async def version_metadata(request: Request, name: str, version: Version) -> dict:
    return await _metadata(request, name, version)


@router.get("/models/{name}/ready", **MODEL_READ)
async def model_ready(request: Request, name: str) -> dict:
    """Ready once the model is loaded in this process (loading it if need be)."""
    return await _ready(request, name, None)


@router.get("/models/{name}/versions/{version}/ready", **MODEL_READ)
async def version_ready(request: Request, name: str, version: Version) -> dict:
    return await _ready(request, name, version)


async def infer(request: Request) -> Response:
    """Inference with the Open Inference Protocol's request and response: JSON, or a JSON header and binary
    tensor data (`Inference-Header-Content-Length`); gzip or deflate bodies either way."""
    return await _infer(request, request.path_params["name"], None)


async def version_infer(request: Request) -> Response:
    """The same, for one version of the model."""
    return await _infer(request, request.path_params["name"], request.path_params["version"])


router.add_api_route("/models/{name}/infer", infer, methods=["POST"], **INFER,
                     openapi_extra={**openapi_security(Scope.predict), "parameters": _path_parameters("name")})
router.add_api_route("/models/{name}/versions/{version}/infer", version_infer, methods=["POST"], **INFER,
                     openapi_extra={**openapi_security(Scope.predict),
                                    "parameters": _path_parameters("name", "version")})
