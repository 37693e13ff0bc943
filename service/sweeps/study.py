"""Optuna, as trainserve uses it: the study of a sweep in Optuna's RDB storage on trainserve's own database,
its sampler and pruner built from the sweep's request, and the parameters of a trial applied to a job spec.

Optuna keeps its own tables and its own ``alembic_version``: on PostgreSQL they live in the schema
``optuna`` of trainserve's database (migration 0010 creates it); on SQLite, where a second writer on the same
file would wait on trainserve's own transaction, in a file beside the database (``<name>.optuna.db``).
"""

from __future__ import annotations

import copy
import logging
from functools import lru_cache
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from sqlalchemy.engine import make_url

from service.sweeps.schemas import Parameter, SweepIn

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)


def storage_url(database_url: str) -> tuple[str, dict[str, Any]]:
    """Optuna's storage address and engine options for trainserve's database."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = url.database or ""
        return str(url.set(database=f"{path}.optuna.db" if path and path != ":memory:" else path)), {
            "connect_args": {"timeout": 30}}
    return database_url, {"pool_pre_ping": True, "connect_args": {"options": "-c search_path=optuna"}}


@lru_cache(maxsize=4)
def storage(database_url: str) -> optuna.storages.RDBStorage:
    url, options = storage_url(database_url)
    return optuna.storages.RDBStorage(url, engine_kwargs=options)


def distribution(parameter: Parameter) -> BaseDistribution:
    if parameter.type == "categorical":
        return CategoricalDistribution([_hashable(c) for c in parameter.choices])
    if parameter.type == "int":
        return IntDistribution(int(parameter.low), int(parameter.high), log=parameter.log,
                               step=int(parameter.step or 1))
    return FloatDistribution(parameter.low, parameter.high, log=parameter.log, step=parameter.step)


def _hashable(value: Any) -> Any:
    """Optuna's categorical choices are None, bool, int, float or str: a list (hidden sizes) travels as text."""
    return repr(value) if isinstance(value, (list, dict)) else value


def _unhashable(value: Any, parameter: Parameter) -> Any:
    if parameter.choices is not None:
        for choice in parameter.choices:
            if _hashable(choice) == value:
                return choice
    return value


def distributions(sweep: SweepIn) -> dict[str, BaseDistribution]:
    return {path: distribution(p) for path, p in sweep.space.items()}


def sampler(sweep: SweepIn, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The sweep's sampler. Each pass that launches trials builds it anew, in whichever process runs the pass:
    seeded with the sweep's seed plus the trials so far, so that a fresh sampler does not repeat the first
    trial's draw, and a sweep replays the same way."""
    seed = sweep.seed + offset
    if sweep.sampler == "grid":
        return optuna.samplers.GridSampler({path: [_hashable(v) for v in p.grid()] for path, p in sweep.space.items()},
                                           seed=seed)
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, sweep.budget.trials // 3)))


def pruner(sweep: SweepIn) -> optuna.pruners.BasePruner:
    p = sweep.pruner
    if p.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_epochs)
    if p.type == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_epochs, reduction_factor=p.reduction_factor)
    if p.type == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_epochs, max_resource="auto",
                                              reduction_factor=p.reduction_factor)
    return optuna.pruners.NopPruner()


def create(study_name: str, sweep: SweepIn, database_url: str) -> optuna.Study:
    return optuna.create_study(storage=storage(database_url), study_name=study_name, direction=sweep.direction,
                               sampler=sampler(sweep), pruner=pruner(sweep), load_if_exists=True)


def load(study_name: str, sweep: SweepIn, database_url: str) -> optuna.Study:
    return optuna.load_study(study_name=study_name, storage=storage(database_url), sampler=sampler(sweep),
                             pruner=pruner(sweep))


def tell(study: optuna.Study, trial: int | optuna.Trial, value: float | None = None,
         state: optuna.trial.TrialState | None = None) -> None:
    """``study.tell`` outside ``study.optimize``: a grid sampler's ``after_trial`` stops the study once the
    grid is done, which Optuna allows only inside ``optimize``; telling goes through a sampler without that
    step (the search's own sampler only matters when a trial is asked for)."""
    searching, study.sampler = study.sampler, optuna.samplers.RandomSampler()
    try:
        study.tell(trial, value, state=state)
    finally:
        study.sampler = searching


def params_of(trial: optuna.trial.BaseTrial | optuna.trial.FrozenTrial, sweep: SweepIn) -> dict[str, Any]:
    return {path: _unhashable(trial.params[path], p) for path, p in sweep.space.items() if path in trial.params}


def apply(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """``base`` with each dotted path set to its value; the parent sections are made where missing."""
    spec = copy.deepcopy(base)
    for path, value in params.items():
        *parents, leaf = path.split(".")
        node = spec
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise KeyError(path)
            node = child
        node[leaf] = value
    return spec
