"""The Open Inference Protocol (KServe v2) over trainserve's registry and model cache.

A model is addressed by its registry name (its newest version), or by name and version; trainserve also
takes ``name@alias`` as the name. Inputs and outputs are the protocol's JSON tensors: ``name``, ``shape``,
``datatype`` and ``data`` (flat in row-major order, or nested).
"""

from __future__ import annotations

import json
from math import prod

import numpy as np
import torch

from service.db import session_scope
from service.errors import InvalidInput
from service.serving import LoadedModel, ModelCache, logits_of, resolve, to_batch
from service.registry import service as registry

INPUT = "pixels"
NUMERIC = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"}


def model_ref(name: str, version: str | None) -> str:
    if version is None:
        return name
    if not version.isdigit():
        raise InvalidInput(f"model version must be a number, not {version!r}")
    return f"{name.partition('@')[0]}@{version}"


def metadata(cache: ModelCache, name: str, version: str | None) -> dict:
    model = resolve(cache, model_ref(name, version), None)
    with session_scope() as session:
        versions = [str(m.version) for m in registry.list_models(session, model.name, 200, 0)[0]]
    return {
        "name": model.name,
        "versions": versions,
        "platform": "pytorch",
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, *model.input_shape]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, model.num_classes]},
                    {"name": "label", "datatype": "INT64", "shape": [-1]}],
    }


def _input_array(tensor: object) -> np.ndarray:
    if not isinstance(tensor, dict) or not {"name", "shape", "datatype", "data"} <= set(tensor):
        raise InvalidInput("each input needs name, shape, datatype and data")
    shape, datatype = tensor["shape"], tensor["datatype"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape) or not shape:
        raise InvalidInput(f"input {tensor['name']!r}: shape must be a list of non-negative integers")
    if datatype not in NUMERIC:
        raise InvalidInput(f"input {tensor['name']!r}: datatype {datatype!r} is not numeric; send FP32")
    try:
        values = np.asarray(tensor["data"], dtype=np.float32).reshape(-1)
    except (ValueError, TypeError):
        raise InvalidInput(f"input {tensor['name']!r}: data must be numbers")
    if values.size != prod(shape):
        raise InvalidInput(f"input {tensor['name']!r} has {values.size} values but shape {shape} needs {prod(shape)}")
    return values.reshape(shape)


def infer(body: bytes, cache: ModelCache, name: str, version: str | None, max_batch: int) -> dict:
    try:
        request = json.loads(body)
    except ValueError:
        raise InvalidInput("the body is not valid JSON")
    model: LoadedModel = resolve(cache, model_ref(name, version), None)  # an unknown model is a 404 first
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or len(request["inputs"]) != 1:
        raise InvalidInput(f'the request needs "inputs" with exactly one tensor, named {INPUT!r}')
    x = _input_array(request["inputs"][0])
    if x.shape[0] > max_batch:
        raise InvalidInput(f"{x.shape[0]} instances in one request; send at most {max_batch}", status_code=413)
    batch = to_batch(x, model)
    probabilities = torch.softmax(torch.from_numpy(logits_of(model, batch)), dim=1)
    outputs = {
        "probabilities": {"name": "probabilities", "datatype": "FP32", "shape": list(probabilities.shape),
                          "data": probabilities.reshape(-1).tolist()},
        "label": {"name": "label", "datatype": "INT64", "shape": [len(batch)],
                  "data": probabilities.argmax(1).tolist()},
    }
    wanted = [o.get("name") if isinstance(o, dict) else o for o in request.get("outputs") or []] or list(outputs)
    unknown = [w for w in wanted if w not in outputs]
    if unknown:
        raise InvalidInput(f"unknown output(s) {unknown}; this model has {list(outputs)}")
    response = {"model_name": model.name, "model_version": str(model.version),
                "outputs": [outputs[w] for w in wanted]}
    if "id" in request:
        response["id"] = request["id"]
    return response
