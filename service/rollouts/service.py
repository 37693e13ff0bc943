"""Rollouts: start one, read it with its live numbers, pause, resume, promote, abort, and judge it.

The database is the truth: the rollout's row (its step and status), its events (every step and verdict, with
the numbers), and the counts the API replicas add every few seconds (service/serving/rollouts.py). Every change
starts by writing the row (``judged_at``), which serialises the replicas' judging passes and the operator's
commands, as a sweep's passes are; whichever replica runs the pass, one decides.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.audit.service import record
from service.http.errors import Conflict, InvalidInput, NotFound
from service.http.pagination import newest_first
from service.platform import events
from service.platform.references import flush_or_conflict, parse_reference
from service.platform.runtime import Runtime
from service.platform.tables import (
    ModelAlias,
    Prediction,
    Rollout,
    RolloutCount,
    RolloutEvent,
    TrainedModel,
    utcnow,
)
from service.registry import service as registry
from service.rollouts.gates import arm_stats, checks
from service.rollouts.schemas import RolloutIn, RolloutOut, Step, VersionRef
from service.serving.rollouts import ACTIVE, Counts

if TYPE_CHECKING:
    from service.http.auth import Principal

log = logging.getLogger(__name__)


def _invalid(message: str, field: str) -> InvalidInput:
    return InvalidInput(message, details=[{"field": field, "message": message}])


def _candidate(session: Session, name: str, candidate: int | str) -> TrainedModel:
    if isinstance(candidate, int) or candidate.isdigit():
        ref = f"{name}@{candidate}"
    else:
        ref = candidate
        parsed = parse_reference(candidate)
        if parsed.id is None and (parsed.name != name or parsed.version is None):
            raise _invalid(f"candidate {candidate!r} must be a version of {name}: its number, {name}@<number>, "
                           "or its id", "candidate")
    try:
        model = registry.resolve(session, ref)
    except NotFound as exc:
        raise _invalid(f"candidate: {exc.message}", "candidate") from None
    if model.name != name:
        raise _invalid(f"candidate {candidate!r} is version {model.version} of {model.name}, not of {name}; a "
                       f"rollout moves {name}'s alias between versions of {name}", "candidate")
    return model


def start(session: Session, name: str, body: RolloutIn, who: Principal | None) -> Rollout:
    """Refuse, naming the field, what cannot roll out; then record the rollout, running its first step."""
    registry.resolve(session, name)  # an unknown name is a 404 first
    alias = session.get(ModelAlias, (name, body.alias))
    if alias is None:
        raise _invalid(f"{name}@{body.alias} does not exist, so there is no stable version to roll out from; point "
                       f"it at a version first (PUT /v1/models/{name}/aliases/{body.alias})", "alias")
    stable, candidate = alias.model, _candidate(session, name, body.candidate)
    if candidate.id == stable.id:
        raise _invalid(f"{name}@{body.alias} already points at version {stable.version}", "candidate")
    if candidate.task != stable.task:
        raise _invalid(f"version {candidate.version} is a {candidate.task} model and version {stable.version} a "
                       f"{stable.task} one", "candidate")
    if list(candidate.input_shape) != list(stable.input_shape) or list(candidate.value_range) != list(stable.value_range):
        raise _invalid(f"version {candidate.version} takes inputs of shape {candidate.input_shape} on the scale "
                       f"{candidate.value_range}, and version {stable.version} {stable.input_shape} on "
                       f"{stable.value_range}: the requests that reach one would not suit the other", "candidate")
    if stable.task == "forecast" and body.gates.min_agreement is not None and "min_agreement" in body.gates.model_fields_set:
        raise _invalid("min_agreement judges classifiers; a forecaster's gate is max_difference", "gates.min_agreement")
    if stable.task == "forecast" and body.gates.max_accuracy_drop is not None:
        raise _invalid("max_accuracy_drop judges classifiers' labels; a forecaster's gate is max_difference",
                       "gates.max_accuracy_drop")
    held = session.scalar(select(Rollout).where(Rollout.name == name, Rollout.alias == body.alias,
                                                Rollout.status.in_(ACTIVE)))
    if held is not None:
        raise Conflict(f"rollout {held.id} already holds {name}@{body.alias} ({held.status}); wait for it, or abort "
                       f"it: POST /v1/models/{name}/rollouts/{held.id}/abort")
    row = Rollout(name=name, alias=body.alias, stable_id=stable.id, candidate_id=candidate.id, mode=body.mode,
                  request=body.model_dump(mode="json"), key_id=who.key_id if who else None)
    session.add(row)
    flush_or_conflict(session, f"another rollout started on {name}@{body.alias} at the same moment; GET "
                               f"/v1/models/{name}/rollouts lists it")
    events.append(session, RolloutEvent, row.id, "status", {"status": "running", "stable": stable.version,
                                                            "candidate": candidate.version, "mode": body.mode})
    _step_event(session, row, body)
    record(session, who, "rollout.start", f"{name}@{body.alias}", before={"version": stable.version},
           after={"candidate": candidate.version, "mode": body.mode, "rollout_id": str(row.id)})
    return row


def _step_event(session: Session, row: Rollout, body: RolloutIn) -> None:
    step = body.steps[row.step]
    events.append(session, RolloutEvent, row.id, "step", {"step": row.step, "weight": step.weight,
                                                          "min_seconds": step.min_seconds,
                                                          "min_requests": step.min_requests})


def get_rollout(session: Session, name: str, rollout_id: uuid.UUID) -> Rollout:
    row = session.get(Rollout, rollout_id)
    if row is None or row.name != name:
        raise NotFound(f"model {name!r} has no rollout {rollout_id}; GET /v1/models/{name}/rollouts lists them")
    return row


def list_rollouts(session: Session, name: str | None, status: str | None, limit: int,
                  offset: int) -> tuple[list[Rollout], int]:
    query = select(Rollout)
    if name is not None:
        query = query.where(Rollout.name == name)
    if status is not None:
        query = query.where(Rollout.status == status)
    return newest_first(session, query, Rollout, limit, offset)


def step_counts(session: Session, rollout_id: uuid.UUID, step: int) -> tuple[dict[str, Counts], Counts]:
    """The step's counts by arm, summed over every replica's flushes, and the stable version's over the whole
    rollout."""
    summed, stable_all = {"stable": Counts(), "candidate": Counts()}, Counts()
    for r in session.scalars(select(RolloutCount).where(RolloutCount.rollout_id == rollout_id,
                                                        RolloutCount.step <= step)):
        counts = Counts(r.requests, r.errors, r.compared, r.agreed, r.difference, r.scale, list(r.latency))
        if r.step == step:
            summed.setdefault(r.arm, Counts()).add(counts)
        if r.arm == "stable":
            stable_all.add(counts)
    return summed, stable_all


def labelled(session: Session, row: Rollout) -> dict[str, tuple[int, int]]:
    """Each version's live instances labelled by feedback since the step began, and how many it got right."""
    out = {}
    for arm, model_id in (("stable", row.stable_id), ("candidate", row.candidate_id)):
        rows = session.execute(select(Prediction.predicted, Prediction.actual).where(
            Prediction.model_id == model_id, Prediction.created_at >= row.step_started_at,
            Prediction.actual.is_not(None))).all()
        pairs = [(p, a) for predicted, actual in rows for p, a in zip(predicted, actual)]
        out[arm] = (len(pairs), sum(p == a for p, a in pairs))
    return out


