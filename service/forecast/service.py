"""Forecasts and anomaly checks from a registered forecaster; the preparation is the one the job fitted."""

from __future__ import annotations

import numpy as np

from models.forecast_serving import ForecastInputError, anomalies, forecast, readings_frame
from models.forecasting import ForecastSetup
from service.forecast.schemas import AnomaliesOut, ForecastOut, ForecastRequest, Readings
from service.http.errors import InvalidInput
from service.serving.models import LoadedModel
from service.serving.rollouts import Routing, checked, serve


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


def forecast_next(request: ForecastRequest, routing: Routing) -> ForecastOut:
    model, ticket = serve(routing, request.model, "forecast")
    result = checked(ticket, _forecast, model, request)
    if ticket is not None:  # the other version forecasts as many steps, for the comparison
        steps = len(result["values"])
        ticket.done(np.array([result["values"]]),
                    rerun=lambda other: np.array([_forecast(other, request, steps)["values"]]))
    setup = ForecastSetup.from_dict(model.forecast)
    points = [{"timestamp": t, "value": v, "lower": lo, "upper": hi}
              for t, v, lo, hi in zip(result["timestamps"], result["values"], result["lower"], result["upper"])]
    return ForecastOut(model=model.describe(), target=setup.target, interval=setup.interval, forecast=points)


def check_anomalies(request: Readings, routing: Routing) -> AnomaliesOut:
    model, ticket = serve(routing, request.model, "forecast")
    checked_readings = checked(ticket, _expected, model, request)
    if ticket is not None:  # compared on the one-step forecasts the check is made of
        ticket.done(np.array([[r["expected"] for r in checked_readings]]),
                    rerun=lambda other: np.array([[r["expected"] for r in _expected(other, request)]]))
    setup = ForecastSetup.from_dict(model.forecast)
    return AnomaliesOut(model=model.describe(), target=setup.target, interval=setup.interval,
                        anomalies=sum(r["anomaly"] for r in checked_readings), readings=checked_readings)
