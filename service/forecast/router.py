from __future__ import annotations

from fastapi import APIRouter, Request

from service.forecast import service
from service.forecast.schemas import AnomaliesOut, ForecastOut, ForecastRequest, Readings
from service.http.auth import allow
from service.http.errors import errors
from service.http.ratelimit import limited
from service.keys.service import Scope
from service.serving.rollouts import Routing, routing_key

router = APIRouter(prefix="/forecast", tags=["forecast"], dependencies=[allow(Scope.predict), limited("inference")])


@router.post("", response_model=ForecastOut, responses=errors(404, 429))
def forecast(body: ForecastRequest, request: Request) -> ForecastOut:
    """The next values after the most recent readings, with a prediction interval, from a forecaster (the
    one `model` names, else TRAINSERVE_DEFAULT_FORECASTER, else the newest). A `day_total` model answers
    the day's final value."""
    return service.forecast_next(body, _routing(request))


@router.post("/anomalies", response_model=AnomaliesOut, responses=errors(404, 429))
def forecast_anomalies(body: Readings, request: Request) -> AnomaliesOut:
    """Flag each reading outside the interval of the one-step forecast made from the readings before it."""
    return service.check_anomalies(body, _routing(request))


def _routing(request: Request) -> Routing:
    state = request.app.state
    return Routing(state.models, state.rollouts, state.settings.default_forecaster,
                   routing_key(state.rollouts, request.headers), state.prediction_log)
