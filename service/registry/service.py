"""The model registry: versions under a name, aliases that point at one version, and references to a model
as an id, ``name`` (its newest version), ``name@<version>`` or ``name@<alias>``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.architectures import ModelConfig
from models.metrics import CHANCE_MARGIN, chance_accuracy
from models.portable import FILE_SUFFIX
from service.audit.service import record
from service.datasets.schemas import DatasetRef
from service.http.errors import Conflict, InvalidInput, NotFound
from service.http.pagination import newest_first
from service.platform.references import next_version, parse_reference, retry_on_conflict
from service.platform.runtime import Runtime
from service.platform.tables import ModelAlias, Rollout, TrainedModel, utcnow
from service.registry.schemas import FORECASTER_METRICS, AliasOut, GateIn, ModelOut, PromoteIn


def get_model(session: Session, model_id: uuid.UUID) -> TrainedModel:
    model = session.get(TrainedModel, model_id)
    if model is None:
        raise NotFound(f"no model with id {model_id}")
    return model


def get_version(session: Session, name: str, version: int) -> TrainedModel:
    model = session.scalar(select(TrainedModel).where(TrainedModel.name == name, TrainedModel.version == version))
    if model is None:
        newest = _newest_of(session, name)
        raise NotFound(f"model {name!r} has no version {version}; its newest is {newest.version}")
    return model


def _newest_of(session: Session, name: str) -> TrainedModel:
    model = session.scalars(select(TrainedModel).where(TrainedModel.name == name)
                            .order_by(TrainedModel.version.desc()).limit(1)).first()
    if model is None:
        raise NotFound(f"no model named {name!r}; GET /v1/models lists the registered ones")
    return model


def resolve(session: Session, ref: str) -> TrainedModel:
    """A model by id, ``name``, ``name@<version>`` or ``name@<alias>``."""
    parsed = parse_reference(ref)
    if parsed.id is not None:
        return get_model(session, parsed.id)
    name, tag = parsed.name, parsed.tag
    if not tag:
        return _newest_of(session, name)
    if parsed.version is not None:
        return get_version(session, name, parsed.version)
    alias = session.get(ModelAlias, (name, tag))
    if alias is None:
        known = [a.alias for a in session.scalars(select(ModelAlias).where(ModelAlias.name == name))]
        _newest_of(session, name)  # an unknown name says so first
        raise NotFound(f"model {name!r} has no alias {tag!r}; its aliases: {', '.join(known) or 'none yet'}")
    return alias.model


DEFAULT_ALIAS = "production"
TASK_NOUN = {"classification": "classifier", "forecast": "forecaster"}


def default_model(session: Session, task: str) -> TrainedModel:
    """What a request that names no model gets: the one model of ``task`` at the ``production`` alias. It moves
    only when a version is promoted, never because another job finished. With none there, or several names
    there, InvalidInput lists what to name instead."""
    noun = TASK_NOUN.get(task, f"{task} model")
    held = session.scalars(select(ModelAlias).join(ModelAlias.model)
                           .where(ModelAlias.alias == DEFAULT_ALIAS, TrainedModel.task == task)
                           .order_by(ModelAlias.name)).all()
    if len(held) == 1:
        return held[0].model
    if held:
        names = ", ".join(f"{a.name}@{DEFAULT_ALIAS}" for a in held)
        raise InvalidInput(f"several {noun}s are at {DEFAULT_ALIAS} ({names}), so a request must name one with "
                           f"'model', or the deployment sets TRAINSERVE_DEFAULT_{noun.upper()}")
    newest = session.execute(select(TrainedModel.name, func.max(TrainedModel.version)).where(TrainedModel.task == task)
                             .group_by(TrainedModel.name).order_by(func.max(TrainedModel.created_at).desc())
                             .limit(10)).all()
    if not newest:
        raise NotFound(f"no {task} model has been trained yet; submit a job to POST /v1/jobs first")
    choices = ", ".join(f"{name}@{version}" for name, version in newest)
    raise InvalidInput(f"no {noun} is at {DEFAULT_ALIAS} yet, so name one with 'model' ({choices}), or promote "
                       f"one: POST /v1/models/{{name}}/versions/{{n}}/promote, or trainserve models promote NAME N")


def list_models(session: Session, name: str | None, limit: int, offset: int) -> tuple[list[TrainedModel], int]:
    query = select(TrainedModel)
    if name is not None:
        query = query.where(TrainedModel.name == name)
    return newest_first(session, query, TrainedModel, limit, offset)


def rollout_holding(session: Session, name: str, alias: str) -> Rollout | None:
    """The rollout running (or paused) on ``name@alias``: while there is one, only it moves the alias."""
    return session.scalar(select(Rollout).where(Rollout.name == name, Rollout.alias == alias,
                                                Rollout.status.in_(("running", "paused"))))


def set_alias(session: Session, name: str, alias: str, version: int, rollout: bool = False) -> ModelAlias:
    """Point ``name@alias`` at ``version``; refused (Conflict) while a rollout holds the alias, unless the
    rollout itself moves it."""
    model = get_version(session, name, version)
    if not rollout and (held := rollout_holding(session, name, alias)) is not None:
        raise Conflict(f"rollout {held.id} holds {name}@{alias} ({held.status}); it moves the alias when it "
                       f"ends. Promote or abort it first: POST /v1/models/{name}/rollouts/{held.id}/promote")
    row = session.get(ModelAlias, (name, alias))
    if row is None:
        row = ModelAlias(name=name, alias=alias, model=model)
        session.add(row)
    else:
        row.model, row.updated_at = model, utcnow()
    session.flush()
    return row


def alias_version(session: Session, name: str, alias: str) -> int | None:
    """The version ``name@alias`` points at now; None if the alias does not exist."""
    row = session.get(ModelAlias, (name, alias))
    return row.model.version if row is not None else None


def delete_alias(session: Session, name: str, alias: str) -> None:
    row = session.get(ModelAlias, (name, alias))
    if row is None:
        raise NotFound(f"model {name!r} has no alias {alias!r}")
    if (held := rollout_holding(session, name, alias)) is not None:
        raise Conflict(f"rollout {held.id} holds {name}@{alias}; abort it first: "
                       f"POST /v1/models/{name}/rollouts/{held.id}/abort")
    session.delete(row)
    session.flush()


def metric_of(metrics: dict, metric: str) -> float | None:
    """A version's ``metric`` from its recorded metrics: a classifier's directly, a forecaster's from its
    model errors (``test_rmse`` is ``model.rmse``)."""
    if metric in FORECASTER_METRICS:
        return (metrics.get("model") or {}).get(metric.removeprefix("test_"))
    return metrics.get(metric)


def _chance(gate: GateIn, metrics: dict) -> float | None:
    """A classifier gate without ``min`` on test accuracy is a chance bar: the accuracy of always answering
    the most common test label, which the metric must beat by more than CHANCE_MARGIN. None otherwise."""
    if gate.min is not None or gate.metric != "test_accuracy":
        return None
    return chance_accuracy(metrics)


def _gate_failure(gate: GateIn, metrics: dict, value: float | None) -> str | None:
    """Why the version fails the gate's own checks; None when it passes them."""
    if value is None:
        return f"this model has no {gate.metric} to judge it by"
    if gate.min is not None and value < gate.min:
        return f"{gate.metric} {value:.4f} is below the bar of {gate.min}"
    chance = _chance(gate, metrics)
    if chance is not None and value <= chance + CHANCE_MARGIN:
        return (f"{gate.metric} {value:.4f} is no better than chance: always answering the most common label "
                f"scores {chance:.4f}")
    if gate.max is not None and value > gate.max:
        return f"{gate.metric} {value:.4g} is above the bound of {gate.max:g}"
    for check, baseline, name in ((gate.beats_persistence, "persistence", "persistence (the last reading)"),
                                  (gate.beats_seasonal_naive, "seasonal_naive", "seasonal naive (a season ago)")):
        if not check:
            continue
        theirs = (metrics.get(baseline) or {}).get(gate.metric.removeprefix("test_"))
        if theirs is None:
            return f"{name} has no {gate.metric} on these test windows to compare with"
        if value >= theirs:
            return f"{gate.metric} {value:.4g} does not beat {name}'s {theirs:.4g}"
    return None


