"""The Open Inference Protocol over gRPC: the published ``GRPCInferenceService``
(``grpc_predict_v2.proto``, KServe's, compiled into the two modules beside it by ``make grpc``).

It runs in the API process, on the API's event loop (grpc.aio), so it shares the model cache, the dynamic
batcher of ``/predict`` and the key check; only its port is its own (``TRAINSERVE_GRPC_PORT``). A key goes
in the call's ``authorization`` metadata (``Bearer <key>``), as over HTTP. Errors map onto gRPC status
codes: a bad request is INVALID_ARGUMENT, an unknown model NOT_FOUND, a missing key UNAUTHENTICATED.
"""

from __future__ import annotations

import logging
from random import getrandbits
from typing import Any

import grpc
import numpy as np
from fastapi.concurrency import run_in_threadpool

from service.http.auth import authenticate
from service.http.errors import AppError, InvalidInput
from service.http.health import database_reachable
from service.inference_v2 import grpc_predict_v2_pb2 as pb
from service.inference_v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from service.inference_v2 import service
from service.inference_v2.tensors import DATATYPES, InferRequest, Tensor, check_shape, from_raw, from_values
from service.keys.service import Scope
from service.observability import logs
from service.serving.rollouts import Routing, routing_key

log = logging.getLogger(__name__)

STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
          403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
          413: grpc.StatusCode.RESOURCE_EXHAUSTED, 422: grpc.StatusCode.INVALID_ARGUMENT,
          429: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE}
# gRPC's typed contents: which repeated field holds each datatype.
CONTENTS = {"BOOL": "bool_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
            "UINT32": "uint_contents", "UINT64": "uint64_contents", "INT8": "int_contents",
            "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
            "FP32": "fp32_contents", "FP64": "fp64_contents"}


def _parameter(value: pb.InferParameter) -> Any:
    kind = value.WhichOneof("parameter_choice")
    return getattr(value, kind) if kind else None


def decode(request: pb.ModelInferRequest) -> InferRequest:
    """A ModelInfer request: raw_input_contents (one per input, in order) or each input's typed contents."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; send one per input, "
                           "in the order of the inputs")
    if not request.inputs:
        raise InvalidInput("the request needs inputs")
    inputs = []
    for i, tensor in enumerate(request.inputs):
        shape = check_shape(tensor.name, list(tensor.shape))
        if raw:
            array = from_raw(tensor.name, tensor.datatype, shape, raw[i])
        elif tensor.datatype == "FP16":
            raise InvalidInput(f"input {tensor.name!r}: FP16 has no typed contents; send it in raw_input_contents")
        else:
            field = CONTENTS.get(tensor.datatype)
            values = getattr(tensor.contents, field) if field else []
            array = from_values(tensor.name, tensor.datatype, shape, list(values))
        inputs.append(Tensor(tensor.name, tensor.datatype, array))
    outputs = [Tensor(o.name, "", np.empty(0), binary=True) for o in request.outputs]
    return InferRequest(inputs, outputs, request.id or None, binary_output=True)


def encode(header: dict, outputs: list[Tensor]) -> pb.ModelInferResponse:
    """The answer with raw_output_contents, one per output, as Triton's and KServe's clients read them."""
    response = pb.ModelInferResponse(model_name=header["model_name"], model_version=header["model_version"],
                                     id=header.get("id", ""))
    for t in outputs:
        response.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        response.raw_output_contents.append(np.ascontiguousarray(t.array, dtype=DATATYPES[t.datatype]).tobytes())
    return response


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, state) -> None:
        self.state = state

    async def _call(self, context: grpc.aio.ServicerContext, scopes: tuple[str, ...], what: str, work,
                    inference: bool = False):
        """``work()``'s answer for a caller the key check lets in; an AppError becomes the call's status."""
        try:
            metadata = dict(context.invocation_metadata() or ())
            principal = await authenticate(self.state, metadata.get("authorization"), scopes, what)
            if inference and principal.key_id is not None:  # the key's inference limit, as over HTTP
                self.state.limiter.hit("inference", principal.owner, self.state.limits["inference"])
            return await work()
        except AppError as exc:
            await context.abort(STATUS.get(exc.status_code, grpc.StatusCode.INVALID_ARGUMENT), exc.message)
        except grpc.aio.AbortError:
            raise
        except Exception:  # trainserve's fault: the log has the traceback, the caller never the exception's text
            log.exception("gRPC %s failed", what)
            await context.abort(grpc.StatusCode.INTERNAL, f"{what} failed inside trainserve; the API's log says why")

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=await run_in_threadpool(database_reachable, self.state.runtime.engine))

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(**service.server_metadata())

    async def ModelReady(self, request, context):
        async def work():
            await run_in_threadpool(service.ready_model, self.state.models, request.name, request.version or None)
            return pb.ModelReadyResponse(ready=True)
        return await self._call(context, (Scope.predict.value, Scope.read.value), "gRPC ModelReady", work)

    async def ModelMetadata(self, request, context):
        async def work():
            meta = await run_in_threadpool(service.metadata, self.state.models, request.name, request.version or None)
            response = pb.ModelMetadataResponse(name=meta["name"], versions=meta["versions"], platform=meta["platform"])
            for kind in ("inputs", "outputs"):
                for t in meta[kind]:
                    getattr(response, kind).add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
            return response
        return await self._call(context, (Scope.predict.value, Scope.read.value), "gRPC ModelMetadata", work)

    async def ModelInfer(self, request, context):
        async def work():
            state = self.state
            routing = Routing(state.models, state.rollouts, None,
                              routing_key(state.rollouts, dict(context.invocation_metadata() or ())),
                              state.prediction_log)
            served = await service.find_model(routing, request.model_name, request.model_version or None,
                                              run_in_threadpool)
            parsed = decode(request)
            # The call's id is its request id (the prediction log's, for feedback): the caller's, or a new one,
            # returned in the answer's id as the protocol has it.
            parsed.id = parsed.id or f"{getrandbits(128):032x}"
            fits = len(parsed.id) <= 128 and parsed.id.isascii() and parsed.id.isprintable()  # as X-Request-ID
            logs.request_id.set(parsed.id if fits else f"{getrandbits(128):032x}")
            outputs = await service.infer(parsed, served, routing, state.batcher, state.settings.max_batch,
                                          run_in_threadpool)
            return encode(service.response_header(served[0], parsed), outputs)
        return await self._call(context, (Scope.predict.value,), "gRPC ModelInfer", work, inference=True)


async def start(state, port: int, host: str) -> grpc.aio.Server:
    """Serve the protocol on ``host:port`` from this event loop; the caller stops it at shutdown."""
    # Several API processes (TRAINSERVE_API_WORKERS) each serve gRPC on the one port, and the kernel spreads
    # the connections among them; a single process keeps the port to itself.
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", state.settings.max_request_bytes),
                                      ("grpc.so_reuseport", int(state.settings.api_workers > 1))])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(state), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        raise SystemExit(f"trainserve: cannot serve gRPC on {host}:{port} (is the port in use?); set "
                         "TRAINSERVE_GRPC_PORT to a free port") from None
    await server.start()
    log.info("Open Inference Protocol over gRPC on %s:%d", host, bound)
    state.grpc_port = bound
    return server
