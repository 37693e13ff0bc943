"""Retraining policies and the pass that carries them out.

Each reconciler pass (every API replica's) advances every enabled policy by at most one step:

1. no job of its own running: when a trigger holds (the alias's version drifts, its live accuracy fell below
   the bound, or the schedule is due) and the cool-down has passed, it submits a job with the newest
   version's spec on the newest version of its dataset;
2. that job ended: a new version that passes the gate (its test figures, and beating the alias's version)
   starts a rollout to the alias with the policy's canary rules; the rollout's own gates then judge it on live
   traffic and move the alias, or roll it back.

Each step is taken by one replica only: the row is claimed with a conditional update (the job slot empty, or
still naming the job that ended), so two replicas that see the same trigger submit one job. Every step is an
event of the policy and an audit entry.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.audit.service import record
from service.datasets.service import resolve_dataset
from service.http.auth import Principal
from service.http.errors import AppError, InvalidInput, NotFound
from service.jobs.service import create_job
from service.jobs.spec import JobSpec
from service.monitoring import service as monitoring
from service.platform import events
from service.platform.queue import enqueue_job
from service.platform.references import flush_or_conflict
from service.platform.runtime import Runtime
from service.platform.settings import Settings
from service.platform.tables import (
    JobStatus,
    ModelAlias,
    RetrainingEvent,
    RetrainingPolicy,
    TrainedModel,
    TrainingJob,
    utcnow,
)
from service.registry import service as registry
from service.retraining.schemas import PolicyIn, PolicyOut
from service.rollouts import service as rollouts
from service.rollouts.schemas import RolloutIn

log = logging.getLogger(__name__)
ACTIVE = (JobStatus.queued.value, JobStatus.running.value)


def _invalid(message: str, field: str) -> InvalidInput:
    return InvalidInput(message, details=[{"field": field, "message": message}])


def set_policy(session: Session, name: str, body: PolicyIn, who: Principal | None) -> RetrainingPolicy:
    """Create or replace ``name``'s policy, refusing, with the field, what it cannot do for this model."""
    newest = registry.resolve(session, name)  # an unknown name is a 404
    if newest.task != "classification":
        if body.triggers.drift or body.triggers.min_live_accuracy is not None:
            raise _invalid(f"{name} is a {newest.task} model; drift and live accuracy watch classifiers: trigger it "
                           "with every_hours", "triggers")
        if body.rollout is not None and body.rollout.gates.max_accuracy_drop is not None:
            raise _invalid("max_accuracy_drop judges classifiers' labels", "rollout.gates.max_accuracy_drop")
    registry.for_task(body.gate, newest.task, "gate")
    if body.dataset is not None:
        dataset = resolve_dataset(session, body.dataset)
        if dataset.task != newest.task:
            raise _invalid(f"dataset {dataset.name} holds {dataset.task} data and {name} is a {newest.task} model",
                           "dataset")
    row = session.scalar(select(RetrainingPolicy).where(RetrainingPolicy.name == name))
    before = row.policy if row is not None else None
    if row is None:
        row = RetrainingPolicy(name=name, policy={})
        session.add(row)
    row.policy, row.enabled, row.updated_at = body.model_dump(mode="json"), body.enabled, utcnow()
    flush_or_conflict(session, f"another retraining policy for {name} was set at the same moment; GET "
                               f"/v1/models/{name}/retraining shows it")
    events.append(session, RetrainingEvent, row.id, "policy", {"enabled": body.enabled, "policy": row.policy})
    record(session, who, "retraining.set", name, before=before, after=row.policy)
    return row


def get_policy(session: Session, name: str) -> RetrainingPolicy:
    row = session.scalar(select(RetrainingPolicy).where(RetrainingPolicy.name == name))
    if row is None:
        registry.resolve(session, name)  # an unknown name says so first
        raise NotFound(f"model {name!r} has no retraining policy; PUT /v1/models/{name}/retraining sets one")
    return row


def delete_policy(session: Session, name: str, who: Principal | None) -> None:
    """Remove the policy; a retraining job it started goes on and is registered, and nothing follows it."""
    row = get_policy(session, name)
    record(session, who, "retraining.delete", name, before=row.policy)
    session.delete(row)


def policy_out(session: Session, row: RetrainingPolicy, newest: int = 50) -> PolicyOut:
    history = [{"seq": seq, "kind": kind, "time": at, **data}
               for seq, kind, data, at in events.after(session, RetrainingEvent, row.id, 0)[-newest:]]
    return PolicyOut(id=row.id, name=row.name, policy=PolicyIn.model_validate(row.policy), enabled=row.enabled,
                     job_id=row.job_id, rollout_id=row.rollout_id, last_started_at=row.last_started_at,
                     last_reason=row.last_reason, history=history, created_at=row.created_at,
                     updated_at=row.updated_at)


def _event(session: Session, row: RetrainingPolicy, kind: str, action: str, **data) -> None:
    events.append(session, RetrainingEvent, row.id, kind, data)
    record(session, None, f"retraining.{action}", row.name, after=data)