def _bar(gate: GateIn, metrics: dict) -> str:
    if gate.metric in FORECASTER_METRICS:
        return "the gate"
    if gate.min is not None:
        return f"{gate.min:g}"
    chance = _chance(gate, metrics)
    return f"chance ({chance:.4f})" if chance is not None else "no bar (none set)"


def promote(session: Session, model: TrainedModel, gate: PromoteIn) -> dict:
    """Gated promotion: point ``gate.alias`` at ``model`` only if it passes the gate's checks and beats the
    version the alias points at now on ``gate.metric``. Returns the decision and the reason, for the job's
    record. ``gate`` is checked against the model's task here (InvalidInput when a check does not apply)."""
    gate = for_task(gate, model.task, "promote")
    metric = gate.metric
    value = metric_of(model.metrics, metric)
    current = session.get(ModelAlias, (model.name, gate.alias))
    decision = {**gate.model_dump(), "value": value, "moved": False,
                "previous_version": current.model.version if current else None}
    failure = _gate_failure(gate, model.metrics, value)
    if failure is None and (held := rollout_holding(session, model.name, gate.alias)) is not None:
        failure = f"rollout {held.id} holds {model.name}@{gate.alias}; it moves the alias when it ends"
    failure = failure or _not_better(gate, model, current)
    if failure is not None:
        decision["reason"] = failure
        return decision
    decision.update(moved=True, reason=_passed(gate, model, current))  # before the alias moves
    set_alias(session, model.name, gate.alias, model.version)
    record(session, None, "model.promote", f"{model.name}@{gate.alias}",
           before={"version": decision["previous_version"]},
           after={"version": model.version, "job_id": str(model.job_id), metric: value})
    return decision


