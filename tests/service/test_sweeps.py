"""Sweeps in process: every refusal, a sweep whose trials the test runs through the worker's own code, and
cancelling. The live sweep with Celery workers, pruning and an API restart: tests/workers/test_sweeps.py."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from service.jobs.runner import run_job
from service.platform.events import after
from service.platform.tables import Sweep, SweepEvent, utcnow
from service.reconciler import Reconciler
from service.sweeps.trials import TrialHooks
from tests.helpers import assert_error, solar_forecaster, unique

BASE = {"dataset": "digits", "architecture": {"type": "logistic_regression"},
        "optimizer": {"type": "sgd", "momentum": 0.0}, "training": {"epochs": 3, "batch_size": 64}}
LR = {"training.learning_rate": {"low": 1e-3, "high": 1.0, "log": True}}


class DiesBeforeAdvancing(TrialHooks):
    """A trial's hooks in a worker killed after its trial finished, before it advanced the sweep."""

    def ended(self, runtime, job) -> None:
        pass


def run_unseen(runtime, job_id: str) -> None:
    run_job(runtime, uuid.UUID(job_id), threading.Event(), DiesBeforeAdvancing)


def sweep(**changes) -> dict:
    body = {"name": unique("sweep"), "base": BASE, "space": LR, "sampler": "random",
            "budget": {"trials": 4, "parallel": 2}, "pruner": {"type": "none"}}
    return {**body, **changes}


@pytest.mark.parametrize("changes,field,fragments", [
    ({"space": {"training.learning_rat": {"low": 0.1, "high": 1}}}, "space.training.learning_rat",
     ["the spec has no such setting"]),
    ({"space": {"trainer.lr": {"low": 0.1, "high": 1}}}, "space.trainer.lr", ["no such setting"]),
    ({"space": {"optimizer.betas": {"type": "categorical", "choices": [[0.9, 0.99]]}}}, "space.optimizer.betas",
     ["no such setting here", "optimizer.momentum with optimizer sgd"]),
    ({"space": {"training.learning_rate": {"low": 1.0, "high": 1.0}}}, "space.training.learning_rate",
     ["the range 1..1 is empty"]),
    ({"space": {"training.learning_rate": {"low": 0, "high": 1, "log": True}}}, "space.training.learning_rate",
     ["log-scale range must start above 0"]),
    ({"space": {"training.batch_size": {"type": "categorical", "choices": []}}}, "space.training.batch_size",
     ["choices is empty"]),
    ({"space": {"training.batch_size": {"type": "int", "low": 0, "high": 64}}}, "space.training.batch_size",
     ["does not take 0", "greater than or equal to 1"]),
    ({"space": {}}, "space", ["at least 1 item"]),
    ({"sampler": "grid", "space": {"training.batch_size": {"type": "int", "low": 16, "high": 64}}},
     "budget.trials", ["the grid has 49 points and budget.trials is 4"]),
    ({"sampler": "grid"}, "space.training.learning_rate", ["a grid needs values to try"]),
    ({"metric": "val_rmse"}, "metric", ["val_rmse is not reported by a classification job"]),
    ({"metric": "val_accuracy", "direction": "minimize"}, "body", ["use maximize"]),
    ({"base": {**BASE, "training": {"validation_split": 0}}}, "base.training.validation_split",
     ["measured on the validation split"]),
    ({"base": {**BASE, "architecture": {"type": "transformer"}}}, "base.architecture", ["base is not a job spec"]),
    ({"budget": {"trials": 0}}, "budget.trials", ["greater than or equal to 1"]),
    ({"budget": {"trials": 4, "parallel": 0}}, "budget.parallel", ["greater than or equal to 1"]),
    ({"pruner": {"type": "asha"}}, "pruner.type", ["'median', 'successive_halving', 'hyperband' or 'none'"]),
])
def test_bad_sweeps_answer_422_naming_the_field(client, changes, field, fragments):
    error = assert_error(client.post("/v1/sweeps", json=sweep(**changes)), 422, *fragments)
    assert field in [d["field"] for d in error["details"]], error
    assert client.get("/v1/sweeps").json()["total"] == 0 or all(
        s["name"] != changes.get("name") for s in client.get("/v1/sweeps").json()["items"])


