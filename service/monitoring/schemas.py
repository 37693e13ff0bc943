from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

MAX_FEEDBACK = 1000


def _whole(value: object) -> object:
    """83.0 is the integer 83, as JSON Schema has it; "83" and true stay refused (the models are strict)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Whole = Annotated[int, BeforeValidator(_whole)]


class FeedbackItem(BaseModel):
    # strict: a label is a JSON integer and a reading a JSON number, as the schema says, never "3" or true
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    request_id: str = Field(pattern=r"^[\x20-\x7e]{1,128}$", description="The X-Request-ID of the answer (gRPC: its "
                                                                         "id): printable ASCII, as the API takes it.")
    label: Whole | None = Field(None, description="A classifier's true label, for a request of one instance.")
    labels: list[Whole] | None = Field(None, max_length=10_000, description="A classifier's true labels, one per "
                                                                          "instance of the request.")
    actual: list[list[float]] | None = Field(None, max_length=10_000, description="A forecaster's readings that "
                                                                                  "came, one list per instance, as "
                                                                                  "many as it forecast.")


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[FeedbackItem] = Field(min_length=1, max_length=MAX_FEEDBACK)


class FeedbackResult(BaseModel):
    request_id: str
    accepted: bool
    reason: str | None = None


class FeedbackOut(BaseModel):
    accepted: int
    refused: int
    items: list[FeedbackResult]


class MonitoringSettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    log_share: float | None = Field(None, ge=0, le=1, description="The share of this model's requests logged; "
                                                                  "null: the deployment's default. 0 turns "
                                                                  "logging off for it (its inputs are not stored).")
    # the bounds before the validator, so that the schema says minimum and maximum
    retention_days: Annotated[int, Field(ge=1, le=3650), BeforeValidator(_whole)] | None = Field(
        None, description="null: the deployment's default.")
    drift_threshold: float | None = Field(None, gt=0, le=100, description="A version drifts when a summary's "
                                                                          "population stability index passes this; "
                                                                          "null: the deployment's default.")


class MonitoringSettingsOut(BaseModel):
    name: str
    log_share: float = Field(description="In effect: the model's own, or the deployment's default.")
    retention_days: int
    drift_threshold: float
    own: dict = Field(description="What was set for this model (null: the default applies).")