def for_task(gate: GateIn, task: str, field: str) -> GateIn:
    """The gate with its defaults for ``task``; InvalidInput naming ``field`` for a check that does not apply."""
    try:
        return gate.for_task(task)
    except ValueError as exc:
        raise InvalidInput(str(exc), details=[{"field": field, "message": "not for this task"}]) from None


def _not_better(gate: GateIn, model: TrainedModel, current: ModelAlias | None) -> str | None:
    """Why ``model`` does not beat the version ``current`` points at on the gate's metric; None if it does."""
    if current is None:
        return None
    value, theirs = metric_of(model.metrics, gate.metric), metric_of(current.model.metrics, gate.metric)
    if theirs is None or (value < theirs if gate.metric in FORECASTER_METRICS else value > theirs):
        return None
    return f"{gate.metric} {value:.4g} does not beat version {current.model.version}'s {theirs:.4g}"


def _passed(gate: GateIn, model: TrainedModel, current: ModelAlias | None) -> str:
    value = metric_of(model.metrics, gate.metric)
    theirs = metric_of(current.model.metrics, gate.metric) if current else None
    before = f"and beats version {current.model.version}'s {theirs:.4g}" if current and theirs is not None \
        else "and no version held the alias"
    return f"{gate.metric} {value:.4g} clears {_bar(gate, model.metrics)} {before}"


def judge_gate(session: Session, model: TrainedModel, gate: GateIn, alias: str) -> tuple[bool, str]:
    """The gate's verdict on ``model`` against the version ``name@alias`` points at, moving nothing:
    (passed, reason)."""
    gate = for_task(gate, model.task, "gate")
    current = session.get(ModelAlias, (model.name, alias))
    failure = _gate_failure(gate, model.metrics, metric_of(model.metrics, gate.metric)) \
        or _not_better(gate, model, current)
    return (False, failure) if failure is not None else (True, _passed(gate, model, current))


