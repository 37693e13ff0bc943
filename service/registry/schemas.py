from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.datasets.schemas import DatasetRef

ALIAS_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"


class ModelOut(BaseModel):
    id: uuid.UUID
    name: str
    version: int
    task: str
    architecture: str
    dataset: DatasetRef
    job_id: uuid.UUID
    input_shape: list[int]
    value_range: list[float]
    num_classes: int
    aliases: list[str] = Field(description="Aliases that point at this version, e.g. production.")
    exports: dict[str, dict] = Field(description="TorchScript and ONNX exports: status, the largest difference "
                                                 "from the eager model's probabilities on held-out inputs, error.")
    metrics: dict
    sha256: str
    size_bytes: int
    created_at: datetime


class ModelPage(BaseModel):
    items: list[ModelOut]
    total: int
    limit: int
    offset: int



class AliasIn(BaseModel):
    version: int = Field(ge=1, le=2**31 - 1, description="The version of the model the alias should point at.")


CLASSIFIER_METRICS = ("test_accuracy", "test_macro_f1")  # higher is better
FORECASTER_METRICS = ("test_rmse", "test_mae")  # lower is better; in the target's units


class GateIn(BaseModel):
    """A version's test figures against a bar, and against the version an alias points at now on `metric`.
    Classifiers: `metric` at least `min`. Forecasters: `metric` at most `max`, and lower than the persistence
    and seasonal-naive baselines' on the same test windows."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    metric: Literal["test_accuracy", "test_macro_f1", "test_rmse", "test_mae"] | None = Field(
        None, description="default test_accuracy for a classifier, test_rmse for a forecaster")
    min: float | None = Field(None, ge=0.0, le=1.0, description="classifiers: the bar the metric must clear "
                                                                "(default: chance, for test_accuracy)")
    max: float | None = Field(None, gt=0.0, description="forecasters: the most test_rmse or test_mae may be, in "
                                                         "the target's units")
    beats_persistence: bool | None = Field(None, description="forecasters (default true): the metric must be "
                                           "lower than the persistence baseline's (the last reading)")
    beats_seasonal_naive: bool | None = Field(None, description="forecasters (default true): the metric must be "
                                              "lower than the seasonal-naive baseline's (a season ago)")

    def for_task(self, task: str) -> "GateIn":
        """The gate with its defaults for a classifier or a forecaster; ValueError for checks that do not apply."""
        if task == "forecast":
            if self.metric in CLASSIFIER_METRICS:
                raise ValueError(f"promote.metric {self.metric} is for classifiers; a forecaster is judged on "
                                 "test_rmse or test_mae")
            if self.min is not None:
                raise ValueError("promote.min is a classifier's bar; bound a forecaster's error with promote.max")
            return self.model_copy(update={
                "metric": self.metric or "test_rmse",
                "beats_persistence": self.beats_persistence is not False,
                "beats_seasonal_naive": self.beats_seasonal_naive is not False})
        if self.metric in FORECASTER_METRICS:
            raise ValueError(f"promote.metric {self.metric} is for forecasters; a classifier is judged on "
                             "test_accuracy or test_macro_f1")
        wrong = [f for f in ("max", "beats_persistence", "beats_seasonal_naive") if getattr(self, f)]
        if wrong:
            raise ValueError(f"promote.{wrong[0]} is a forecaster's check; a classifier's gate takes metric and min")
        return self.model_copy(update={"metric": self.metric or "test_accuracy", "min": self.min,
                                       "beats_persistence": None, "beats_seasonal_naive": None})


class PromoteIn(GateIn):
    """A promotion gate: point `alias` at the version only if it passes every check, and beats the version the
    alias points at now on `metric`. Classifiers: `metric` at least `min`. Forecasters: `metric` at most
    `max`, and lower than the persistence and seasonal-naive baselines' on the same test windows."""

    alias: str = Field(pattern=ALIAS_PATTERN, examples=["production"])


class PromotionOut(BaseModel):
    alias: str
    metric: str
    min: float | None = Field(None, description="a classifier's bar")
    max: float | None = Field(None, description="a forecaster's bound")
    beats_persistence: bool | None = Field(None, description="whether the gate required beating persistence")
    beats_seasonal_naive: bool | None = Field(None, description="whether the gate required beating seasonal naive")
    value: float | None = Field(description="this version's metric")
    moved: bool = Field(description="whether the alias now points at this version")
    previous_version: int | None = Field(description="the version the alias pointed at before")
    reason: str


class AliasOut(BaseModel):
    name: str
    alias: str
    version: int
    model_id: uuid.UUID
    updated_at: datetime
