"""Digit classification: parse the request by hand, find the model in the process cache, run it.

For a model this small, parsing dominates: 784 floats through pydantic cost more than the forward pass,
so the body goes through ``json.loads`` and NumPy and only the checks that matter are made.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from math import prod
from typing import Callable, NamedTuple

import numpy as np
import orjson
import torch

from models.export import model_from_bytes
from models.fastpath import dense_forward
from service.artifacts import ArtifactStore
from service.db import session_scope
from service.errors import InvalidInput
from service.predict import images
from service.registry import service as registry
from service.tables import TrainedModel


@dataclass(frozen=True)
class LoadedModel:
    id: uuid.UUID
    name: str
    version: int
    input_shape: tuple[int, ...]
    value_range: tuple[float, float]
    num_classes: int
    module: torch.nn.Module
    forecast: dict | None = None  # a forecaster's preparation
    fast: Callable[[np.ndarray], np.ndarray] | None = None  # the NumPy forward pass of a dense classifier

    @cached_property
    def _description(self) -> dict:
        return {"id": str(self.id), "name": self.name, "version": self.version}

    def describe(self) -> dict:
        """The version that answered, for responses (one dict per model: not to be changed)."""
        return self._description

    @cached_property
    def instance_shapes(self) -> frozenset[tuple[int, ...]]:
        """The shapes one instance may have: flat, rows of pixels, or the input shape itself."""
        return frozenset({(prod(self.input_shape),), tuple(self.input_shape[-2:]), tuple(self.input_shape)})


class ModelCache:
    """Loaded models by version id, least recently used first out (versions never change once written),
    and what each reference (``name``, ``name@alias``, the default route) pointed at, for ``ref_ttl`` seconds
    (an alias may move)."""

    def __init__(self, store: ArtifactStore, capacity: int, ref_ttl: float):
        self.store, self.capacity, self.ref_ttl = store, capacity, ref_ttl
        self._models: OrderedDict[uuid.UUID, LoadedModel] = OrderedDict()
        self._refs: dict[str, tuple[uuid.UUID, float]] = {}
        self._lock = threading.Lock()

    def ref(self, ref: str) -> uuid.UUID | None:
        hit = self._refs.get(ref)
        return hit[0] if hit is not None and hit[1] > time.monotonic() else None

    def remember_ref(self, ref: str, model_id: uuid.UUID) -> None:
        self._refs[ref] = (model_id, time.monotonic() + self.ref_ttl)

    def forget_refs(self) -> None:
        """An alias moved in this process: the next request resolves every reference again."""
        self._refs.clear()

    def cached(self, model_id: uuid.UUID) -> LoadedModel | None:
        with self._lock:
            model = self._models.get(model_id)
            if model is not None:
                self._models.move_to_end(model_id)
            return model

    def load(self, row: TrainedModel) -> LoadedModel:
        if (hit := self.cached(row.id)) is not None:
            return hit
        module, config = model_from_bytes(self.store.get(row.artifact_key, row.sha256))
        with torch.inference_mode():  # warm up, so the first request is not the slow one
            module(torch.zeros((1, *config.input_shape)))
        model = LoadedModel(row.id, row.name, row.version, config.input_shape, config.value_range,
                            config.num_classes, module, config.forecast,
                            dense_forward(module) if config.forecast is None else None)
        with self._lock:
            self._models[row.id] = model
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
        return model


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


def to_batch(instances: list | np.ndarray, model: LoadedModel) -> np.ndarray:
    try:
        x = np.asarray(instances, dtype=np.float32)
    except (ValueError, TypeError):
        raise InvalidInput("every instance must be a list of numbers (or a list of rows of numbers), "
                           "and all instances must have the same shape")
    per_instance = x.shape[1:]
    if per_instance not in model.instance_shapes:
        h, w = model.input_shape[-2:]
        got = "x".join(map(str, per_instance)) or "a single number"
        raise InvalidInput(f"model {model.name} v{model.version} expects {prod(model.input_shape)} pixels per "
                           f"instance, flat or as {h}x{w} rows; got instances of shape {got}")
    low, high = model.value_range
    smallest, largest = x.min(), x.max()  # NaN makes both NaN, and every comparison below false
    if not (low <= smallest and largest <= high):
        if np.isnan(smallest) or not np.isfinite(x).all():
            raise InvalidInput("instances contain NaN or infinite values")
        raise InvalidInput(f"pixel values must lie in [{low:g}, {high:g}], the scale of the data this model was "
                           f"trained on; got values from {smallest:g} to {largest:g}")
    return x.reshape(len(x), *model.input_shape)


def _newest_key(task: str) -> str:
    """The reference cache's key for the default route when no default is set."""
    return f"@newest-{task}"


WRONG_TASK = {"classification": "a digit classifier; /predict takes it",
              "forecast": "a forecaster; /forecast takes it"}