def trigger(session: Session, row: RetrainingPolicy, body: PolicyIn, settings: Settings) -> str | None:
    """Why ``row``'s name should be trained again now; None when no trigger holds."""
    now, t = utcnow(), body.triggers
    alias = session.get(ModelAlias, (row.name, body.alias))
    watched = alias.model if alias is not None else None
    if watched is not None and t.drift:
        window = timedelta(minutes=settings.drift_window_minutes)
        drift = monitoring.drift_now(session, now - window, settings, watched.id).get(
            (watched.name, str(watched.version)))
        if drift is not None and drift["drifting"]:
            return (f"drift: version {watched.version}'s {drift['worst']} has a PSI of {drift['max_psi']:.3f} over "
                    f"the last {settings.drift_window_minutes} minutes, past the threshold {drift['threshold']:g}")
    if watched is not None and t.min_live_accuracy is not None:
        live = monitoring.live_quality(session, watched, timedelta(days=1))
        if live["labels"] >= t.min_labels and live["accuracy"] < t.min_live_accuracy:
            return (f"live accuracy: version {watched.version} answered {live['accuracy']:.4f} of {live['labels']} "
                    f"labelled instances of the last day right, below {t.min_live_accuracy:g}")
    if t.every_hours is not None:
        last = row.last_started_at or row.created_at
        if now - last >= timedelta(hours=t.every_hours):
            return f"schedule: every {t.every_hours:g} hours"
    return None


def retraining_spec(session: Session, name: str, body: PolicyIn) -> JobSpec:
    """The newest version's job spec, on the newest version of the policy's dataset (or of its own), registered
    under ``name`` (with no promotion of its own: the policy's gate and rollout decide)."""
    newest = registry.resolve(session, name)
    spec = dict(session.get(TrainingJob, newest.job_id).spec)
    spec.update(dataset=body.dataset or newest.dataset.name, name=name, promote=None)
    return JobSpec.model_validate(spec)


def _start(session: Session, runtime: Runtime, row: RetrainingPolicy, body: PolicyIn) -> TrainingJob | None:
    if row.last_started_at is not None and utcnow() - row.last_started_at < timedelta(hours=body.cooldown_hours):
        return None
    reason = trigger(session, row, body, runtime.settings)
    if reason is None:
        return None
    claimed = session.execute(update(RetrainingPolicy).where(
        RetrainingPolicy.id == row.id, RetrainingPolicy.job_id.is_(None),
        RetrainingPolicy.last_started_at.is_(None) if row.last_started_at is None
        else RetrainingPolicy.last_started_at == row.last_started_at).values(last_started_at=utcnow())).rowcount
    if not claimed:  # another replica took this step
        return None
    session.refresh(row)
    try:
        job = create_job(session, retraining_spec(session, row.name, body), runtime.settings)
    except AppError as exc:  # the dataset was deleted, the spec no longer fits the server: said, and cooled down
        row.last_reason = f"could not start: {exc.message}"
        _event(session, row, "refused", "refused", trigger=reason, error=exc.message)
        return None
    row.job_id, row.last_reason = job.id, reason
    _event(session, row, "job", "start", trigger=reason, job_id=str(job.id))
    return job


def _finish(session: Session, row: RetrainingPolicy, body: PolicyIn, job: TrainingJob) -> None:
    claimed = session.execute(update(RetrainingPolicy).where(
        RetrainingPolicy.id == row.id, RetrainingPolicy.job_id == job.id).values(job_id=None)).rowcount
    if not claimed:
        return
    session.refresh(row)
    if job.status != JobStatus.succeeded.value:
        row.last_reason = f"job {job.id} {JobStatus(job.status).value}: {job.error or 'no reason given'}"
        _event(session, row, "job_ended", "failed", job_id=str(job.id), status=JobStatus(job.status).value,
               error=job.error)
        return
    model = session.scalar(select(TrainedModel).where(TrainedModel.job_id == job.id))
    passed, reason = registry.judge_gate(session, model, body.gate, body.alias)
    _event(session, row, "gate", "gate", version=model.version, passed=passed, reason=reason)
    if not passed:
        row.last_reason = f"version {model.version} did not pass the gate: {reason}"
        return
    if body.rollout is None:
        row.last_reason = f"version {model.version} passed the gate; the policy rolls nothing out"
        return
    try:
        with session.begin_nested():
            rollout = rollouts.start(session, row.name, RolloutIn(candidate=model.version, alias=body.alias,
                                                                  **body.rollout.model_dump()), None)
    except AppError as exc:  # another rollout holds the alias, the alias is gone: said
        row.last_reason = f"version {model.version} passed the gate but could not roll out: {exc.message}"
        _event(session, row, "rollout", "rollout", version=model.version, started=False, error=exc.message)
        return
    row.rollout_id = rollout.id
    row.last_reason = f"version {model.version} passed the gate and is rolling out ({rollout.id})"
    _event(session, row, "rollout", "rollout", version=model.version, started=True, rollout_id=str(rollout.id))


def advance(runtime: Runtime, policy_id: uuid.UUID) -> str | None:
    """One step of one policy: "started" (a job submitted), "finished" (its job's end handled) or None."""
    queued = None
    with runtime.session() as session:
        row = session.get(RetrainingPolicy, policy_id)
        if row is None or not row.enabled:
            return None
        body = PolicyIn.model_validate(row.policy)
        if row.job_id is not None:
            job = session.get(TrainingJob, row.job_id)
            if job.status in ACTIVE:
                return None
            _finish(session, row, body, job)
            return "finished"
        job = _start(session, runtime, row, body)
        if job is not None:
            queued = (job.id, job.queue)
    if queued is None:
        return None
    try:  # after the commit; a message lost here is sent again by the reconciler's next pass
        enqueue_job(runtime.celery, *queued)
    except Exception:
        log.exception("retraining: could not send job %s; the reconciler sends it again", queued[0])
    return "started"


def advance_all(runtime: Runtime) -> dict[uuid.UUID, str]:
    """A pass over every enabled policy (the reconciler's); returns what it did, by policy id."""
    with runtime.session() as session:
        ids = list(session.scalars(select(RetrainingPolicy.id).where(RetrainingPolicy.enabled.is_(True))))
    done = {}
    for policy_id in ids:
        try:
            if (what := advance(runtime, policy_id)) is not None:
                done[policy_id] = what
        except Exception:
            log.exception("retraining: could not advance policy %s", policy_id)
    return done
