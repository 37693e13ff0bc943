"""What the forecast endpoints take and answer."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Readings(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "model": "solar-lstm@production",
        "timestamps": ["2016-06-01 07:00:00", "2016-06-01 07:30:00"],
        "values": {"solar.total": [1.5, 11.2]},
    }]})

    model: str | None = Field(None, min_length=1, max_length=300, description="id, name, name@version or "
                              "name@alias; default TRAINSERVE_DEFAULT_FORECASTER, else the one forecaster at "
                              "production")
    timestamps: list[str] = Field(..., min_length=1, max_length=100_000, description="ISO 8601, increasing, at "
                                  "the model's frequency; read as wall-clock time like the training data")
    values: dict[str, list[Any]] = Field(..., description="per column, one value a timestamp: the target and "
                                         "the model's other inputs")


class ForecastRequest(Readings):
    horizon: int | None = Field(None, ge=1, description="steps ahead; default all the model forecasts")


class ModelRef(BaseModel):
    id: str
    name: str
    version: int


class ForecastPoint(BaseModel):
    timestamp: str
    value: float
    lower: float
    upper: float


class ForecastOut(BaseModel):
    model: ModelRef
    target: str
    interval: float = Field(description="the coverage that lower..upper was calibrated for on held-out data")
    forecast: list[ForecastPoint]


class CheckedReading(BaseModel):
    timestamp: str
    value: float
    expected: float
    lower: float
    upper: float
    anomaly: bool


class AnomaliesOut(BaseModel):
    model: ModelRef
    target: str
    interval: float
    anomalies: int
    readings: list[CheckedReading] = Field(description="every reading after the first lookback, checked against "
                                           "the one-step forecast from the readings before it")
