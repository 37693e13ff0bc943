"""The job spec is translated into the training library's arguments in one place (service/jobs/translate.py),
and a job fails with its own words only for errors raised on purpose."""

from __future__ import annotations

import threading
import uuid

from pydantic import Field

from models.augment import AugmentConfig
from models.schedules import ScheduleConfig
from models.training import EarlyStopping
from service.jobs import translate
from service.jobs.lifecycle import JobRefused
from service.jobs.runner import JobHooks, run_job
from service.jobs.spec import JobSpec, TrainingSpec
from tests.helpers import LOGREG_SPEC


def test_every_training_field_is_passed_or_named_as_read_elsewhere():
    assert translate.unaccounted_fields() == (set(), set())

    class WithANewField(TrainingSpec):
        warmup_epochs: int = Field(0)

    assert translate.unaccounted_fields(WithANewField) == ({"warmup_epochs"}, set())


def test_the_training_loop_gets_every_value_of_the_spec():
    spec = JobSpec.model_validate({
        "dataset": "digits", "architecture": {"type": "mlp", "hidden_sizes": [32]}, "optimizer": {"type": "adamw"},
        "training": {"epochs": 7, "batch_size": 16, "seed": 3, "device": "auto", "precision": "bf16", "loss": "mse",
                     "l1": 1e-5, "l2": 1e-4, "grad_clip_norm": 2.0, "compile": "none",
                     "schedule": {"type": "step", "step_size": 2, "gamma": 0.5},
                     "early_stopping": {"monitor": "val_accuracy", "patience": 2},
                     "augmentation": {"shift": 0.05, "rotation": 3, "scale": 0.02}}})
    config = translate.train_config(spec, stop_check_seconds=0.7)
    for name in translate.PASSED:
        if name not in translate.NESTED:
            assert getattr(config, name) == getattr(spec.training, name), name
    assert isinstance(config.schedule, ScheduleConfig) and config.schedule.step_size == 2
    assert isinstance(config.early_stopping, EarlyStopping) and config.early_stopping.maximize
    assert isinstance(config.augmentation, AugmentConfig) and config.augmentation.rotation == 3
    assert config.cancel_check_seconds == 0.7
    assert translate.optimizer_options(spec) == {"betas": (0.9, 0.999), "eps": 1e-8}
    model = translate.model_config(spec, (1, 8, 8), 10, (0.0, 16.0))
    assert (model.architecture, model.params["hidden_sizes"], model.input_shape) == ("mlp", [32], (1, 8, 8))


class Refusing(JobHooks):
    def after_epoch(self, job, metrics) -> None:
        raise JobRefused("this run cannot go on: lower the learning rate")


class Buggy(JobHooks):
    def after_epoch(self, job, metrics) -> None:
        raise KeyError("an internal detail")


def test_only_errors_raised_on_purpose_reach_the_user_in_their_own_words(runtime, client, caplog):
    spec = {**LOGREG_SPEC, "training": {**LOGREG_SPEC["training"], "epochs": 2}}
    refused = client.post("/v1/jobs", json=spec).json()["id"]
    run_job(runtime, uuid.UUID(refused), threading.Event(), lambda rt, job: Refusing())
    job = client.get(f"/v1/jobs/{refused}").json()
    assert job["status"] == "failed" and job["error"] == "this run cannot go on: lower the learning rate"

    buggy = client.post("/v1/jobs", json=spec).json()["id"]
    run_job(runtime, uuid.UUID(buggy), threading.Event(), lambda rt, job: Buggy())
    job = client.get(f"/v1/jobs/{buggy}").json()
    assert job["status"] == "failed" and "an internal detail" not in job["error"]
    assert job["error"].startswith("training failed unexpectedly (KeyError); this is trainserve's fault")
    incident = job["error"].rsplit("incident ", 1)[1]
    logged = [r for r in caplog.records if incident in r.getMessage()]
    assert logged and logged[0].exc_info is not None, "the traceback is in the log under the incident id"
