"""Forecasts and anomaly checks from a registered forecaster; the preparation is the one the job fitted."""

from __future__ import annotations

import numpy as np

from models.forecast_serving import ForecastInputError, anomalies, forecast, readings_frame
from models.forecasting import ForecastSetup
from service.forecast.schemas import AnomaliesOut, ForecastOut, ForecastRequest, Readings
from service.http.errors import InvalidInput
from service.serving.models import LoadedModel
from service.serving.rollouts import Routing, answered, checked, serve


def _prepared(model: LoadedModel, request: Readings) -> tuple[ForecastSetup, object]:
    setup = ForecastSetup.from_dict(model.forecast)
    try:
        frame = readings_frame(setup, request.timestamps, request.values)
    except ForecastInputError as exc:
        raise InvalidInput(str(exc)) from None
    return setup, frame


def _forecast(model: LoadedModel, request: ForecastRequest, horizon: int | None = None) -> dict:
    setup, frame = _prepared(model, request)
    try:
        return forecast(model.module, setup, frame, horizon or request.horizon or setup.horizon)
    except ForecastInputError as exc:
        raise InvalidInput(str(exc), details=[{"field": "horizon" if "horizon" in str(exc) else "timestamps",
                                               "message": "cannot forecast"}]) from None


def _expected(model: LoadedModel, request: Readings) -> list[dict]:
    setup, frame = _prepared(model, request)
    try:
        return anomalies(model.module, setup, frame)
    except ForecastInputError as exc:
        raise InvalidInput(str(exc)) from None


def _readings(request: Readings) -> np.ndarray:
    """The request's readings as the prediction log keeps them: one instance, every column's values."""
    return np.array([[float(v) for values in request.values.values() for v in values]], dtype=np.float32)


def forecast_next(request: ForecastRequest, routing: Routing) -> ForecastOut:
    model, ticket = serve(routing, request.model, "forecast")
    result = checked(ticket, _forecast, model, request)
    steps = len(result["values"])  # the other version forecasts as many steps, for the comparison
    answered(routing, model, ticket, _readings(request), np.array([result["values"]]),
             rerun=lambda other: np.array([_forecast(other, request, steps)["values"]]),
             logged={key: [result[key]] for key in ("values", "lower", "upper")})
    setup = ForecastSetup.from_dict(model.forecast)
    points = [{"timestamp": t, "value": v, "lower": lo, "upper": hi}
              for t, v, lo, hi in zip(result["timestamps"], result["values"], result["lower"], result["upper"])]
    return ForecastOut(model=model.describe(), target=setup.target, interval=setup.interval, forecast=points)


def check_anomalies(request: Readings, routing: Routing) -> AnomaliesOut:
    model, ticket = serve(routing, request.model, "forecast")
    checked_readings = checked(ticket, _expected, model, request)
    expected = [[r["expected"] for r in checked_readings]]  # compared on the one-step forecasts of the check
    answered(routing, model, ticket, _readings(request), np.array(expected),
             rerun=lambda other: np.array([[r["expected"] for r in _expected(other, request)]]),
             logged={"values": expected, "lower": [[r["lower"] for r in checked_readings]],
                     "upper": [[r["upper"] for r in checked_readings]]})
    setup = ForecastSetup.from_dict(model.forecast)
    return AnomaliesOut(model=model.describe(), target=setup.target, interval=setup.interval,
                        anomalies=sum(r["anomaly"] for r in checked_readings), readings=checked_readings)
