"""The Open Inference Protocol (KServe v2) over trainserve's registry and model cache, for HTTP and gRPC alike.

A model is addressed by its registry name (its newest version), or by name and version; trainserve also
takes ``name@alias`` as the name.

- A classifier takes one input, the digits' pixels (any numeric datatype, ``[n, pixels]`` or
  ``[n, height, width]``), and answers ``probabilities`` (FP32) and ``label`` (INT64). Its rows join the
  same dynamic batcher as ``/predict``, so concurrent callers of both share forward passes, and its numbers
  are ``/predict``'s.
- A next-step forecaster takes ``readings`` (``[n, lookback, columns]`` in the data's own units, the target
  first, then its ``inputs``) and, when it reads calendar features, ``timestamps`` (``[n, lookback]``,
  INT64 seconds since 1970 of the readings' wall-clock times); it answers ``forecast``, ``lower`` and
  ``upper`` (``[n, horizon]``), the numbers ``/forecast`` gives for the same readings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np
import pandas as pd

from models.forecast_serving import ForecastInputError, forecast
from models.forecasting import ForecastSetup
from service.http.errors import InvalidInput
from service.inference_v2.tensors import InferRequest, Tensor
from service.registry import service as registry
from service.serving.batching import Batcher
from service.serving.models import LoadedModel, ModelCache, resolve, to_batch
from service.serving.rollouts import Routing, Served, answered, serve, serve_cached

CLASSIFIER_OUTPUTS = ("probabilities", "label")
FORECASTER_OUTPUTS = ("forecast", "lower", "upper")
EXTENSIONS = ["binary_tensor_data", "compression"]  # what the server metadata advertises


def model_ref(name: str, version: str | None) -> str:
    if version is None or version == "":
        return name
    if not version.isdigit():
        raise InvalidInput(f"model version must be a number, not {version!r}")
    return f"{name.partition('@')[0]}@{version}"


def server_metadata() -> dict:
    return {"name": "trainserve", "version": "0.1.0", "extensions": EXTENSIONS}


def _setup(model: LoadedModel) -> ForecastSetup | None:
    return ForecastSetup.from_dict(model.forecast) if model.forecast is not None else None


def metadata(cache: ModelCache, name: str, version: str | None) -> dict:
    model = resolve(cache, model_ref(name, version), None, task=None)
    with cache.runtime.session() as session:
        versions = [str(m.version) for m in registry.list_models(session, model.name, 200, 0)[0]]
    setup = _setup(model)
    if setup is None:
        inputs = [{"name": "pixels", "datatype": "FP32", "shape": [-1, *model.input_shape]}]
        outputs = [{"name": "probabilities", "datatype": "FP32", "shape": [-1, model.num_classes]},
                   {"name": "label", "datatype": "INT64", "shape": [-1]}]
    else:
        inputs = [{"name": "readings", "datatype": "FP32", "shape": [-1, setup.lookback, len(setup.columns)]},
                  {"name": "timestamps", "datatype": "INT64", "shape": [-1, setup.lookback]}]
        outputs = [{"name": n, "datatype": "FP32", "shape": [-1, setup.horizon]} for n in FORECASTER_OUTPUTS]
    return {"name": model.name, "versions": versions, "platform": "pytorch", "inputs": inputs, "outputs": outputs}


def ready_model(cache: ModelCache, name: str, version: str | None) -> LoadedModel:
    """The model, loaded in this process (loading it if need be)."""
    return resolve(cache, model_ref(name, version), None, task=None)


async def find_model(routing: Routing, name: str, version: str | None, off_loop: Callable[..., Awaitable]) -> Served:
    """The model a call names (routed where a rollout runs on its alias): from this process's cache, or (a
    database look-up, perhaps a load) off the event loop through ``off_loop(fn, *args)``. Looked up before
    the request is read: an unknown model is a 404 (NOT_FOUND) whatever the body holds."""
    ref = model_ref(name, version)
    return serve_cached(routing, ref, None) or await off_loop(serve, routing, ref, None)


async def infer(request: InferRequest, served: Served, routing: Routing, batcher: Batcher, max_batch: int,
                off_loop: Callable[..., Awaitable]) -> list[Tensor]:
    """The model's output tensors, as the request asks for them. A classifier runs inline, batched with the
    other requests of the moment; a forecaster off the loop."""
    model, ticket = served
    batch = None
    try:
        if model.forecast is not None:
            outputs = await off_loop(_forecast, model, request, max_batch)
        else:
            outputs, batch = await _classify(model, request, batcher, max_batch)
    except BaseException:
        if ticket is not None:
            ticket.failed()
        raise
    if batch is not None:
        answered(routing, model, ticket, batch, outputs[0].array, batch=batch)
    else:
        answered(routing, model, ticket, request.inputs[0].array if request.inputs else np.zeros((0,)), outputs[0].array,
                 rerun=lambda other: _forecast(other, request, max_batch)[0].array,
                 logged={name: t.array for name, t in zip(("values", "lower", "upper"), outputs)})
    return _requested(outputs, request)


async def _classify(model: LoadedModel, request: InferRequest, batcher: Batcher,
                    max_batch: int) -> tuple[list[Tensor], np.ndarray]:
    if len(request.inputs) != 1:
        raise InvalidInput(f"model {model.name} takes one input, the digits' pixels; got {len(request.inputs)}")
    x = request.inputs[0].array
    if x.ndim == 0 or x.shape[0] > max_batch:
        raise InvalidInput(f"{x.shape[0] if x.ndim else 0} instances in one request; send 1 to {max_batch}",
                           status_code=413 if x.ndim else 400)
    batch = to_batch(x.astype(np.float32, copy=False), model)
    rows = np.asarray(await batcher.probabilities(model, batch), dtype=np.float32)
    return [Tensor("probabilities", "FP32", rows), Tensor("label", "INT64", rows.argmax(axis=1).astype(np.int64))], batch


def _forecast(model: LoadedModel, request: InferRequest, max_batch: int) -> list[Tensor]:
    setup = _setup(model)
    if setup.framing != "next_steps":
        raise InvalidInput(f"model {model.name} forecasts a day's total from a day's readings, which vary in number; "
                           "POST /forecast serves it")
    tensors = {t.name: t.array for t in request.inputs}
    unknown = sorted(set(tensors) - {"readings", "timestamps"})
    if unknown or "readings" not in tensors:
        raise InvalidInput(f"model {model.name} takes inputs readings [n, {setup.lookback}, {len(setup.columns)}] "
                           f"and timestamps [n, {setup.lookback}]; got {', '.join(map(repr, tensors)) or 'none'}")
    readings = tensors["readings"].astype(np.float64)
    expected = (setup.lookback, len(setup.columns))
    if readings.ndim != 3 or readings.shape[1:] != expected:
        raise InvalidInput(f"readings must have shape [n, {expected[0]}, {expected[1]}] (the last {setup.lookback} "
                           f"readings of {', '.join(setup.columns)}); got {list(readings.shape)}")
    if len(readings) > max_batch:
        raise InvalidInput(f"{len(readings)} instances in one request; send at most {max_batch}", status_code=413)
    stamps = tensors.get("timestamps")
    if stamps is None and setup.calendar:
        raise InvalidInput(f"model {model.name} reads the calendar ({', '.join(setup.calendar)}): send timestamps "
                           f"[n, {setup.lookback}], INT64 seconds since 1970 of the readings' wall-clock times")
    if stamps is not None and stamps.shape != readings.shape[:2]:
        raise InvalidInput(f"timestamps must have shape [n, {setup.lookback}], one a reading; got {list(stamps.shape)}")
    rows = []
    for i in range(len(readings)):
        if stamps is not None:
            index = pd.DatetimeIndex(pd.to_datetime(stamps[i].astype(np.int64), unit="s"))
            steps = np.diff(index.values)
            if (steps != setup.frequency.to_timedelta64()).any():
                raise InvalidInput(f"timestamps[{i}] are not {setup.frequency} apart; this model takes readings "
                                   f"every {setup.frequency} without gaps")
        else:  # no calendar: only the spacing matters, and the readings are taken as evenly spaced
            index = pd.date_range("2000-01-01", periods=setup.lookback, freq=setup.frequency)
        frame = pd.DataFrame(readings[i], index=index, columns=setup.columns)
        if not np.isfinite(readings[i]).all():
            raise InvalidInput(f"readings[{i}] holds NaN or infinite values")
        try:
            rows.append(forecast(model.module, setup, frame, setup.horizon))
        except ForecastInputError as exc:
            raise InvalidInput(str(exc)) from None
    return [Tensor(name, "FP32", np.array([r[key] for r in rows], dtype=np.float32).reshape(len(rows), setup.horizon))
            for name, key in zip(FORECASTER_OUTPUTS, ("values", "lower", "upper"))]


def _requested(outputs: list[Tensor], request: InferRequest) -> list[Tensor]:
    """The outputs asked for, in the order asked, each binary or JSON as asked; all of them when none were."""
    by_name = {t.name: t for t in outputs}
    if not request.outputs:
        return [Tensor(t.name, t.datatype, t.array, request.binary_output) for t in outputs]
    unknown = [o.name for o in request.outputs if o.name not in by_name]
    if unknown:
        raise InvalidInput(f"unknown output(s) {unknown}; this model has {list(by_name)}")
    return [Tensor(o.name, by_name[o.name].datatype, by_name[o.name].array, o.binary) for o in request.outputs]


def response_header(model: LoadedModel, request: InferRequest) -> dict:
    header = {"model_name": model.name, "model_version": str(model.version)}
    if request.id is not None:
        header["id"] = request.id
    return header

