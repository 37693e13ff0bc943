"""What `POST /v1/sweeps` takes and what the sweep routes answer."""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.jobs.spec import PromoteSpec, Strict

METRICS = {
    # metric: (direction, the task that reports it per epoch, what it is)
    "val_loss": ("minimize", None, "the validation loss"),
    "val_accuracy": ("maximize", "classification", "the validation accuracy"),
    "val_rmse": ("minimize", "forecast", "the forecaster's validation RMSE: the square root of its mse val_loss"),
}
MAX_TRIALS = 500
MAX_PARALLEL = 32


class Parameter(Strict):
    """One dimension of the search: `choices`, or a `low`..`high` range of floats or (with `type: int`)
    whole numbers, on a log scale with `log`, in steps of `step` if given."""

    type: Literal["float", "int", "categorical"] = Field(
        "float", description="float or int: a range from low to high; categorical: one of choices")
    low: float | None = None
    high: float | None = None
    log: bool = Field(False, description="Sample the range on a log scale (low must be above 0).")
    step: float | None = Field(None, gt=0, description="Only multiples of step from low (a grid needs it for ranges).")
    choices: list[Any] | None = Field(None, description="For categorical: the values to choose among (numbers, "
                                                        "strings, booleans, lists).")

    @model_validator(mode="after")
    def _well_formed(self) -> "Parameter":
        if self.type == "categorical":
            if self.low is not None or self.high is not None or self.log or self.step is not None:
                raise ValueError("a categorical parameter takes choices only, not low, high, log or step")
            if not self.choices:
                raise ValueError("choices is empty: list at least one value")
            return self
        if self.choices is not None:
            raise ValueError(f"choices belong to type categorical; a {self.type} parameter takes low and high")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} range needs both low and high")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an int range takes whole numbers for low and high")
        if not self.low < self.high:
            raise ValueError(f"the range {self.low:g}..{self.high:g} is empty: low must be below high")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range must start above 0, not at {self.low:g}")
        if self.log and self.step is not None:
            raise ValueError("log and step do not go together: choose one")
        return self

    def grid(self) -> list[Any] | None:
        """The values a grid search tries, or None where the range is continuous."""
        if self.choices is not None:
            return list(self.choices)
        if self.type == "int" and not self.log:
            step = int(self.step or 1)
            return list(range(int(self.low), int(self.high) + 1, step))
        if self.step is not None:
            count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
            return [round(self.low + i * self.step, 12) for i in range(count)]
        return None

    def bounds(self) -> list[Any]:
        """Values that stand for the whole range when checking that the spec takes them."""
        return list(self.choices) if self.choices is not None else [
            int(self.low) if self.type == "int" else self.low, int(self.high) if self.type == "int" else self.high]


class Budget(Strict):
    trials: int = Field(20, ge=1, le=MAX_TRIALS, description="Trials in all.")
    parallel: int = Field(2, ge=1, le=MAX_PARALLEL, description="Trials queued or running at once, at most.")
    timeout_seconds: float | None = Field(None, gt=0, description="Start no trial after this long; the running "
                                                                 "ones finish.")


class Pruner(Strict):
    type: Literal["median", "successive_halving", "hyperband", "none"] = "median"
    startup_trials: int = Field(3, ge=0, le=100, description="median: prune nothing until this many trials "
                                                             "have finished.")
    warmup_epochs: int = Field(1, ge=0, le=1000, description="median: never prune a trial before this many "
                                                             "epochs.")
    min_epochs: int = Field(1, ge=1, le=1000, description="successive_halving and hyperband: the fewest epochs "
                                                          "a trial trains (Optuna's min_resource).")
    reduction_factor: int = Field(3, ge=2, le=10, description="successive_halving and hyperband: keep the best "
                                                              "1/reduction_factor at each rung.")


class SweepIn(Strict):
    """A search over a job spec's settings: trials are ordinary jobs, sampled by Optuna, pruned at epoch ends
    on the validation metric; the best is registered under `name`."""

    name: str = Field(..., min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                      description="The model name the best trial is registered under.")
    base: dict[str, Any] = Field(..., description="A job spec (as POST /v1/jobs takes) that every trial starts from.")
    space: dict[str, Parameter] = Field(
        ..., min_length=1, description="Spec paths (dot-separated, e.g. training.learning_rate, optimizer.type, "
                                       "architecture.hidden_sizes) and what to try at each.")
    metric: Literal["val_loss", "val_accuracy", "val_rmse"] = "val_loss"
    direction: Literal["minimize", "maximize"] | None = Field(None, description="Default: the metric's own "
                                                                                "(maximize accuracy, minimize the rest).")
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    seed: int = Field(0, ge=0, le=2**31 - 1, description="The sampler's seed.")
    budget: Budget = Field(default_factory=Budget)
    pruner: Pruner = Field(default_factory=Pruner)
    promote: PromoteSpec | None = Field(None, description="Set this alias on the registered best model if it "
                                                          "passes the gate.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "name": "digits-lr-search",
        "base": {"dataset": "digits", "architecture": {"type": "logistic_regression"},
                 "optimizer": {"type": "sgd", "momentum": 0.0}, "training": {"epochs": 8}},
        "space": {"training.learning_rate": {"low": 1e-5, "high": 1.0, "log": True}},
        "metric": "val_loss", "sampler": "tpe", "budget": {"trials": 12, "parallel": 2},
        "pruner": {"type": "median"},
    }]})

    @model_validator(mode="after")
    def _direction(self) -> "SweepIn":
        expected = METRICS[self.metric][0]
        if self.direction is None:
            self.direction = expected
        elif self.direction != expected:
            raise ValueError(f"direction {self.direction} for {self.metric}: {METRICS[self.metric][2]} is better "
                             f"{'higher' if expected == 'maximize' else 'lower'}; use {expected} or leave it out")
        return self


class TrialOut(BaseModel):
    number: int
    job_id: uuid.UUID
    status: str
    params: dict[str, Any]
    value: float | None = Field(description="The metric at the epoch the trial kept (its last, or its best "
                                            "with early stopping); null until it has one.")
    epochs_done: int
    curve: list[float | None] = Field(description="The metric after each epoch.")


class SweepOut(BaseModel):
    id: uuid.UUID
    name: str
    status: str = Field(description="running, succeeded, failed or cancelled")
    metric: str
    direction: str
    request: dict[str, Any]
    counts: dict[str, int] = Field(description="Trials by status: queued, running, succeeded, pruned, failed, "
                                               "cancelled.")
    best: TrialOut | None
    trials: list[TrialOut]
    importances: dict[str, float] | None = Field(description="How much each parameter mattered to the metric "
                                                             "(Optuna's fANOVA), once enough trials finished.")
    model: dict[str, Any] | None = Field(description="The registered best model: id, name, version.")
    result: dict[str, Any] | None
    error: str | None
    cancel_requested: bool
    created_at: datetime
    finished_at: datetime | None


class SweepSummary(BaseModel):
    id: uuid.UUID
    name: str
    status: str
    metric: str
    counts: dict[str, int]
    created_at: datetime
    finished_at: datetime | None


class SweepPage(BaseModel):
    items: list[SweepSummary]
    total: int
    limit: int
    offset: int
