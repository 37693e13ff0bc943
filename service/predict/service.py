"""/predict: parse the request by hand, find the model through the serving core, answer with labels.

For a model this small, parsing dominates: 784 floats through pydantic cost more than the forward pass,
so the body goes through ``orjson`` and NumPy and only the checks that matter are made.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import orjson

from service.http.errors import InvalidInput
from service.predict import images
from service.serving.models import LoadedModel, holds_boolean, probabilities, to_batch
from service.serving.rollouts import Routing, Ticket, answered, checked, serve, serve_cached

FIELDS = frozenset({"instances", "model", "top_k"})


class ParsedRequest(NamedTuple):
    instances: list
    ref: str | None
    top_k: int


def parse_request(body: bytes, max_batch: int) -> ParsedRequest:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidInput('the body is not valid JSON; send {"instances": [[...pixels...], ...]}')
    if not isinstance(payload, dict) or "instances" not in payload:
        raise InvalidInput('the body must be a JSON object with "instances": a list of digits, each a list of pixels')
    if not payload.keys() <= FIELDS:
        unknown = payload.keys() - FIELDS
        raise InvalidInput(f"unknown field(s) {', '.join(sorted(unknown))}; the body takes 'instances', 'model' "
                           "and 'top_k'")
    instances = payload["instances"]
    if not isinstance(instances, list) or not instances:
        raise InvalidInput('"instances" must be a non-empty list of digits')
    if len(instances) > max_batch:
        raise InvalidInput(f"{len(instances)} instances in one request; send at most {max_batch} per call",
                           status_code=413)
    # NumPy reads true as 1.0: a JSON boolean is not a pixel. Searching the bytes costs a microsecond; the
    # instances are walked only when the body holds the word at all (a model's name may).
    if (b"true" in body or b"false" in body) and holds_boolean(instances):
        raise InvalidInput("instances hold true or false; every pixel must be a number")
    return ParsedRequest(instances, check_ref(payload.get("model")), check_top_k(payload.get("top_k", DEFAULT_TOP_K)))


DEFAULT_TOP_K = 3


def check_ref(model: object) -> str | None:
    if model is not None and (not isinstance(model, str) or not model or len(model) > 300):
        raise InvalidInput(f'"model" must be a model id, name, name@version or name@alias, not {model!r}')
    return model


def check_top_k(top_k: object) -> int:
    if isinstance(top_k, str) and top_k.isdigit():
        top_k = int(top_k)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise InvalidInput(f'"top_k" must be a whole number of at least 1, not {top_k!r}')
    return top_k


def answer(model: LoadedModel, rows: list[list[float]], top_k: int) -> dict:
    """The /predict response for rows of probabilities; the top-k of a row of ten in plain Python, cheaper
    than more array calls."""
    predictions = []
    for p in rows:
        labels = sorted(range(len(p)), key=p.__getitem__, reverse=True)[:top_k]  # stable: ties keep label order
        predictions.append({"label": labels[0], "probabilities": p,
                            "top_k": [{"label": label, "probability": p[label]} for label in labels]})
    return {"predictions": predictions, "model": model.describe()}


def classify(routing: Routing, model: LoadedModel, ticket: Ticket | None, batch: np.ndarray, top_k: int) -> dict:
    rows = checked(ticket, probabilities, model, batch)
    answered(routing, model, ticket, batch, rows, batch=batch)
    return answer(model, rows, top_k)


def predict_parsed(request: ParsedRequest, routing: Routing) -> dict:
    model, ticket = serve(routing, request.ref, "classification")
    return classify(routing, model, ticket, checked(ticket, to_batch, request.instances, model), request.top_k)


def predict(body: bytes, routing: Routing, max_batch: int) -> dict:
    return predict_parsed(parse_request(body, max_batch), routing)


Inline = tuple[LoadedModel, "Ticket | None", np.ndarray]


def checked_inline(request: ParsedRequest, routing: Routing) -> Inline | None:
    """The model, rollout ticket and checked input of a request that needs no I/O (the model is loaded and
    the reference fresh), so it can be answered on the event loop; None otherwise."""
    served = serve_cached(routing, request.ref, "classification")
    if served is None:
        return None
    model, ticket = served
    return model, ticket, checked(ticket, to_batch, request.instances, model)


def image_batch(files: list[tuple[str, bytes]], model: LoadedModel) -> np.ndarray:
    """PNG or JPEG digits of any size and colour depth, brought to the model's input the MNIST way."""
    return to_batch(np.stack([images.preprocess(data, name, model.input_shape, model.value_range)
                              for name, data in files]), model)


def predict_images(files: list[tuple[str, bytes]], ref: str | None, top_k: int, routing: Routing) -> dict:
    model, ticket = serve(routing, ref, "classification")
    return classify(routing, model, ticket, checked(ticket, image_batch, files, model), top_k)


# Uploads of up to this many images of up to this many pixels each (0.13 ms to decode and prepare a 28x28
# PNG, 0.2 ms a 128x128 one, 0.7 ms a 256x256 one) are prepared on the event loop; more, or larger ones, in a
# worker thread.
INLINE_IMAGES, INLINE_IMAGE_PIXELS = 4, 128 * 128


def checked_images_inline(files: list[tuple[str, bytes]], ref: str | None, routing: Routing) -> Inline | None:
    """As :func:`checked_inline`, for a few small images: their size is read from the file headers first."""
    if len(files) > INLINE_IMAGES or any(images.pixel_count(data) > INLINE_IMAGE_PIXELS for _, data in files):
        return None
    served = serve_cached(routing, ref, "classification")
    if served is None:
        return None
    model, ticket = served
    return model, ticket, checked(ticket, image_batch, files, model)
