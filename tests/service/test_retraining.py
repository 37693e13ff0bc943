"""The closed loop in one API process on real MNIST digits: a classifier trained on 500 digits answers live
traffic; feedback with the true labels puts its live accuracy under the policy's bound; the reconciler's
pass starts one retraining job (two passes at once start one), on the newest version of the dataset (all
5,000 digits); the better version passes the gate, rolls out through canary steps on live traffic and takes
the alias. Each step is an event of the policy and an audit entry. The reconciler's pass is run by hand."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.platform.tables import TrainingJob
from service.retraining import service as retraining
from service.rollouts import background
from tests import datafiles
from tests.conftest import own_runtime, run_in_worker
from tests.helpers import assert_error

pytestmark = pytest.mark.slow  # trains two classifiers on MNIST digits (seconds)

NAME = "retrained-mnist"
FAST_ROLLOUT = {"steps": [{"weight": 50, "min_seconds": 0, "min_requests": 20},
                          {"weight": 100, "min_seconds": 0, "min_requests": 20}],
                "gates": {"min_requests": 20, "min_agreement": None, "latency_slack_ms": 60_000}}


def upload(api, x: np.ndarray, y: np.ndarray) -> None:
    data = datafiles.npz(x.astype(np.uint8)[:, 0], y.astype(np.uint8))
    r = api.post("/v1/datasets", data={"name": "digits-stream"}, files=[("file", ("d.npz", data))])
    assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def api(databases, tmp_path_factory):
    from models.datasets import load_builtin

    runtime = own_runtime(databases, tmp_path_factory.mktemp("retraining"), rollout_seconds=3600,
                          prediction_log_share=1.0)
    digits = load_builtin("mnist-5k")
    order = np.random.default_rng(0).permutation(len(digits.y))  # the file is sorted by label
    x, y = digits.x.numpy()[order], digits.y.numpy()[order]
    with TestClient(create_app(runtime=runtime, reconcile=False, tune_process=False)) as client:
        upload(client, x[:500], y[:500])  # the first data: 500 digits
        job = client.post("/v1/jobs", json={"dataset": "digits-stream", "name": NAME, "architecture": {
            "type": "logistic_regression"}, "optimizer": {"type": "adam"}, "training": {
            "epochs": 3, "batch_size": 64, "learning_rate": 0.003, "seed": 0}}).json()
        run_in_worker(runtime, job["id"])
        assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"
        client.put(f"/v1/models/{NAME}/aliases/production", json={"version": 1}).raise_for_status()
        client.runtime, client.digits = runtime, (x, y)
        client.once = lambda: background.once(client.app.state.rollouts, runtime,
                                              predictions=client.app.state.prediction_log)
        yield client
    runtime.close()


def test_a_policy_is_refused_with_the_field_that_is_wrong(api):
    assert_error(api.put(f"/v1/models/{NAME}/retraining", json={"triggers": {}}), 422, "at least one of")
    assert_error(api.put("/v1/models/no-such-model/retraining", json={"triggers": {"drift": True}}), 404,
                 "no model named")
    assert_error(api.put(f"/v1/models/{NAME}/retraining", json={"triggers": {"drift": True},
                                                               "dataset": "no-such-data"}), 422, "no-such-data")
    assert_error(api.put(f"/v1/models/{NAME}/retraining", json={"triggers": {"drift": True},
                                                               "gate": {"metric": "test_rmse"}}), 422, "forecasters")
    assert_error(api.put(f"/v1/models/{NAME}/retraining", json={"triggers": {"min_live_accuracy": 1.5}}), 422,
                 "min_live_accuracy")
    assert_error(api.put(f"/v1/models/{NAME}/retraining", json={"triggers": {"drift": True}, "rollout": {
        "steps": [{"weight": 60}, {"weight": 30}]}}), 422, "rise step by step")
    assert_error(api.get(f"/v1/models/{NAME}/retraining"), 404, "has no retraining policy")


def test_falling_live_accuracy_retrains_on_the_newest_data_and_rolls_the_better_version_out(api):
    x, y = api.digits
    policy = api.put(f"/v1/models/{NAME}/retraining", json={
        "triggers": {"min_live_accuracy": 0.95, "min_labels": 300}, "cooldown_hours": 1, "rollout": FAST_ROLLOUT})
    assert policy.status_code == 200, policy.text
    assert retraining.advance_all(api.runtime) == {}, "no labels yet: nothing triggers"

    upload(api, x, y)  # new data arrives: all 5,000 digits, as version 2 of the dataset
    feedback = []
    for start in range(4000, 4400, 10):  # digits that neither version trains on
        r = api.post("/predict", json={"instances": x[start:start + 10].reshape(10, -1).tolist(),
                                       "model": f"{NAME}@production"})
        feedback.append({"request_id": r.headers["x-request-id"], "labels": y[start:start + 10].tolist()})
    api.once()
    assert api.post("/v1/feedback", json={"items": feedback}).json()["refused"] == 0
    live = api.get(f"/v1/models/{NAME}/versions/1/monitoring", params={"window": "1h"}).json()
    assert live["labels"] == 400 and live["accuracy"] < 0.95, live["accuracy"]

    results = []  # two replicas' passes at the same moment: one job
    passes = [threading.Thread(target=lambda: results.append(retraining.advance_all(api.runtime))) for _ in range(2)]
    for t in passes:
        t.start()
    for t in passes:
        t.join()
    assert sorted(len(r) for r in results) == [0, 1], results
    assert retraining.advance_all(api.runtime) == {}, "the job runs: nothing more starts"
    state = api.get(f"/v1/models/{NAME}/retraining").json()
    with api.runtime.session() as session:
        jobs = session.query(TrainingJob).filter(TrainingJob.spec["name"].as_string() == NAME).all()
        assert len(jobs) == 2 and str(state["job_id"]) in {str(j.id) for j in jobs}
        retrain = session.get(TrainingJob, jobs[-1].id if str(jobs[-1].id) == state["job_id"] else jobs[0].id)
        assert retrain.dataset.version == 2, "the newest version of the dataset"
    assert "live accuracy" in state["last_reason"] and "below 0.95" in state["last_reason"]

    run_in_worker(api.runtime, state["job_id"])
    assert list(retraining.advance_all(api.runtime).values()) == ["finished"]
    state = api.get(f"/v1/models/{NAME}/retraining").json()
    gate, rollout_event = state["history"][-2:]
    assert gate["kind"] == "gate" and gate["passed"] and "beats version 1" in gate["reason"], gate
    assert rollout_event["kind"] == "rollout" and rollout_event["started"], rollout_event
    rollout_id = state["rollout_id"]

    api.once()  # the routes read: the candidate serves its share
    for _ in range(6):
        if api.get(f"/v1/models/{NAME}/rollouts/{rollout_id}").json()["status"] != "running":
            break
        for start in range(0, 300, 3):
            api.post("/predict", json={"instances": x[start:start + 3].reshape(3, -1).tolist(),
                                       "model": f"{NAME}@production"}).raise_for_status()
        api.once()
    done = api.get(f"/v1/models/{NAME}/rollouts/{rollout_id}").json()
    assert done["status"] == "succeeded", done["reason"]
    assert api.get(f"/v1/models/{NAME}@production").json()["version"] == 2

    kinds = [e["kind"] for e in api.get(f"/v1/models/{NAME}/retraining").json()["history"]]
    assert kinds == ["policy", "job", "gate", "rollout"], kinds
    actions = [a["action"] for a in api.get("/v1/audit", params={"limit": 100}).json()["items"]
               if a["target"].startswith(NAME)]
    for action in ("retraining.set", "retraining.start", "retraining.gate", "retraining.rollout", "rollout.promote"):
        assert action in actions, (action, actions)
    assert retraining.advance_all(api.runtime) == {}, "within the cool-down nothing starts again"