@dataclass(frozen=True)
class NewVersion:
    """A trained model on its way into the registry."""

    name: str
    task: str
    job_id: uuid.UUID
    dataset_id: uuid.UUID
    config: ModelConfig
    data: bytes  # the model file: state_dict and config
    held_out: bytes  # inputs from the job's test part, the exports are checked on (models.export.tensor_to_bytes)
    metrics: dict
    promote: PromoteIn | None = None
    profile: dict | None = None  # a classifier's reference profile for drift (models/drift.py)


def register_version(runtime: Runtime, new: NewVersion, finish: Callable[[Session, dict], None]) -> uuid.UUID:
    """Save the model file and its held-out inputs, then in one transaction add it as the next version under its name, run the gated
    promotion, and call ``finish(session, result)`` (the job marking itself succeeded with the metrics and the
    promotion's decision). If anything fails the files are removed again: no file without a row."""
    store, model_id = runtime.store, uuid.uuid4()
    key = f"models/{model_id}/model.pt"
    sha256 = store.put(key, new.data)
    store.put(held_out_key(model_id), new.held_out)
    config = new.config

    def add_next_version() -> uuid.UUID:
        with runtime.session() as session:
            model = TrainedModel(
                id=model_id, name=new.name, version=next_version(session, TrainedModel, new.name), task=new.task,
                job_id=new.job_id, dataset_id=new.dataset_id, architecture=config.architecture,
                input_shape=list(config.input_shape), value_range=list(config.value_range),
                num_classes=config.num_classes, metrics=new.metrics, artifact_key=key, sha256=sha256,
                size_bytes=len(new.data), profile=new.profile)
            session.add(model)
            session.flush()
            result = dict(new.metrics)
            if new.promote is not None:
                result["promotion"] = promote(session, model, new.promote)
            finish(session, result)
        return model_id

    try:
        return retry_on_conflict(add_next_version, f"model {new.name!r}")
    except BaseException:
        store.delete(key)
        store.delete(held_out_key(model_id))
        raise


def held_out_key(model_id: uuid.UUID) -> str:
    return f"models/{model_id}/held-out.pt"


def alias_out(row: ModelAlias) -> AliasOut:
    return AliasOut(name=row.name, alias=row.alias, version=row.model.version, model_id=row.model_id,
                    updated_at=row.updated_at)


def model_out(model: TrainedModel) -> ModelOut:
    d = model.dataset
    return ModelOut(
        id=model.id, name=model.name, version=model.version, task=model.task, architecture=model.architecture,
        dataset=DatasetRef(id=d.id, name=d.name, version=d.version), job_id=model.job_id,
        input_shape=model.input_shape, value_range=model.value_range, num_classes=model.num_classes,
        aliases=[a.alias for a in model.aliases], metrics=model.metrics, sha256=model.sha256,
        exports={fmt: {k: v for k, v in e.items() if k not in ("key", "sha256")} for fmt, e in model.exports.items()},
        size_bytes=model.size_bytes, created_at=model.created_at,
    )


def artifact_for_download(model: TrainedModel, fmt: str) -> tuple[str, str, str]:
    """The artifact key, sha256 and file name of one format of a model version."""
    filename = f"{model.name}-v{model.version}.{FILE_SUFFIX[fmt]}"
    if fmt == "pt":
        return model.artifact_key, model.sha256, filename
    made = model.exports.get(fmt)
    if made is None:
        raise Conflict(f"the {fmt} export of {model.name} v{model.version} has not been made yet; it follows "
                       f"training within moments, or POST /v1/models/{model.id}/exports asks for it again")
    if made["status"] != "ok":
        raise Conflict(f"the {fmt} export of {model.name} v{model.version} failed: {made['error']}")
    return made["key"], made["sha256"], filename