def cached_model(cache: ModelCache, ref: str | None, default: str | None,
                 task: str = "classification") -> LoadedModel | None:
    """The model a request names, if this process has it loaded and trusts the reference: no I/O at all."""
    ref = ref or default
    model_id = cache.ref(ref or _newest_key(task))
    if model_id is None and ref is not None:
        try:
            model_id = uuid.UUID(ref)  # an id always names the same version
        except ValueError:
            return None
    model = cache.cached(model_id) if model_id is not None else None
    if model is not None and (model.forecast is not None) != (task == "forecast"):
        raise InvalidInput(f"model {model.name} v{model.version} is "
                           f"{WRONG_TASK['forecast' if model.forecast is not None else 'classification']}")
    return model


def resolve(cache: ModelCache, ref: str | None, default: str | None, task: str = "classification") -> LoadedModel:
    """The model a request names, or the default route; the hot path makes no database round trip."""
    if (hit := cached_model(cache, ref, default, task)) is not None:
        return hit
    ref = ref or default
    key = ref or _newest_key(task)
    with session_scope() as session:
        row = registry.resolve(session, ref) if ref else registry.newest_model(session, task)
        if row.task != task:
            raise InvalidInput(f"model {row.name} v{row.version} is {WRONG_TASK.get(row.task, row.task)}")
        model = cache.load(row)
    cache.remember_ref(key, model.id)
    return model


def logits_of(model: LoadedModel, batch: np.ndarray) -> np.ndarray:
    if model.fast is not None:
        return model.fast(batch)
    with torch.inference_mode():
        return model.module(torch.from_numpy(batch)).numpy()


def probabilities(model: LoadedModel, batch: np.ndarray) -> list[list[float]]:
    """Each row's class probabilities, rounded to six places."""
    logits = logits_of(model, batch).astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.round(e / e.sum(axis=1, keepdims=True), 6).tolist()


def answer(model: LoadedModel, rows: list[list[float]], top_k: int) -> dict:
    """The /predict response for rows of probabilities; the top-k of a row of ten in plain Python, cheaper
    than more array calls."""
    predictions = []
    for p in rows:
        labels = sorted(range(len(p)), key=p.__getitem__, reverse=True)[:top_k]  # stable: ties keep label order
        predictions.append({"label": labels[0], "probabilities": p,
                            "top_k": [{"label": label, "probability": p[label]} for label in labels]})
    return {"predictions": predictions, "model": model.describe()}


def classify(model: LoadedModel, batch: np.ndarray, top_k: int) -> dict:
    return answer(model, probabilities(model, batch), top_k)


def predict_parsed(request: ParsedRequest, cache: ModelCache, default: str | None = None) -> dict:
    model = resolve(cache, request.ref, default)
    return classify(model, to_batch(request.instances, model), request.top_k)


def predict(body: bytes, cache: ModelCache, max_batch: int, default: str | None = None) -> dict:
    return predict_parsed(parse_request(body, max_batch), cache, default)


def checked_inline(request: ParsedRequest, cache: ModelCache,
                   default: str | None = None) -> tuple[LoadedModel, np.ndarray] | None:
    """The model and checked input of a request that needs no I/O (the model is loaded and the reference
    fresh), so it can be answered on the event loop; None otherwise."""
    model = cached_model(cache, request.ref, default)
    return None if model is None else (model, to_batch(request.instances, model))


# Bodies up to this size (about 16 digits of 784 pixels) are parsed and answered on the event loop.
SMALL_BODY = 128 * 1024


def image_batch(files: list[tuple[str, bytes]], model: LoadedModel) -> np.ndarray:
    """PNG or JPEG digits of any size and colour depth, brought to the model's input the MNIST way."""
    return to_batch(np.stack([images.preprocess(data, name, model.input_shape, model.value_range)
                              for name, data in files]), model)


def predict_images(files: list[tuple[str, bytes]], ref: str | None, top_k: int, cache: ModelCache,
                   default: str | None = None) -> dict:
    model = resolve(cache, ref, default)
    return classify(model, image_batch(files, model), top_k)


# Uploads of up to this many images of up to this many pixels each (0.13 ms to decode and prepare a 28x28
# PNG, 0.2 ms a 128x128 one, 0.7 ms a 256x256 one) are prepared on the event loop; more, or larger ones, in a
# worker thread.
INLINE_IMAGES, INLINE_IMAGE_PIXELS = 4, 128 * 128


def checked_images_inline(files: list[tuple[str, bytes]], ref: str | None, cache: ModelCache,
                          default: str | None = None) -> tuple[LoadedModel, np.ndarray] | None:
    """As :func:`checked_inline`, for a few small images: their size is read from the file headers first."""
    if len(files) > INLINE_IMAGES or any(images.pixel_count(data) > INLINE_IMAGE_PIXELS for _, data in files):
        return None
    model = cached_model(cache, ref, default)
    return None if model is None else (model, image_batch(files, model))
