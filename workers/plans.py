"""What a job trains on and how it is judged afterwards, per task; :func:`workers.jobs.run_job` does the rest.

A plan holds the training and validation data, the model to build (none for a forecasting baseline) and
the report on the test part once training is done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from models.architectures import ModelConfig
from models.dataformats import TimeSeries
from models.datasets import ArrayDataset, builtin_splits, split_dataset
from models.forecasting import BASELINES, ForecastSetup, calibrate_interval, forecast_report, prepare
from models.training import holdout_report
from service.artifacts import ArtifactStore
from service.datasets.service import load_dataset
from service.tables import TrainingJob


@dataclass
class Plan:
    task: str
    config: ModelConfig | None  # None: a baseline, nothing to train
    train: ArrayDataset | None
    validation: ArrayDataset | None
    report: Callable[[nn.Module | None, torch.device | None, str], dict]
    setup: ForecastSetup | None = None

    def final_config(self) -> ModelConfig:
        """The config saved with the model: a forecaster's carries its fitted preparation."""
        assert self.config is not None
        return replace(self.config, forecast=self.setup.to_dict()) if self.setup else self.config


def _architecture(job: TrainingJob) -> tuple[str, dict]:
    arch = dict(job.spec["architecture"])
    return arch.pop("type"), arch


def classification_plan(job: TrainingJob, store: ArtifactStore) -> Plan:
    training = job.spec["training"]
    cut = dict(validation_split=training["validation_split"], test_split=training["test_split"],
               seed=training["seed"])
    if job.dataset.source == "builtin":
        splits = builtin_splits(job.dataset.name, **cut)
    else:
        splits = split_dataset(load_dataset(job.dataset, store), **cut)
    data = splits.train
    architecture, params = _architecture(job)
    config = ModelConfig(architecture, params, data.input_shape, data.num_classes, data.value_range)
    return Plan("classification", config, splits.train, splits.validation,
                lambda model, device, loss: holdout_report(model, splits.test, device, loss))


def forecast_plan(job: TrainingJob, store: ArtifactStore) -> Plan:
    spec, training = job.spec, job.spec["training"]
    series = load_dataset(job.dataset, store)
    if not isinstance(series, TimeSeries):
        raise ValueError(f"dataset {job.dataset.name}@{job.dataset.version} holds images; a forecast needs a time "
                         "series (a CSV with a timestamp column)")
    f = {k: v for k, v in spec["forecast"].items() if v is not None}
    setup = ForecastSetup(**f)
    prepared = prepare(series, setup, validation_split=training["validation_split"],
                       test_split=training["test_split"])
    held_out = prepared.validation if len(prepared.validation) else prepared.train
    architecture, params = _architecture(job)
    if architecture in BASELINES:
        def baseline_report(model, device, loss) -> dict:
            calibrate_interval(None, setup, held_out, architecture)
            return forecast_report(None, prepared, architecture)

        return Plan("forecast", None, None, None, baseline_report, setup)

    def report(model, device, loss) -> dict:
        calibrate_interval(model, setup, held_out)
        return forecast_report(model, prepared)

    config = ModelConfig(architecture, params, (setup.lookback, setup.n_features), setup.horizon, (0.0, 1.0))
    return Plan("forecast", config, prepared.train.dataset(),
                prepared.validation.dataset() if len(prepared.validation) else None, report, setup)


def plan_for(job: TrainingJob, store: ArtifactStore) -> Plan:
    return (forecast_plan if job.spec.get("task") == "forecast" else classification_plan)(job, store)
