"""The serving core that /predict, /forecast, the v2 protocol and the registry's checks share: a model loaded
from the registry, the process cache of loaded models and of what each reference points at, resolving a
request's reference with no database round trip on the hot path, turning instances into a checked batch, and
the forward pass.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from math import prod
from typing import Callable

import numpy as np
import torch

from models.export import model_from_bytes
from models.fastpath import dense_forward
from service.http.errors import InvalidInput
from service.platform.runtime import Runtime
from service.platform.tables import TrainedModel
from service.registry import service as registry


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
    profile: dict | None = None  # a classifier's reference profile, that its logged requests are counted in

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

    def __init__(self, runtime: Runtime, capacity: int, ref_ttl: float):
        self.runtime, self.capacity, self.ref_ttl = runtime, capacity, ref_ttl
        self._models: OrderedDict[uuid.UUID, LoadedModel] = OrderedDict()
        self._refs: dict[str, tuple[uuid.UUID, float]] = {}
        self._lock = threading.Lock()
        self.hits = self.misses = self.loads = 0  # for /metrics: counted here, read at scrape time
        self.load_seconds = 0.0

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
                self.hits += 1
            else:
                self.misses += 1
            return model

    def load(self, row: TrainedModel) -> LoadedModel:
        if (hit := self.cached(row.id)) is not None:
            return hit
        started = time.perf_counter()
        module, config = model_from_bytes(self.runtime.store.get(row.artifact_key, row.sha256))
        with torch.inference_mode():  # warm up, so the first request is not the slow one
            module(torch.zeros((1, *config.input_shape)))
        model = LoadedModel(row.id, row.name, row.version, config.input_shape, config.value_range,
                            config.num_classes, module, config.forecast,
                            dense_forward(module) if config.forecast is None else None, row.profile)
        with self._lock:
            self.loads, self.load_seconds = self.loads + 1, self.load_seconds + time.perf_counter() - started
            self._models[row.id] = model
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
        return model


def holds_boolean(values: list) -> bool:
    """Whether nested lists hold a JSON true or false anywhere: NumPy would read it as 1.0 or 0.0."""
    return any(isinstance(v, bool) or (isinstance(v, list) and holds_boolean(v)) for v in values)


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


def _default_key(task: str) -> str:
    """The reference cache's key for the default route when no default is set (registry.default_model)."""
    return f"@default-{task}"


WRONG_TASK = {"classification": "a digit classifier; /predict takes it",
              "forecast": "a forecaster; /forecast takes it"}


def cached_model(cache: ModelCache, ref: str | None, default: str | None,
                 task: str | None = "classification") -> LoadedModel | None:
    """The model a request names, if this process has it loaded and trusts the reference: no I/O at all."""
    ref = ref or default
    model_id = cache.ref(ref or _default_key(task))
    if model_id is None and ref is not None:
        try:
            model_id = uuid.UUID(ref)  # an id always names the same version
        except ValueError:
            return None
    model = cache.cached(model_id) if model_id is not None else None
    if model is not None and task is not None and (model.forecast is not None) != (task == "forecast"):
        raise InvalidInput(f"model {model.name} v{model.version} is "
                           f"{WRONG_TASK['forecast' if model.forecast is not None else 'classification']}")
    return model


def resolve(cache: ModelCache, ref: str | None, default: str | None,
            task: str | None = "classification") -> LoadedModel:
    """The model a request names, or the default route; the hot path makes no database round trip.
    ``task`` None takes a model of either task (a name is then needed)."""
    if (hit := cached_model(cache, ref, default, task)) is not None:
        return hit
    ref = ref or default
    key = ref or _default_key(task)
    with cache.runtime.session() as session:
        row = registry.resolve(session, ref) if ref else registry.default_model(session, task)
        if task is not None and row.task != task:
            raise InvalidInput(f"model {row.name} v{row.version} is {WRONG_TASK.get(row.task, row.task)}")
    model = cache.load(row)  # a miss reads the model file with no database session open
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