def _checks(session: Session, row: Rollout, body: RolloutIn, counts: dict[str, Counts], stable_all: Counts):
    live = labelled(session, row) if body.gates.max_accuracy_drop is not None else None
    return checks(body.gates, row.stable.task, counts["stable"], counts["candidate"], stable_all, live)


def rollout_out(session: Session, row: Rollout) -> RolloutOut:
    body = RolloutIn.model_validate(row.request)
    counts, stable_all = step_counts(session, row.id, row.step)
    return RolloutOut(
        id=row.id, name=row.name, alias=row.alias, mode=row.mode, status=row.status,
        stable=VersionRef(id=row.stable.id, version=row.stable.version),
        candidate=VersionRef(id=row.candidate.id, version=row.candidate.version), step=row.step,
        weight=body.steps[row.step].weight, steps=body.steps, gates=body.gates, compare_share=body.compare_share,
        step_started_at=row.step_started_at, live={arm: arm_stats(c) for arm, c in counts.items()},
        checks=_checks(session, row, body, counts, stable_all) if row.status in ACTIVE else [],
        reason=row.reason, history=history(session, row.id), created_at=row.created_at, finished_at=row.finished_at)


def history(session: Session, rollout_id: uuid.UUID, newest: int = 50) -> list[dict]:
    rows = session.execute(select(RolloutEvent.seq, RolloutEvent.kind, RolloutEvent.data, RolloutEvent.created_at)
                           .where(RolloutEvent.rollout_id == rollout_id).order_by(RolloutEvent.seq.desc())
                           .limit(newest)).all()
    return [{"seq": seq, "kind": kind, "time": at.isoformat(), **{k: v for k, v in data.items() if k != "live"}}
            for seq, kind, data, at in reversed(rows)]


