"""What a job trains on and how it is judged afterwards, per task; :mod:`service.jobs.runner` does the rest.

A plan holds the training and validation data, the model to build (none for a forecasting baseline), the
held-out inputs (the test part's: saved with the model, its exports are checked on them) and the report on
the test part once training is done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from models.architectures import ModelConfig
from models.dataformats import ArrayDataset
from models.datasets import split_dataset
from models.forecasting import BASELINES, ForecastSetup, calibrate_interval, forecast_report, prepare
from models.timeseries import TimeSeries
from models.training import holdout_report
from service.datasets.service import load_dataset
from service.jobs import translate
from service.jobs.lifecycle import JobRefused
from service.jobs.spec import JobSpec
from service.platform.artifacts import ArtifactStore
from service.platform.tables import Dataset


@dataclass
class Plan:
    task: str
    config: ModelConfig | None  # None: a baseline, nothing to train
    train: ArrayDataset | None
    validation: ArrayDataset | None
    held_out: torch.Tensor  # the test part's inputs
    report: Callable[[nn.Module | None, torch.device | None, str], dict]
    setup: ForecastSetup | None = None

    def final_config(self) -> ModelConfig:
        """The config saved with the model: a forecaster's carries its fitted preparation."""
        assert self.config is not None
        return replace(self.config, forecast=self.setup.to_dict()) if self.setup else self.config


def classification_plan(spec: JobSpec, dataset: Dataset, store: ArtifactStore) -> Plan:
    t = spec.training
    data = load_dataset(dataset, store)  # with the test set it came with, where it has one
    splits = split_dataset(data, validation_split=t.validation_split, test_split=t.test_split, seed=t.seed)
    train = splits.train
    config = translate.model_config(spec, train.input_shape, train.num_classes, train.value_range)
    # Which test the figures are from: the dataset's own test set, or a random part cut from the data.
    test_set = {"test_set": "dataset" if data.test is not None else "split", "train_samples": len(train),
                "validation_samples": len(splits.validation), "test_samples": len(splits.test)}
    return Plan("classification", config, train, splits.validation, splits.test.x,
                lambda model, device, loss: {**holdout_report(model, splits.test, device, loss), **test_set})


def forecast_plan(spec: JobSpec, dataset: Dataset, store: ArtifactStore) -> Plan:
    t = spec.training
    series = load_dataset(dataset, store)
    if not isinstance(series, TimeSeries):
        raise JobRefused(f"dataset {dataset.name}@{dataset.version} holds images; a forecast needs a time "
                         "series (a CSV with a timestamp column)")
    setup = translate.forecast_setup(spec)
    prepared = prepare(series, setup, validation_split=t.validation_split, test_split=t.test_split)
    held_out = prepared.validation if len(prepared.validation) else prepared.train
    test_inputs = torch.from_numpy(prepared.test.x.astype(np.float32))
    architecture = spec.architecture.type
    if architecture in BASELINES:
        def baseline_report(model, device, loss) -> dict:
            calibrate_interval(None, setup, held_out, architecture)
            return forecast_report(None, prepared, architecture)

        return Plan("forecast", None, None, None, test_inputs, baseline_report, setup)

    def report(model, device, loss) -> dict:
        calibrate_interval(model, setup, held_out)
        return forecast_report(model, prepared)

    config = translate.forecaster_config(spec, setup)
    return Plan("forecast", config, prepared.train.dataset(),
                prepared.validation.dataset() if len(prepared.validation) else None, test_inputs, report, setup)


def plan_for(spec: JobSpec, dataset: Dataset, store: ArtifactStore) -> Plan:
    return (forecast_plan if spec.task == "forecast" else classification_plan)(spec, dataset, store)
