"""The one place a job spec (service/jobs/spec.py, pydantic, what the API accepts) becomes the training
library's arguments (``models/``'s plain dataclasses, what a notebook passes by hand).

Every field of the spec's ``training`` section is either passed to ``TrainConfig`` under the same name or
listed in ``READ_ELSEWHERE`` with the reader; a field that is neither fails at import (and in
tests/service/test_translate.py), so a new field cannot be silently dropped on its way to the loop.
"""

from __future__ import annotations

from dataclasses import fields

from models.architectures import ModelConfig
from models.augment import AugmentConfig
from models.forecasting import ForecastSetup
from models.schedules import ScheduleConfig
from models.training import EarlyStopping, TrainConfig
from service.jobs.spec import JobSpec, TrainingSpec

# training fields that TrainConfig does not take, and what reads them instead
READ_ELSEWHERE = {
    "learning_rate": "the optimizer (optimizer_options' caller passes it to build_optimizer)",
    "validation_split": "the plan, which splits the data (service/jobs/plans.py)",
    "test_split": "the plan, which splits the data (service/jobs/plans.py)",
}
# TrainConfig fields that are not the spec's to set: the worker's own
WORKER_SET = {"cancel_check_seconds", "sync_every"}
NESTED = {"schedule": ScheduleConfig, "early_stopping": EarlyStopping, "augmentation": AugmentConfig}

PASSED = [f.name for f in fields(TrainConfig) if f.name not in WORKER_SET]


def unaccounted_fields(spec=TrainingSpec) -> tuple[set[str], set[str]]:
    """(fields of the spec's training section neither passed nor read elsewhere, TrainConfig fields it has
    not): both empty."""
    spec_fields = set(spec.model_fields)
    return spec_fields - set(PASSED) - set(READ_ELSEWHERE), set(PASSED) - spec_fields


if any(unaccounted_fields()):
    raise RuntimeError(f"service/jobs/translate.py: training fields unaccounted for: {unaccounted_fields()}")


def train_config(spec: JobSpec, stop_check_seconds: float) -> TrainConfig:
    """The training loop's settings; ``stop_check_seconds``: how often the loop asks whether to stop (the
    worker's TRAINSERVE_STOP_CHECK_SECONDS)."""
    values = {}
    for name in PASSED:
        value = getattr(spec.training, name)
        if name in NESTED and value is not None:
            value = NESTED[name](**value.model_dump())
        values[name] = value
    return TrainConfig(**values, cancel_check_seconds=stop_check_seconds)


def optimizer_options(spec: JobSpec) -> dict:
    """The optimizer's own settings (beside its type and the learning rate), for ``build_optimizer``."""
    return spec.optimizer.model_dump(exclude={"type"}, exclude_none=True)


def forecast_setup(spec: JobSpec) -> ForecastSetup:
    return ForecastSetup(**spec.forecast.model_dump(exclude_none=True))


def model_config(spec: JobSpec, input_shape: tuple[int, ...], num_classes: int,
                 value_range: tuple[float, float]) -> ModelConfig:
    """The model to build for data of this shape: a classifier's classes, or a forecaster's horizon."""
    return ModelConfig(spec.architecture.type, spec.architecture.model_dump(exclude={"type"}), tuple(input_shape),
                       num_classes, value_range)


def forecaster_config(spec: JobSpec, setup: ForecastSetup) -> ModelConfig:
    """A forecaster reads ``lookback`` scaled readings of its columns and outputs ``horizon`` values."""
    return model_config(spec, (setup.lookback, setup.n_features), setup.horizon, (0.0, 1.0))