def _locked(session: Session, name: str, rollout_id: uuid.UUID, statuses: tuple[str, ...]) -> Rollout | None:
    """The rollout, after writing its row (the lock every decision takes first), if its status is one of
    ``statuses``; None if it is not (it ended meanwhile)."""
    get_rollout(session, name, rollout_id)
    locked = session.execute(update(Rollout).where(Rollout.id == rollout_id, Rollout.status.in_(statuses))
                             .values(judged_at=utcnow())).rowcount
    row = session.get(Rollout, rollout_id)
    session.refresh(row)
    return row if locked else None


def _end(session: Session, row: Rollout, status: str, reason: str, who: Principal | None, **data) -> None:
    """Finish the rollout: ``succeeded`` moves the alias to the candidate, ``rolled_back`` leaves it."""
    if status == "succeeded":
        registry.set_alias(session, row.name, row.alias, row.candidate.version, rollout=True)
    row.status, row.reason, row.finished_at = status, reason, utcnow()
    events.append(session, RolloutEvent, row.id, "status", {"status": status, "reason": reason, **data})
    versions = {"stable": row.stable.version, "candidate": row.candidate.version}
    record(session, who, "rollout.promote" if status == "succeeded" else "rollout.rollback",
           f"{row.name}@{row.alias}", before={"version": row.stable.version},
           after={"version": row.candidate.version if status == "succeeded" else row.stable.version,
                  "rollout_id": str(row.id), "reason": reason, **versions, **data})


def command(session: Session, name: str, rollout_id: uuid.UUID, action: str, who: Principal | None) -> Rollout:
    """pause, resume, promote (finish now: the alias moves) or abort (roll back now)."""
    allowed = {"pause": ("running",), "resume": ("paused",), "promote": ACTIVE, "abort": ACTIVE}[action]
    row = _locked(session, name, rollout_id, allowed)
    if row is None:
        current = get_rollout(session, name, rollout_id)
        raise Conflict(f"rollout {rollout_id} is {current.status}; {action} applies to a rollout that is "
                       f"{' or '.join(allowed)}")
    who_name = (who.name if who and who.key_id else None) or "the operator"
    if action == "pause":
        row.status = "paused"
        events.append(session, RolloutEvent, row.id, "status", {"status": "paused", "reason": f"paused by {who_name}"})
    elif action == "resume":
        row.status = "running"
        events.append(session, RolloutEvent, row.id, "status", {"status": "running", "reason": f"resumed by {who_name}"})
    elif action == "promote":
        _end(session, row, "succeeded", f"promoted by {who_name} at step {row.step}", who, step=row.step)
    else:
        _end(session, row, "rolled_back", f"aborted by {who_name} at step {row.step}", who, step=row.step)
    if action in ("pause", "resume"):
        record(session, who, f"rollout.{action}", f"{row.name}@{row.alias}", after={"rollout_id": str(row.id)})
    return row


