"""A sweep's part in its trials' runs, in the worker: the hooks the job runner calls for a trial
(service.jobs.runner's ``JobHooks``). Jobs know nothing of sweeps; a sweep uses jobs, one direction.

- After each epoch the metric goes to Optuna and the sweep's pruner may stop the trial (``StopTrial``).
- The trained model is kept where the sweep finds it; only the best trial's is registered, when the sweep
  ends.
- Once the trial has ended, the sweep takes its next step at once, not at the reconciler's next pass.
"""

from __future__ import annotations

import json
import logging
import math

import optuna

from models.training import EpochMetrics
from service.jobs.lifecycle import StopTrial, finish
from service.jobs.runner import JobHooks, Trained
from service.platform.runtime import Runtime
from service.platform.tables import JobStatus, TrainingJob
from service.sweeps import study as studies
from service.sweeps.schemas import SweepIn
from service.sweeps.service import (
    get_sweep,
    metric_value,
    step,
    trial_held_out_key,
    trial_model_key,
    trial_profile_key,
)

log = logging.getLogger(__name__)


class TrialHooks(JobHooks):
    """The hooks of one trial's run."""

    def __init__(self, runtime: Runtime, job: TrainingJob) -> None:
        url = runtime.settings.database_url
        with runtime.session() as session:
            row = get_sweep(session, job.sweep_id)
            self.request = SweepIn.model_validate(row.request)
            study_name = row.study_name
        storage = studies.storage(url)
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name),
                                                                   job.trial_number)
        self.trial = optuna.Trial(studies.load(study_name, self.request, url), trial_id)

    def after_epoch(self, job: TrainingJob, metrics: EpochMetrics) -> None:
        """Give Optuna the metric and ask the sweep's pruner whether to stop here."""
        value = metric_value(metrics, self.request.metric)
        if value is None or not math.isfinite(value):
            return
        self.trial.report(value, metrics.epoch)
        if self.trial.should_prune():
            raise StopTrial(f"pruned by the sweep's {self.request.pruner.type} pruner after epoch {metrics.epoch}: "
                            f"{self.request.metric} {value:.4g} trails the other trials at that epoch")

    def hand_off(self, runtime: Runtime, trained: Trained) -> None:
        """Keep the model file where the sweep finds it, and succeed with the report."""
        job = trained.job
        runtime.store.put(trial_model_key(job.id), trained.model_file())
        runtime.store.put(trial_held_out_key(job.id), trained.held_out())
        if (profile := trained.profile()) is not None:
            runtime.store.put(trial_profile_key(job.id), json.dumps(profile).encode())
        finish(runtime, job, JobStatus.succeeded, result=trained.report)
        log.info("job %s: trial %d of sweep %s kept its model", job.id, job.trial_number, job.sweep_id)

    def ended(self, runtime: Runtime, job: TrainingJob) -> None:
        """The next trial starts now, not at the reconciler's next pass; the last one ends the sweep."""
        try:
            step(runtime, job.sweep_id)
        except Exception:
            log.exception("job %s: could not advance sweep %s; the reconciler will", job.id, job.sweep_id)
