"""Rollouts in one API process: the API's refusals, routing by weight and routing key, the gates' verdicts
(a disagreeing candidate rolled back, a good one promoted), shadow traffic, the operator's commands, and a
forecaster over /forecast and v2. The background pass is run by hand (``once``), so every verdict is the
test's own step; tests/workers/test_rollouts_live.py runs it in real replicas."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.platform.runtime import Runtime
from service.rollouts import background
from tests import datafiles
from tests.conftest import own_runtime
from tests.helpers import assert_error, solar_forecaster

pytestmark = pytest.mark.slow  # trains six small models (about 15 s in all)

NAME = "roll-digits"
X, Y = datafiles.digits()
INSTANCES = (X.reshape(len(X), -1).astype(float)).tolist()


class Api:
    def __init__(self, client: TestClient, runtime: Runtime) -> None:
        self.client, self.runtime = client, runtime
        self.router = client.app.state.rollouts

    def once(self) -> None:
        """The background pass of every replica: flush the counts, judge, read the routes."""
        self.router.drain()
        background.once(self.router, self.runtime)

    def train(self, dataset: str, epochs: int, name: str = NAME) -> int:
        from tests.conftest import run_in_worker

        spec = {"dataset": dataset, "name": name, "architecture": {"type": "logistic_regression"},
                "optimizer": {"type": "sgd", "momentum": 0.9},
                "training": {"epochs": epochs, "learning_rate": 0.05, "seed": 0}}
        job = self.client.post("/v1/jobs", json=spec).json()
        run_in_worker(self.runtime, job["id"])
        done = self.client.get(f"/v1/jobs/{job['id']}").json()
        assert done["status"] == "succeeded", done["error"]
        return done["model"]["version"]

    def predict(self, i: int = 0, ref: str = f"{NAME}@production", key: str | None = None):
        r = self.client.post("/predict", json={"instances": [INSTANCES[i % len(INSTANCES)]], "model": ref},
                             headers={"X-Routing-Key": key} if key else {})
        assert r.status_code == 200, r.text
        return r

    def versions(self, n: int, **kwargs) -> list[int]:
        return [self.predict(i, **kwargs).json()["model"]["version"] for i in range(n)]

    def start(self, candidate, **body):
        return self.client.post(f"/v1/models/{NAME}/rollouts", json={"candidate": candidate, **body})

    def get(self, rollout_id: str) -> dict:
        return self.client.get(f"/v1/models/{NAME}/rollouts/{rollout_id}").json()

    def command(self, rollout_id: str, action: str):
        return self.client.post(f"/v1/models/{NAME}/rollouts/{rollout_id}/{action}")


@pytest.fixture(scope="module")
def api(databases, tmp_path_factory):
    """An API on a SQLite database of its own with three versions of one classifier: v1 at production, v2
    trained longer on the same digits (it agrees with v1), v3 trained on labels shifted by one (it disagrees
    with v1 on nearly every digit)."""
    runtime = own_runtime(databases, tmp_path_factory.mktemp("rollouts"), ref_cache_seconds=0, rollout_seconds=3600)
    with TestClient(create_app(runtime=runtime, reconcile=False, tune_process=False)) as client:
        api = Api(client, runtime)
        for name, labels in (("roll-true", Y), ("roll-shifted", (Y + 1) % 10)):
            r = client.post("/v1/datasets", data={"name": name}, files=[("file", ("d.npz", datafiles.npz(X, labels)))])
            assert r.status_code == 201, r.text
        assert [api.train("roll-true", 6), api.train("roll-true", 12), api.train("roll-shifted", 12)] == [1, 2, 3]
        assert client.put(f"/v1/models/{NAME}/aliases/production", json={"version": 1}).status_code == 200
        yield api
    runtime.close()


def fast(*weights: float, min_requests: int = 0) -> list[dict]:
    return [{"weight": w, "min_seconds": 0, "min_requests": min_requests} for w in weights]


def test_what_cannot_roll_out_is_refused_with_the_field_named(api):
    client = api.client
    assert_error(client.post("/v1/models/no-such-model/rollouts", json={"candidate": 2}), 404, "no model named")
    assert_error(api.start("other-model@2"), 422, "must be a version of roll-digits")
    assert_error(api.start(9), 422, "has no version 9")
    assert_error(api.start(1), 422, "already points at version 1")
    assert_error(api.start(2, alias="staging"), 422, "roll-digits@staging does not exist")
    assert_error(api.start(2, mode="blue-green"), 422, "mode")
    assert_error(api.start(2, steps=fast(10, 50)), 422, "must rise step by step and end at 100")
    assert_error(api.start(2, steps=fast(50, 20, 100)), 422, "must rise step by step")
    assert_error(api.start(2, compare_share=0), 422, "compare_share is 0")
    assert_error(api.start(2, gates={"max_error_rate": 2}), 422, "max_error_rate")
    first = api.start(2, steps=fast(10, 100), gates={"min_requests": 10**6})
    assert first.status_code == 201, first.text
    assert first.headers["location"] == f"/v1/models/{NAME}/rollouts/{first.json()['id']}"
    assert_error(api.start(3), 409, "already holds roll-digits@production")
    assert_error(client.put(f"/v1/models/{NAME}/aliases/production", json={"version": 3}), 409, "holds roll-digits@production")
    assert_error(client.delete(f"/v1/models/{NAME}/aliases/production"), 409, "abort it first")
    assert api.command(first.json()["id"], "abort").json()["status"] == "rolled_back"
    assert_error(api.command(first.json()["id"], "pause"), 409, "is rolled_back")


def binomial_ok(hits: int, n: int, p: float) -> bool:
    """Within five standard deviations of n*p: a false alarm about once in three million runs."""
    return abs(hits - n * p) <= 5 * math.sqrt(n * p * (1 - p))


def test_a_canary_splits_by_weight_and_a_routing_key_stays_on_one_version(api):
    rollout = api.start(2, steps=fast(30, 100), gates={"min_requests": 10**6}).json()
    api.once()
    served = api.versions(400)
    assert set(served) == {1, 2} and binomial_ok(served.count(2), 400, 0.3), served.count(2)
    for key in ("alice", "bob", "carol"):
        assert len(set(api.versions(15, key=key))) == 1, f"{key} met two versions"
    keyed = [api.predict(key=f"user-{k}").json()["model"]["version"] for k in range(300)]
    assert binomial_ok(keyed.count(2), 300, 0.3), keyed.count(2)
    assert set(api.versions(20, ref=f"{NAME}@1")) == {1}, "a request naming a version is never routed"
    assert set(api.versions(20, ref=NAME)) == {3}, "nor one naming the newest"

    api.once()
    live = api.get(rollout["id"])
    assert live["status"] == "running" and live["step"] == 0 and live["weight"] == 30
    counted = live["live"]["stable"]["requests"] + live["live"]["candidate"]["requests"]
    assert counted == 400 + 45 + 300, "every routed request is counted once, none of the others"
    assert live["live"]["candidate"]["p99_ms"] > 0 and live["live"]["candidate"]["errors"] == 0
    assert all(c["passed"] is None for c in live["checks"]), "no verdict before the gates' min_requests"

    assert api.command(rollout["id"], "abort").json()["reason"].startswith("aborted by")
    api.once()
    assert set(api.versions(50)) == {1}, "after an abort the stable version serves everything"


def test_a_disagreeing_candidate_is_rolled_back_in_its_first_step(api):
    rollout = api.start(3, steps=fast(20, 100, min_requests=10), compare_share=50,
                        gates={"min_requests": 20, "min_compared": 40, "latency_slack_ms": 60_000}).json()
    api.once()
    for i in range(300):
        api.predict(i)  # every answer a 200, whichever version served it
    api.once()
    ended = api.get(rollout["id"])
    assert ended["status"] == "rolled_back" and ended["step"] == 0
    assert "agreement" in ended["reason"] and "below the bar 0.9" in ended["reason"], ended["reason"]
    assert api.client.get(f"/v1/models/{NAME}@production").json()["version"] == 1, "the alias never moved"
    assert set(api.versions(30)) == {1}

    events = api.client.get(f"/v1/models/{NAME}/rollouts/{rollout['id']}/events").text
    assert "event: verdict" in events and '"verdict":"fail"' in events and '"status":"rolled_back"' in events
    audit = api.client.get("/v1/audit", params={"action": "rollout.rollback"}).json()["items"]
    mine = [a for a in audit if a["after"]["rollout_id"] == rollout["id"]]
    assert mine and "agreement" in mine[0]["after"]["reason"] and mine[0]["after"]["version"] == 1


def test_a_good_candidate_passes_every_step_and_takes_the_alias(api):
    rollout = api.start(2, steps=fast(40, 100, min_requests=20), compare_share=100,
                        gates={"min_requests": 20, "min_compared": 20, "latency_slack_ms": 1000}).json()
    api.once()
    weights = []
    for _ in range(6):
        state = api.get(rollout["id"])
        if state["status"] != "running":
            break
        weights.append(state["weight"])
        for i in range(120):
            api.predict(i)
        api.once()
    done = api.get(rollout["id"])
    assert done["status"] == "succeeded", json.dumps({k: done[k] for k in ("step", "live", "checks", "reason")}, indent=1)
    assert weights[:2] == [40, 100] and done["reason"] == "every gate passed at all 2 steps"
    assert api.client.get(f"/v1/models/{NAME}@production").json()["version"] == 2
    assert set(api.versions(30)) == {2}
    # and back to v1 for the tests after (an alias moves freely again once the rollout has ended)
    assert api.client.put(f"/v1/models/{NAME}/aliases/production", json={"version": 1}).status_code == 200


def test_shadow_traffic_answers_with_the_stable_version_byte_for_byte(api):
    rollout = api.start(3, mode="shadow", gates={"min_requests": 10**6}).json()
    assert rollout["steps"] == [{"weight": 100.0, "min_seconds": 60.0, "min_requests": 200}]
    api.once()
    for i in range(40):
        routed, pinned = api.predict(i).content, api.predict(i, ref=f"{NAME}@1").content
        assert routed == pinned
    api.once()
    live = api.get(rollout["id"])
    assert live["live"]["candidate"]["compared"] == 40 and live["live"]["candidate"]["requests"] == 40
    agreement = next(c for c in live["checks"] if c["gate"] == "agreement")
    assert agreement["value"] < 0.5, "the shifted-label candidate's disagreement is measured"
    api.command(rollout["id"], "abort")


def test_pause_resume_and_promote(api):
    rollout = api.start(2, steps=fast(50, 100), compare_share=100, gates={"min_requests": 5, "min_compared": 5,
                                                                          "latency_slack_ms": 1000}).json()
    assert api.command(rollout["id"], "pause").json()["status"] == "paused"
    assert_error(api.command(rollout["id"], "pause"), 409, "is paused")
    api.once()
    served = api.versions(100)
    assert 2 in served, "a paused rollout keeps its split"
    api.once()
    assert api.get(rollout["id"])["step"] == 0, "... and is not judged"
    assert api.command(rollout["id"], "resume").json()["status"] == "running"
    promoted = api.command(rollout["id"], "promote").json()
    assert promoted["status"] == "succeeded" and promoted["reason"].startswith("promoted by")
    api.once()
    assert set(api.versions(20)) == {2}
    api.client.put(f"/v1/models/{NAME}/aliases/production", json={"version": 1})
    listed = api.client.get("/v1/rollouts", params={"status": "succeeded"}).json()
    assert rollout["id"] in [r["id"] for r in listed["items"]]


def test_v2_over_http_follows_the_rollout(api):
    rollout = api.start(2, steps=fast(100), gates={"min_requests": 10**6}).json()
    api.once()
    body = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64], "data": INSTANCES[0]}]}
    routed = api.client.post(f"/v2/models/{NAME}@production/infer", json=body).json()
    pinned = api.client.post(f"/v2/models/{NAME}/versions/1/infer", json=body).json()
    assert routed["model_version"] == "2" and pinned["model_version"] == "1"
    api.command(rollout["id"], "abort")


def test_a_forecaster_rolls_out_over_forecast_and_v2(api):
    name = "roll-solar"
    for epochs in (2, 3):
        spec = {**solar_forecaster(name, horizon=2), "training": {"epochs": epochs, "batch_size": 64,
                                                                  "learning_rate": 0.003, "seed": 0}}
        job = api.client.post("/v1/jobs", json=spec).json()
        from tests.conftest import run_in_worker

        run_in_worker(api.runtime, job["id"])
    api.client.put(f"/v1/models/{name}/aliases/production", json={"version": 1})
    r = api.client.post(f"/v1/models/{name}/rollouts", json={"candidate": 2, "mode": "shadow", "gates": {
        "min_agreement": 0.5}})
    assert_error(r, 422, "a forecaster's gate is max_difference")
    rollout = api.client.post(f"/v1/models/{name}/rollouts", json={
        "candidate": 2, "steps": fast(100), "compare_share": 100, "gates": {"min_requests": 10**6}}).json()
    api.once()
    stamps = [f"2016-06-01T{h:02d}:{m:02d}:00" for h in range(8, 14) for m in (0, 30)]
    readings = {"model": f"{name}@production", "timestamps": stamps,
                "values": {"solar.current": [float(v) for v in range(len(stamps))]}}
    answer = api.client.post("/forecast", json=readings)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"]["version"] == 2
    window = np.arange(8, dtype=np.float32).reshape(1, 8, 1)
    seconds = (np.datetime64("2016-06-01T08:00") + np.arange(8) * np.timedelta64(30, "m")).astype("datetime64[s]")
    v2 = api.client.post(f"/v2/models/{name}@production/infer", json={"inputs": [
        {"name": "readings", "datatype": "FP32", "shape": [1, 8, 1], "data": window.ravel().tolist()},
        {"name": "timestamps", "datatype": "INT64", "shape": [1, 8], "data": seconds.astype(np.int64).tolist()}]})
    assert v2.status_code == 200 and v2.json()["model_version"] == "2", v2.text
    api.once()
    live = api.client.get(f"/v1/models/{name}/rollouts/{rollout['id']}").json()
    assert live["live"]["candidate"]["requests"] == 2 and live["live"]["candidate"]["compared"] == 2
    difference = next(c for c in live["checks"] if c["gate"] == "difference")
    assert difference["value"] is not None and difference["value"] >= 0
