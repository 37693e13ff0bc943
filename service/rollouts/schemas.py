from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.registry.schemas import ALIAS_PATTERN

MAX_STEPS = 20
STATUSES = ("running", "paused", "succeeded", "rolled_back")


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    weight: float = Field(gt=0, le=100, description="canary: the share of requests, in %, the candidate serves in "
                                                    "this step; shadow: the share, in %, also run on the candidate.")
    min_seconds: float = Field(60.0, ge=0, le=7 * 86400, description="The step lasts at least this long.")
    min_requests: int = Field(200, ge=0, le=10**9, description="... and until the candidate has had this many "
                                                               "requests (shadow: duplicate passes).")


CANARY_STEPS = [Step(weight=w) for w in (5, 25, 50, 100)]
SHADOW_STEPS = [Step(weight=100)]


class Gates(BaseModel):
    """Judged on the current step's live counts, summed over every API replica. Any gate failing rolls the
    rollout back at once (once `min_requests` is reached); all passing, and the step's time and requests
    spent, move it on."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    min_requests: int = Field(50, ge=1, le=10**9, description="No verdict before the candidate has had this many "
                                                              "requests in the step (shadow: duplicate passes).")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="The candidate's failed requests over its requests "
                                                                "(any error after routing, as for the stable one).")
    max_latency_ratio: float = Field(1.5, ge=1, le=1000, description="The candidate's p99 latency over the stable "
                                                                     "version's in the same step.")
    latency_slack_ms: float = Field(5.0, ge=0, le=60_000, description="A candidate p99 within this many ms of the "
                                                                      "stable one's passes whatever the ratio.")
    min_agreement: float | None = Field(0.9, ge=0, le=1, description="Classifiers: the share of compared instances "
                                                                     "on which both versions give the same top-1 label. "
                                                                     "null: not judged.")
    max_difference: float | None = Field(0.2, ge=0, le=1000, description="Forecasters: the sum of |candidate - "
                                                                         "stable| over the sum of |stable| on compared "
                                                                         "forecasts. null: not judged.")
    min_compared: int = Field(50, ge=1, le=10**9, description="Agreement is judged once this many instances of the "
                                                              "step were run on both versions.")
    max_accuracy_drop: float | None = Field(None, ge=0, le=1, description="Classifiers whose answers get feedback "
                                                                         "(POST /v1/feedback): the candidate's live "
                                                                         "accuracy at most this far below the stable "
                                                                         "version's, on the labelled instances of the "
                                                                         "step. null: not judged.")
    min_labels: int = Field(100, ge=1, le=10**9, description="Live accuracy is judged once each version has this "
                                                             "many labelled instances in the step.")


class RolloutPlan(BaseModel):
    """How a rollout moves traffic and judges it: its mode, steps, gates and comparisons."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    mode: Literal["canary", "shadow"] = "canary"
    steps: list[Step] | None = Field(None, min_length=1, max_length=MAX_STEPS, description=(
        "canary: weights that rise and end at 100, default 5, 25, 50, 100 %; shadow: default one step at 100 %. "
        "Each step: min_seconds (default 60), min_requests (default 200)."))
    gates: Gates = Field(default_factory=Gates)
    compare_share: float = Field(5.0, ge=0, le=100, description="canary: the share of requests, in %, also run on "
                                                                "the other version (after the answer) to measure "
                                                                "agreement.")

    @model_validator(mode="after")
    def _steps(self) -> RolloutPlan:
        if self.steps is None:
            self.steps = [s.model_copy() for s in (CANARY_STEPS if self.mode == "canary" else SHADOW_STEPS)]
        weights = [s.weight for s in self.steps]
        if self.mode == "canary" and (any(b <= a for a, b in zip(weights, weights[1:])) or weights[-1] != 100):
            raise ValueError(f"steps: a canary's weights must rise step by step and end at 100; got {weights}")
        if self.mode == "canary" and self.gates.min_agreement is not None and self.compare_share == 0:
            raise ValueError("compare_share is 0, so agreement is never measured: set compare_share above 0, or "
                             "gates.min_agreement to null")
        return self


class RolloutIn(RolloutPlan):
    candidate: int | str = Field(description="The version to roll out: its number under this name, `name@7`, or "
                                             "its id.", examples=[4])
    alias: str = Field("production", pattern=ALIAS_PATTERN, description="The alias the candidate takes over; it "
                                                                          "must point at a version now (the stable one).")


class ArmStats(BaseModel):
    requests: int
    errors: int
    error_rate: float | None
    p50_ms: float | None
    p99_ms: float | None
    compared: int


class GateResult(BaseModel):
    gate: str
    value: float | None = Field(description="The candidate's number (None: not measured yet).")
    bound: float | None = Field(description="None: not measurable yet (the stable version's p99 before it has enough "
                                            "requests).")
    stable: float | None = Field(None, description="The stable version's number, where there is one.")
    passed: bool | None = Field(description="None: not enough requests yet to judge.")
    reason: str


class VersionRef(BaseModel):
    id: uuid.UUID
    version: int


class RolloutOut(BaseModel):
    id: uuid.UUID
    name: str
    alias: str
    mode: str
    status: Literal["running", "paused", "succeeded", "rolled_back"]
    stable: VersionRef
    candidate: VersionRef
    step: int = Field(description="The step running now, from 0.")
    weight: float = Field(description="The current step's weight, in %.")
    steps: list[Step]
    gates: Gates
    compare_share: float
    step_started_at: datetime
    live: dict[str, ArmStats] = Field(description="This step's counts so far, by arm (stable, candidate), summed "
                                                  "over the replicas' last flushes.")
    checks: list[GateResult] = Field(description="Each gate against this step's counts now.")
    reason: str | None = Field(description="Why it ended: the gate and both numbers, or who ended it.")
    history: list[dict] = Field(description="Its events, oldest first (the newest 50): each step begun, each verdict "
                                            "with the gates' numbers, each change of status; the event stream has "
                                            "them all, with each step's live numbers too.")
    created_at: datetime
    finished_at: datetime | None


class RolloutPage(BaseModel):
    items: list[RolloutOut]
    total: int
    limit: int
    offset: int