def test_a_forecast_sweep_takes_val_rmse_but_not_accuracy(client):
    base = solar_forecaster(unique("solar"), 2)
    assert_error(client.post("/v1/sweeps", json=sweep(base=base, metric="val_accuracy")), 422,
                 "val_accuracy is not reported by a forecast job")
    assert_error(client.post("/v1/sweeps", json=sweep(base={**base, "training": {**base["training"], "loss": "mae"}},
                                                       metric="val_rmse")), 422, "set base.training.loss to mse")


def test_an_unknown_dataset_is_refused_before_any_trial(client):
    assert_error(client.post("/v1/sweeps", json=sweep(base={**BASE, "dataset": "imagenet"})), 422, "imagenet")
    assert client.get("/v1/jobs").json()["items"] == [] or all(
        j["spec"]["dataset"] != "imagenet" for j in client.get("/v1/jobs").json()["items"])


def queued_trials(client, sweep_id) -> list[dict]:
    return [t for t in client.get(f"/v1/sweeps/{sweep_id}").json()["trials"] if t["status"] == "queued"]


def test_a_sweep_runs_its_trials_as_jobs_and_registers_the_best(client, run_job):
    body = sweep(space={**LR, "training.batch_size": {"type": "categorical", "choices": [32, 64]}})
    r = client.post("/v1/sweeps", json=body)
    assert r.status_code == 202, r.text
    created = r.json()
    assert r.headers["Location"] == f"/v1/sweeps/{created['id']}"
    assert created["status"] == "running" and created["counts"]["queued"] == 2, "parallel trials start at once"
    ran = 0
    while trials := queued_trials(client, created["id"]):
        counts = client.get(f"/v1/sweeps/{created['id']}").json()["counts"]
        assert counts["queued"] + counts["running"] <= 2
        job = client.get(f"/v1/jobs/{trials[0]['job_id']}").json()
        assert job["sweep_id"] == created["id"] and job["trial_number"] == trials[0]["number"]
        assert job["spec"]["training"]["learning_rate"] == trials[0]["params"]["training.learning_rate"]
        run_job(trials[0]["job_id"])
        ran += 1
    done = client.get(f"/v1/sweeps/{created['id']}").json()
    assert ran == 4 and done["status"] == "succeeded", done
    assert done["counts"]["succeeded"] == 4 and len(done["trials"]) == 4
    assert sorted(t["number"] for t in done["trials"]) == [0, 1, 2, 3]
    values = [t["value"] for t in done["trials"]]
    assert done["best"]["value"] == pytest.approx(min(values))
    assert all(len(t["curve"]) == 3 for t in done["trials"])
    assert len({t["params"]["training.learning_rate"] for t in done["trials"]}) == 4, "every trial a new draw"
    model = client.get(f"/v1/models/{body['name']}").json()
    assert model["id"] == done["model"]["id"] and model["version"] == 1
    assert client.get(f"/v1/jobs/{done['best']['job_id']}").json()["model"]["id"] == model["id"]
    assert done["importances"] is not None and set(done["importances"]) == set(body["space"])
    listed = client.get("/v1/sweeps", params={"status": "succeeded"}).json()["items"]
    assert any(s["id"] == created["id"] and s["counts"]["succeeded"] == 4 for s in listed)

    # The sweep's events, on the same stream as a job's: a finished sweep's replays them and ends.
    events = sweep_events(client, created["id"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["kind"] == "status" and events[0]["status"] == "running"
    trials = [e for e in events if e["kind"] == "trial"]
    assert sorted((e["number"], e["status"]) for e in trials) == sorted(
        [(n, "queued") for n in range(4)] + [(n, "succeeded") for n in range(4)])
    assert all("value" in e for e in trials if e["status"] == "succeeded")
    assert events[-1]["kind"] == "status" and events[-1]["status"] == "succeeded"
    assert events[-1]["model_id"] == model["id"] and events[-1]["best"]["number"] == done["best"]["number"]
    later = sweep_events(client, created["id"], headers={"Last-Event-ID": str(len(events) - 1)})
    assert [e["seq"] for e in later] == [len(events)]


def sweep_events(client, sweep_id, headers=None) -> list[dict]:
    r = client.get(f"/v1/sweeps/{sweep_id}/events", headers=headers or {})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    return [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]


def test_cancelling_a_sweep_cancels_its_queued_trials_and_starts_no_more(client):
    created = client.post("/v1/sweeps", json=sweep()).json()
    cancelled = client.post(f"/v1/sweeps/{created['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["counts"]["cancelled"] == 2
    assert len(cancelled["trials"]) == 2, "no trial after the cancel"
    assert cancelled["model"] is None and cancelled["finished_at"]
    events = sweep_events(client, created["id"])
    assert [(e["kind"], e.get("status")) for e in events][-3:] == [
        ("trial", "cancelled"), ("trial", "cancelled"), ("status", "cancelled")]
    assert_error(client.post(f"/v1/sweeps/{created['id']}/cancel"), 409, "nothing to cancel")
    assert_error(client.get("/v1/sweeps/3f2b6c1e-0000-4000-8000-000000000000"), 404, "no sweep")
    assert_error(client.get("/v1/sweeps/not-an-id"), 404)


def test_a_trial_that_ended_unseen_is_taken_up_by_the_next_pass(runtime, client):
    """A worker killed after its trial finished, before it advanced the sweep: the reconciler's pass tells
    Optuna, launches the next trial and, past the time budget, ends the sweep with the best so far."""
    created = client.post("/v1/sweeps", json=sweep(budget={"trials": 3, "parallel": 1, "timeout_seconds": 3600})).json()
    first = queued_trials(client, created["id"])[0]
    run_unseen(runtime, first["job_id"])
    unseen = client.get(f"/v1/sweeps/{created['id']}").json()
    assert unseen["counts"]["succeeded"] == 1 and len(unseen["trials"]) == 1, "nothing advanced it yet"

    Reconciler(runtime).advance_sweeps()
    advanced = client.get(f"/v1/sweeps/{created['id']}").json()
    assert len(advanced["trials"]) == 2 and advanced["counts"]["queued"] == 1
    # (a running sweep's stream stays open: its events are read from the table here)
    with runtime.session() as session:
        events = after(session, SweepEvent, uuid.UUID(created["id"]), 0)
    assert [data["status"] for _, kind, data, _ in events if kind == "trial"] == ["queued", "succeeded", "queued"]

    with runtime.session() as session:  # the time budget runs out: no more trials, the queued one still runs
        session.execute(update(Sweep).where(Sweep.id == uuid.UUID(created["id"]))
                        .values(created_at=utcnow() - timedelta(hours=2)))
    Reconciler(runtime).advance_sweeps()
    assert len(client.get(f"/v1/sweeps/{created['id']}").json()["trials"]) == 2
    run_unseen(runtime, queued_trials(client, created["id"])[0]["job_id"])
    Reconciler(runtime).advance_sweeps()
    done = client.get(f"/v1/sweeps/{created['id']}").json()
    assert done["status"] == "succeeded" and len(done["trials"]) == 2 and done["model"]["name"] == created["name"]


def test_a_grid_tries_each_point_once(client, run_job):
    body = sweep(sampler="grid", budget={"trials": 10, "parallel": 2},
                 space={"training.learning_rate": {"type": "categorical", "choices": [0.01, 0.1]},
                        "architecture.type": {"type": "categorical", "choices": ["logistic_regression"]}})
    created = client.post("/v1/sweeps", json=body).json()
    while trials := queued_trials(client, created["id"]):
        run_job(trials[0]["job_id"])
    done = client.get(f"/v1/sweeps/{created['id']}").json()
    assert done["status"] == "succeeded" and len(done["trials"]) == 2, "two points, two trials, budget or not"
    assert sorted(t["params"]["training.learning_rate"] for t in done["trials"]) == [0.01, 0.1]
