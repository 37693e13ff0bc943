"""A sweep's part in its trials' runs, in the worker: the job runner calls these hooks (service.jobs.runner's
``TrialHooks``), so that jobs know nothing of sweeps and a sweep uses jobs, one direction."""

from __future__ import annotations

import math
import threading
import uuid
from typing import Any, Callable

import optuna

from service.artifacts import ArtifactStore
from service.db import session_scope
from service.settings import get_settings
from service.sweeps import study as studies
from service.sweeps.schemas import SweepIn
from service.sweeps.service import get_sweep, metric_value, step
from service.tables import TrainingJob


class TrialReporter:
    """After each epoch of a trial, give Optuna the metric and ask the sweep's pruner whether to stop here;
    :class:`optuna.TrialPruned` says so, with the reason."""

    def __init__(self, job: TrainingJob) -> None:
        url = get_settings().database_url
        with session_scope() as session:
            row = get_sweep(session, job.sweep_id)
            self.request = SweepIn.model_validate(row.request)
            study_name = row.study_name
        storage = studies.storage(url)
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name),
                                                                   job.trial_number)
        self.trial = optuna.Trial(studies.load(study_name, self.request, url), trial_id)

    def __call__(self, epoch: int, metrics: Any) -> None:
        value = metric_value(metrics, self.request.metric)
        if value is None or not math.isfinite(value):
            return
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned by the sweep's {self.request.pruner.type} pruner after epoch {epoch}: "
                                     f"{self.request.metric} {value:.4g} trails the other trials at that epoch")


class SweepTrials:
    """The hooks a worker passes to the job runner."""

    def reporter(self, job: TrainingJob) -> Callable[[int, Any], None]:
        return TrialReporter(job)

    def ended(self, job: TrainingJob, store: ArtifactStore) -> None:
        """The next trial starts now, not at the reconciler's next pass; the last one ends the sweep."""
        step(get_settings(), store, job.sweep_id)


def run_job(job_id: uuid.UUID, shutting_down: threading.Event) -> None:
    """Run a job as a worker does: a sweep's trial with its sweep's hooks, any other job as it is."""
    from service.jobs.runner import run_job as run  # PyTorch is imported only in the process that trains

    run(job_id, shutting_down, SweepTrials())
