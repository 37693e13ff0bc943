"""Forecasts and anomaly checks from a registered forecaster; the preparation is the one the job fitted."""

from __future__ import annotations

from models.forecast_serving import ForecastInputError, anomalies, forecast, readings_frame
from models.forecasting import ForecastSetup
from service.forecast.schemas import AnomaliesOut, ForecastOut, ForecastRequest, Readings
from service.http.errors import InvalidInput
from service.serving.models import LoadedModel, ModelCache, resolve


def _prepared(request: Readings, cache: ModelCache, default: str | None) -> tuple[LoadedModel, ForecastSetup, object]:
    model = resolve(cache, request.model, default, task="forecast")
    setup = ForecastSetup.from_dict(model.forecast)
    try:
        frame = readings_frame(setup, request.timestamps, request.values)
    except ForecastInputError as exc:
        raise InvalidInput(str(exc)) from None
    return model, setup, frame


def forecast_next(request: ForecastRequest, cache: ModelCache, default: str | None = None) -> ForecastOut:
    model, setup, frame = _prepared(request, cache, default)
    try:
        result = forecast(model.module, setup, frame, request.horizon or setup.horizon)
    except ForecastInputError as exc:
        raise InvalidInput(str(exc), details=[{"field": "horizon" if "horizon" in str(exc) else "timestamps",
                                               "message": "cannot forecast"}]) from None
    points = [{"timestamp": t, "value": v, "lower": lo, "upper": hi}
              for t, v, lo, hi in zip(result["timestamps"], result["values"], result["lower"], result["upper"])]
    return ForecastOut(model=model.describe(), target=setup.target, interval=setup.interval, forecast=points)


def check_anomalies(request: Readings, cache: ModelCache, default: str | None = None) -> AnomaliesOut:
    model, setup, frame = _prepared(request, cache, default)
    try:
        checked = anomalies(model.module, setup, frame)
    except ForecastInputError as exc:
        raise InvalidInput(str(exc)) from None
    return AnomaliesOut(model=model.describe(), target=setup.target, interval=setup.interval,
                        anomalies=sum(r["anomaly"] for r in checked), readings=checked)
