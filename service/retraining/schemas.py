from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.monitoring.schemas import Whole
from service.registry.schemas import ALIAS_PATTERN, GateIn
from service.rollouts.schemas import RolloutPlan


class Triggers(BaseModel):
    """What starts a retraining; any one of those set does."""

    # strict: a number is a JSON number and a switch a JSON boolean, as the schema says, never "0.9" or "true"
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    drift: bool = Field(False, description="Classifiers: the alias's version drifts (its largest PSI over the "
                                           "last TRAINSERVE_DRIFT_WINDOW_MINUTES passes the name's threshold).")
    min_live_accuracy: float | None = Field(None, ge=0, le=1, description="Classifiers: the alias's version's "
                                            "accuracy on the labelled live instances of the last day falls "
                                            "below this, on at least min_labels of them.")
    min_labels: Whole = Field(100, ge=1, le=10**9, description="Labelled live instances before live accuracy "
                                                             "counts.")
    every_hours: float | None = Field(None, ge=0.1, le=24 * 366, description="On a schedule: this long after the "
                                                                              "last retraining began.")


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    alias: str = Field("production", pattern=ALIAS_PATTERN, description="The alias whose version is watched, "
                                                                        "and that the new version rolls out to.")
    triggers: Triggers
    dataset: str | None = Field(None, min_length=1, max_length=200, description="Train on this dataset's newest "
                                "version at each retraining (e.g. one that new labelled data is uploaded to); "
                                "default: the newest version of the dataset the newest model version was trained on.")
    cooldown_hours: float = Field(6.0, ge=0, le=24 * 366, description="No new retraining sooner than this after "
                                                                      "the last one began, whatever triggers.")
    gate: GateIn = Field(default_factory=GateIn, description="The new version's test figures must pass this and "
                                                             "beat the alias's version's before it rolls out.")
    rollout: RolloutPlan | None = Field(default_factory=RolloutPlan, description="How the new version takes the "
                                        "alias over (canary steps by default); null: it is registered and left for "
                                        "a person to roll out.")
    enabled: bool = True

    @model_validator(mode="after")
    def _some_trigger(self) -> PolicyIn:
        t = self.triggers
        if not t.drift and t.min_live_accuracy is None and t.every_hours is None:
            raise ValueError("triggers: set at least one of drift, min_live_accuracy or every_hours")
        return self


class PolicyOut(BaseModel):
    id: uuid.UUID
    name: str
    policy: PolicyIn
    enabled: bool
    job_id: uuid.UUID | None = Field(description="The retraining job running now, if any.")
    rollout_id: uuid.UUID | None = Field(description="The rollout of the last retrained version, if any.")
    last_started_at: datetime | None
    last_reason: str | None = Field(description="What triggered the last retraining, or why the loop stopped.")
    history: list[dict] = Field(description="The policy's newest events, oldest first.")
    created_at: datetime
    updated_at: datetime
