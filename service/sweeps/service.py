"""Sweeps: create, read, cancel, and advance: keep `parallel` trials in hand, tell Optuna how trials ended,
and at the end register the best trial's model.

The database is the truth. Every pass of :func:`advance` starts by writing the sweep's row, which serialises
passes (an API process's reconciler, a worker that just finished a trial), then reconciles Optuna's study
with the trial jobs and launches trials into the free slots. Any pass can be the one that finishes a sweep,
so an API or a worker restart loses nothing.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from typing import Any

import optuna
from optuna.trial import TrialState
from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models.export import model_from_bytes
from service.http.errors import AppError, Conflict, InvalidInput, NotFound, validation_details
from service.http.pagination import newest_first
from service.jobs import events as job_events
from service.jobs import service as jobs
from service.jobs.spec import JobSpec
from service.platform.artifacts import ArtifactStore
from service.platform.runtime import Runtime
from service.platform.settings import Settings
from service.platform.tables import JobMetric, JobStatus, Sweep, TrainedModel, TrainingJob, utcnow
from service.registry import service as registry
from service.sweeps import events
from service.sweeps import study as studies
from service.sweeps.schemas import METRICS, SweepIn, SweepOut, SweepSummary, TrialOut

log = logging.getLogger(__name__)


def trial_model_key(job_id: uuid.UUID) -> str:
    """Where a trial keeps its model until the sweep ends (only the best trial's is registered)."""
    return f"jobs/{job_id}/trial-model.pt"


def trial_held_out_key(job_id: uuid.UUID) -> str:
    return f"jobs/{job_id}/trial-held-out.pt"


def trial_profile_key(job_id: uuid.UUID) -> str:
    """A classifier trial's reference profile for drift (JSON)."""
    return f"jobs/{job_id}/trial-profile.json"


ACTIVE = (JobStatus.queued, JobStatus.running)
IMPORTANCE_AFTER = 4  # finished trials before parameter importances are worth reporting


def _invalid(message: str, field: str) -> InvalidInput:
    return InvalidInput(message, details=[{"field": field, "message": message}])


def check(session: Session, sweep: SweepIn, settings: Settings) -> JobSpec:
    """Refuse, naming the field, a sweep whose trials could not run: a base spec that is not a job spec, a
    path the spec does not have, a value the field does not take, a metric the task does not report, a grid
    larger than the budget. Returns the base spec."""
    try:
        base = JobSpec.model_validate(sweep.base)
    except ValidationError as exc:
        details = [{**d, "field": f"base.{d['field']}"} for d in validation_details(list(exc.errors()))]
        raise InvalidInput("base is not a job spec: " + "; ".join(f"{d['field']}: {d['message']}" for d in details),
                           details=details) from None
    for path, parameter in sweep.space.items():
        for value in parameter.bounds():
            try:
                JobSpec.model_validate(studies.apply(sweep.base, {path: value}))
            except KeyError:
                raise _invalid(f"space.{path}: the spec has no such setting ({path.rsplit('.', 1)[0]} is not a "
                               "section); name a field as POST /v1/jobs takes it, e.g. training.learning_rate",
                               f"space.{path}") from None
            except ValidationError as exc:
                errors = list(exc.errors())
                if any(e["type"] == "extra_forbidden" for e in errors):
                    raise _invalid(f"space.{path}: the spec has no such setting here; name a field as POST "
                                   "/v1/jobs takes it for this base (e.g. training.learning_rate, or "
                                   f"optimizer.momentum with optimizer sgd)", f"space.{path}") from None
                message = "; ".join(d["message"] for d in validation_details(errors))
                raise _invalid(f"space.{path}: the spec does not take {value!r} here: {message}",
                               f"space.{path}") from None
    task = base.task
    wanted_task = METRICS[sweep.metric][1]
    if wanted_task is not None and wanted_task != task:
        raise _invalid(f"metric {sweep.metric} is not reported by a {task} job; use "
                       f"{'val_loss or val_accuracy' if task == 'classification' else 'val_loss or val_rmse'}",
                       "metric")
    if sweep.metric == "val_rmse" and base.training.loss != "mse":
        raise _invalid("metric val_rmse is the square root of an mse validation loss; set base.training.loss to "
                       "mse, or use val_loss", "metric")
    if base.training.validation_split == 0 and "training.validation_split" not in sweep.space:
        raise _invalid(f"metric {sweep.metric} is measured on the validation split; set "
                       "base.training.validation_split above 0", "base.training.validation_split")
    if sweep.sampler == "grid":
        continuous = [path for path, p in sweep.space.items() if p.grid() is None]
        if continuous:
            raise _invalid(f"a grid needs values to try: give {', '.join(continuous)} choices, or a step, or use "
                           "sampler tpe or random", f"space.{continuous[0]}")
        points = math.prod(len(p.grid()) for p in sweep.space.values())
        if points > sweep.budget.trials:
            raise _invalid(f"the grid has {points:,} points and budget.trials is {sweep.budget.trials}: raise the "
                           f"budget to {points:,} (at most 500), or try fewer values", "budget.trials")
    jobs.check_job(session, base, settings)
    return base


def create_sweep(session: Session, sweep: SweepIn, settings: Settings, key_id: uuid.UUID | None) -> Sweep:
    check(session, sweep, settings)
    row = Sweep(id=uuid.uuid4(), name=sweep.name, status="running", request=sweep.model_dump(mode="json"),
                key_id=key_id, cancel_requested=False)
    row.study_name = f"trainserve-sweep-{row.id}"
    studies.create(row.study_name, sweep, settings.database_url)
    session.add(row)
    session.flush()
    events.append(session, row.id, "status", status="running")
    return row


def get_sweep(session: Session, sweep_id: uuid.UUID) -> Sweep:
    row = session.get(Sweep, sweep_id)
    if row is None:
        raise NotFound(f"no sweep {sweep_id}; GET /v1/sweeps lists them")
    return row


def list_sweeps(session: Session, status: str | None, limit: int, offset: int) -> tuple[list[Sweep], int]:
    query = select(Sweep)
    if status:
        query = query.where(Sweep.status == status)
    return newest_first(session, query, Sweep, limit, offset)


def cancel_sweep(session: Session, sweep_id: uuid.UUID) -> Sweep:
    row = get_sweep(session, sweep_id)
    if row.status != "running":
        raise Conflict(f"sweep {sweep_id} has already {'ended as ' if row.status != 'cancelled' else 'been '}"
                       f"{row.status}; there is nothing to cancel")
    row.cancel_requested = True
    session.flush()
    return row


def trials_of(session: Session, sweep_id: uuid.UUID) -> list[TrainingJob]:
    return list(session.scalars(select(TrainingJob).where(TrainingJob.sweep_id == sweep_id)
                                .order_by(TrainingJob.trial_number)))


def curve(session: Session, job: TrainingJob, metric: str) -> list[float | None]:
    rows = session.scalars(select(JobMetric).where(JobMetric.job_id == job.id).order_by(JobMetric.epoch)).all()
    return [metric_value(row, metric) for row in rows]


def metric_value(row: JobMetric, metric: str) -> float | None:
    if metric == "val_rmse":
        return math.sqrt(row.val_loss) if row.val_loss is not None and row.val_loss >= 0 else None
    return getattr(row, metric)


def trial_value(job: TrainingJob, values: list[float | None]) -> float | None:
    """The metric at the epoch the trial's model holds: its best with early stopping, else its last."""
    if not values:
        return None
    best_epoch = (job.result or {}).get("best_epoch")
    return values[best_epoch - 1] if best_epoch and best_epoch <= len(values) else values[-1]


def trial_out(session: Session, job: TrainingJob, request: SweepIn) -> TrialOut:
    values = curve(session, job, request.metric)
    params = {path: _get(job.spec, path) for path in request.space}
    return TrialOut(number=job.trial_number, job_id=job.id, status=job.status.value, params=params,
                    value=trial_value(job, values) if job.status != JobStatus.failed else None,
                    epochs_done=job.epochs_done, curve=values)


def _get(spec: dict, path: str) -> Any:
    node: Any = spec
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _better(a: float, b: float, direction: str) -> bool:
    return a > b if direction == "maximize" else a < b


def best_trial(trials: list[TrialOut], direction: str) -> TrialOut | None:
    best = None
    for trial in trials:
        if trial.status == "succeeded" and trial.value is not None and math.isfinite(trial.value) and (
                best is None or _better(trial.value, best.value, direction)):
            best = trial
    return best


def counts(session: Session, sweep_id: uuid.UUID) -> dict[str, int]:
    found = dict(session.execute(select(TrainingJob.status, func.count()).where(TrainingJob.sweep_id == sweep_id)
                                 .group_by(TrainingJob.status)).all())
    return {s.value: int(found.get(s, 0)) for s in JobStatus}


def sweep_out(session: Session, row: Sweep, settings: Settings) -> SweepOut:
    request = SweepIn.model_validate(row.request)
    trials = [trial_out(session, job, request) for job in trials_of(session, row.id)]
    model = session.get(TrainedModel, row.model_id) if row.model_id else None
    return SweepOut(
        id=row.id, name=row.name, status=row.status, metric=request.metric, direction=request.direction,
        request=row.request, counts=counts(session, row.id), best=best_trial(trials, request.direction),
        trials=trials, importances=_importances(row, request, settings, trials), error=row.error,
        model={"id": model.id, "name": model.name, "version": model.version} if model else None,
        result=row.result, cancel_requested=row.cancel_requested, created_at=row.created_at,
        finished_at=row.finished_at)


def summary(session: Session, row: Sweep) -> SweepSummary:
    return SweepSummary(id=row.id, name=row.name, status=row.status, metric=row.request["metric"],
                        counts=counts(session, row.id), created_at=row.created_at, finished_at=row.finished_at)


def _importances(row: Sweep, request: SweepIn, settings: Settings, trials: list[TrialOut]) -> dict[str, float] | None:
    finished = [t for t in trials if t.status == "succeeded" and t.value is not None]
    if len(finished) < IMPORTANCE_AFTER or len(request.space) < 1:
        return None
    if row.result and "importances" in row.result:
        return row.result["importances"]
    try:
        study = studies.load(row.study_name, request, settings.database_url)
        return {k: round(float(v), 4) for k, v in optuna.importance.get_param_importances(study).items()}
    except Exception as exc:  # too few distinct values, or a single parameter that never varied
        log.info("sweep %s: no parameter importances yet: %s", row.id, exc)
        return None


# Advancing a sweep -----------------------------------------------------------------------------------------

def advance(session: Session, settings: Settings, sweep_id: uuid.UUID) -> tuple[list[tuple[uuid.UUID, str]], bool]:
    """One pass: lock the sweep, tell Optuna how finished trials ended, cancel trials of a cancelled sweep,
    launch trials into free slots. Returns the new jobs to send after the commit, and whether the sweep is
    ready to be finished (:func:`finish`)."""
    if not session.execute(update(Sweep).where(Sweep.id == sweep_id, Sweep.status == "running")
                           .values(advanced_at=utcnow())).rowcount:
        return [], False
    row = session.get(Sweep, sweep_id)
    session.refresh(row)
    request = SweepIn.model_validate(row.request)
    study = studies.load(row.study_name, request, settings.database_url)
    trials = trials_of(session, sweep_id)
    _tell_finished(session, study, request, trials)
    active = [t for t in trials if t.status in ACTIVE]
    if row.cancel_requested:
        for job in active:
            jobs.cancel_job(session, job.id)
        trials = trials_of(session, sweep_id)
        _tell_finished(session, study, request, trials)  # the queued ones, cancelled just now
        return [], not any(t.status in ACTIVE for t in trials)
    expired = request.budget.timeout_seconds is not None and \
        (utcnow() - row.created_at).total_seconds() > request.budget.timeout_seconds
    budget = trial_budget(request)
    room = 0 if expired else min(request.budget.parallel - len(active), budget - len(trials))
    launched = []
    if room > 0:
        study.sampler = studies.sampler(request, offset=len(trials))
    for _ in range(max(room, 0)):
        job = _launch(session, settings, row, request, study)
        _trial_event(session, row.id, job, request)
        if job.status == JobStatus.queued:
            launched.append((job.id, job.queue))
    finished = not launched and not active and (expired or len(trials) >= budget)
    return launched, finished


def trial_budget(request: SweepIn) -> int:
    """The trials a sweep runs: its budget, and for a grid no more than the grid's points (each once)."""
    if request.sampler == "grid":
        return min(request.budget.trials, math.prod(len(p.grid()) for p in request.space.values()))
    return request.budget.trials


def _launch(session: Session, settings: Settings, row: Sweep, request: SweepIn, study: optuna.Study) -> TrainingJob:
    trial = study.ask(studies.distributions(request))
    params = studies.params_of(trial, request)
    spec_dict = studies.apply(request.base, params)
    try:
        spec = JobSpec.model_validate(spec_dict)
        return jobs.create_job(session, spec, settings, row.key_id, sweep_id=row.id, trial_number=trial.number)
    except (ValidationError, AppError) as exc:  # a combination the spec refuses: a failed trial, with the reason
        reason = exc.message if isinstance(exc, AppError) else "; ".join(
            f"{d['field']}: {d['message']}" for d in validation_details(list(exc.errors())))
        studies.tell(study, trial, state=TrialState.FAIL)
        job = TrainingJob(spec=spec_dict, epochs_total=int(_get(spec_dict, "training.epochs") or 0),
                          status=JobStatus.failed, error=f"these parameters make no valid job: {reason}",
                          finished_at=utcnow(), sweep_id=row.id, trial_number=trial.number)
        session.add(job)
        session.flush()
        job_events.status(session, job.id, JobStatus.failed, error=job.error)
        return job


def _trial_event(session: Session, sweep_id: uuid.UUID, job: TrainingJob, request: SweepIn,
                 value: float | None = None) -> None:
    events.append(session, sweep_id, "trial", number=job.trial_number, job_id=str(job.id),
                        status=job.status.value, params={path: _get(job.spec, path) for path in request.space},
                        **({"value": value} if value is not None else {}))


def _tell_finished(session: Session, study: optuna.Study, request: SweepIn, trials: list[TrainingJob]) -> None:
    """Tell Optuna how each finished trial ended, once; fail the trials Optuna began that never got a job
    (a pass that rolled back after asking)."""
    by_number = {t.trial_number: t for t in trials}
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        job = by_number.get(frozen.number)
        if job is None:
            studies.tell(study, frozen.number, state=TrialState.FAIL)
        elif job.status.finished:
            value = trial_value(job, curve(session, job, request.metric))
            _trial_event(session, job.sweep_id, job, request, value)
            if job.status == JobStatus.succeeded and value is not None and math.isfinite(value):
                studies.tell(study, frozen.number, value)
            elif job.status == JobStatus.pruned:
                studies.tell(study, frozen.number, state=TrialState.PRUNED)
            else:
                studies.tell(study, frozen.number, state=TrialState.FAIL)


def finish(runtime: Runtime, sweep_id: uuid.UUID) -> uuid.UUID | None:
    """End a sweep whose trials are all done: register the best trial's model under the sweep's name (and
    promote it through the gate), or record why there is none. Returns the new model's id."""
    settings, store = runtime.settings, runtime.store
    with runtime.session() as session:
        row = get_sweep(session, sweep_id)
        if row.status != "running":
            return None
        request = SweepIn.model_validate(row.request)
        trials = [trial_out(session, job, request) for job in trials_of(session, sweep_id)]
        best = best_trial(trials, request.direction)
        importances = _importances(row, request, settings, trials)
        summary = {"best": best.model_dump(mode="json") if best else None, "importances": importances,
                   "trials": len(trials)}
        if row.cancel_requested or best is None:
            row.status = "cancelled" if row.cancel_requested else "failed"
            row.error = None if row.cancel_requested else (
                "no trial succeeded with a finite metric; the trials' errors say why (GET /v1/jobs/{id})")
            row.result, row.finished_at = summary, utcnow()
            session.flush()
            events.append(session, sweep_id, "status", status=row.status, best=summary["best"],
                                **({"error": row.error} if row.error else {}))
            _discard_trial_files(store, trials)
            return None
        best_job = session.get(TrainingJob, best.job_id)
        data = store.get(trial_model_key(best.job_id))
        held_out = store.get(trial_held_out_key(best.job_id))
        profile = json.loads(store.get(trial_profile_key(best.job_id))) \
            if store.exists(trial_profile_key(best.job_id)) else None
        _, config = model_from_bytes(data)
        version = registry.NewVersion(name=row.name, task=best_job.spec.get("task", "classification"),
                                      job_id=best_job.id, dataset_id=best_job.dataset_id, config=config, data=data,
                                      held_out=held_out, metrics=best_job.result or {}, promote=request.promote,
                                      profile=profile)

    def succeed(session: Session, result: dict) -> None:
        model_id = session.scalar(select(TrainedModel.id).where(TrainedModel.job_id == best.job_id))
        done = session.execute(update(Sweep).where(Sweep.id == sweep_id, Sweep.status == "running").values(
            status="succeeded", model_id=model_id, best_job_id=best.job_id, finished_at=utcnow(),
            result={**summary, "promotion": result.get("promotion")})).rowcount
        if not done:
            raise Conflict(f"sweep {sweep_id} was finished by another pass")
        events.append(session, sweep_id, "status", status="succeeded", best=summary["best"],
                            model_id=str(model_id), promotion=result.get("promotion"))

    try:
        model_id = registry.register_version(runtime, version, succeed)
    except Conflict:
        return None
    _discard_trial_files(store, trials)
    log.info("sweep %s: succeeded; trial %d registered as %s", sweep_id, best.number, row.name)
    return model_id


def _discard_trial_files(store: ArtifactStore, trials: list[TrialOut]) -> None:
    for trial in trials:
        store.delete(trial_model_key(trial.job_id))
        store.delete(trial_held_out_key(trial.job_id))
        store.delete(trial_profile_key(trial.job_id))


def running_sweeps(session: Session) -> list[uuid.UUID]:
    return list(session.scalars(select(Sweep.id).where(Sweep.status == "running")))


def step(runtime: Runtime, sweep_id: uuid.UUID) -> None:
    """Advance a sweep and act on it after the commit: send the new trials, finish the sweep when its trials
    are done."""
    from service.platform.queue import enqueue_export, enqueue_job

    with runtime.session() as session:
        launched, ready = advance(session, runtime.settings, sweep_id)
    for job_id, queue in launched:
        try:
            enqueue_job(runtime.celery, job_id, queue)
        except Exception:  # queued with enqueued_at set: the reconciler sends it again
            log.warning("sweep %s: could not send trial job %s; the reconciler will", sweep_id, job_id, exc_info=True)
    if ready and (model_id := finish(runtime, sweep_id)) is not None:
        try:
            enqueue_export(runtime.celery, model_id)
        except Exception:
            log.exception("sweep %s: could not ask for the exports of model %s", sweep_id, model_id)