def running(session: Session) -> list[tuple[str, uuid.UUID]]:
    return list(session.execute(select(Rollout.name, Rollout.id).where(Rollout.status == "running")).all())


def _verdict(session: Session, row: Rollout, now: datetime | None) -> tuple[str, str, dict | None] | None:
    """What a judging pass would do with ``row`` now, without doing it: ("rolled_back", "succeeded" or "step",
    the reason, the numbers), or None (the step goes on)."""
    body = RolloutIn.model_validate(row.request)
    alias = session.get(ModelAlias, (row.name, row.alias))
    if alias is None or alias.model_id != row.stable_id:
        return "rolled_back", f"{row.name}@{row.alias} no longer points at version {row.stable.version}, the " \
                              f"stable one", None
    counts, stable_all = step_counts(session, row.id, row.step)
    results = _checks(session, row, body, counts, stable_all)
    numbers = {"step": row.step, "gates": [r.model_dump() for r in results],
               "live": {arm: arm_stats(c).model_dump() for arm, c in counts.items()}}
    failed = [r for r in results if r.passed is False]
    if failed:
        return "rolled_back", f"step {row.step}: " + "; ".join(f"{r.gate}: {r.reason}" for r in failed), numbers
    step: Step = body.steps[row.step]
    elapsed = ((now or utcnow()) - row.step_started_at).total_seconds()
    if any(r.passed is None for r in results) or elapsed < step.min_seconds \
            or counts["candidate"].requests < step.min_requests:
        return None
    if row.step + 1 == len(body.steps):
        return "succeeded", f"every gate passed at all {len(body.steps)} steps", numbers
    return "step", f"step {row.step} passed", numbers


def judge(session: Session, name: str, rollout_id: uuid.UUID, now: datetime | None = None) -> str | None:
    """One judging pass over a running rollout: roll it back when a gate fails, move it to its next step (or
    finish it) when every gate passes and the step's time and requests are spent. Returns what it did
    ("rolled_back", "succeeded", "step") or None. The row is locked (written) only when a decision is due,
    and the verdict taken again under the lock: most passes decide nothing and write nothing."""
    if _verdict(session, get_rollout(session, name, rollout_id), now) is None:
        return None
    row = _locked(session, name, rollout_id, ("running",))
    if row is None or (verdict := _verdict(session, row, now)) is None:
        return None
    what, reason, numbers = verdict
    if what == "rolled_back":
        if numbers is not None:
            events.append(session, RolloutEvent, row.id, "verdict", {"verdict": "fail", **numbers})
        _end(session, row, "rolled_back", reason, None, step=row.step)
        return what
    events.append(session, RolloutEvent, row.id, "verdict", {"verdict": "pass", **numbers})
    if what == "succeeded":
        _end(session, row, "succeeded", reason, None, step=row.step)
        return what
    row.step, row.step_started_at = row.step + 1, utcnow()
    _step_event(session, row, RolloutIn.model_validate(row.request))
    return what


def judge_all(runtime: Runtime) -> dict[uuid.UUID, str]:
    """A judging pass over every running rollout; returns the decisions taken."""
    with runtime.session() as session:
        ids = running(session)
    decided = {}
    for name, rollout_id in ids:
        try:
            with runtime.session() as session:
                if (what := judge(session, name, rollout_id)) is not None:
                    decided[rollout_id] = what
        except Exception:
            log.exception("rollouts: could not judge rollout %s of %s", rollout_id, name)
    for rollout_id, what in decided.items():
        log.info("rollout %s: %s", rollout_id, what)
    return decided
