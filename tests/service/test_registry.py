"""The model registry: versions, aliases, references in /predict, and gated promotion."""

from __future__ import annotations

import time
import uuid

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.registry import service as registry
from tests.helpers import LOGREG_SPEC, assert_error, settings_with

DIGIT = [[0.0] * 8] * 8


def train(client, run_job, name: str, epochs: int = 5, lr: float = 0.05, promote: dict | None = None) -> dict:
    spec = {"dataset": "digits", "architecture": {"type": "logistic_regression"},
            "optimizer": {"type": "sgd", "momentum": 0.9}, "training": {"epochs": epochs, "learning_rate": lr},
            "name": name}
    if promote:
        spec["promote"] = promote
    job = client.post("/v1/jobs", json=spec).json()
    run_job(job["id"])
    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done["error"]
    return done


def answered_by(client, ref: str | None) -> int:
    body = {"instances": [DIGIT]} | ({"model": ref} if ref else {})
    r = client.post("/predict", json=body)
    assert r.status_code == 200, r.text
    return r.json()["model"]["version"]


@pytest.fixture
def name() -> str:
    return f"reg-{uuid.uuid4().hex[:8]}"


def test_aliases_move_and_predict_follows_at_once(client, run_job, name):
    for _ in range(2):
        train(client, run_job, name)
    r = client.put(f"/v1/models/{name}/aliases/production", json={"version": 1})
    assert r.status_code == 200 and r.json()["version"] == 1
    assert client.get(f"/v1/models/{name}@production").json()["version"] == 1
    assert client.get(f"/v1/models/{name}/versions/1").json()["aliases"] == ["production"]
    assert client.get(f"/v1/models/{name}").json()["version"] == 2, "a bare name is its newest version"
    assert answered_by(client, f"{name}@production") == 1
    assert answered_by(client, f"{name}@2") == 2

    client.put(f"/v1/models/{name}/aliases/production", json={"version": 2})
    assert answered_by(client, f"{name}@production") == 2, "a move in this process is seen by the next request"
    assert client.delete(f"/v1/models/{name}/aliases/production").status_code == 204
    assert_error(client.post("/predict", json={"instances": [DIGIT], "model": f"{name}@production"}), 404,
                 "has no alias 'production'")


def test_another_process_moving_an_alias_is_seen_within_the_cache_time(runtime, migrated, run_job, name):
    """One app trusts what an alias pointed at for 60 s, another for 0.3 s; the alias moves in the database,
    as another API replica would move it."""
    def app(ref_cache_seconds: float) -> TestClient:
        settings = settings_with(runtime, ref_cache_seconds=ref_cache_seconds, default_classifier=f"{name}@production")
        return TestClient(create_app(settings, reconcile=False, tune_process=False))

    with app(60.0) as trusting, app(0.3) as brief:
        for _ in range(2):
            train(trusting, run_job, name)
        trusting.put(f"/v1/models/{name}/aliases/production", json={"version": 1})
        assert answered_by(trusting, None) == answered_by(brief, None) == 1, "the default route is the alias"
        with runtime.session() as session:
            registry.set_alias(session, name, "production", 2)
        moved = time.monotonic()
        assert answered_by(trusting, None) == 1, "within the cache time the old target still answers"
        while answered_by(brief, None) != 2:  # seen once the cache time has passed
            assert time.monotonic() - moved < 10, "the move was not seen"
            time.sleep(0.05)


@pytest.mark.parametrize("method,path,body,status,fragment", [
    ("put", "/v1/models/{name}/aliases/Prod!", {"version": 1}, 422, "alias"),
    ("put", "/v1/models/{name}/aliases/7up", {"version": 1}, 422, "alias"),
    ("put", "/v1/models/{name}/aliases/production", {"version": 0}, 422, "version"),
    ("put", "/v1/models/{name}/aliases/production", {"version": 9}, 404, "has no version 9; its newest is 1"),
    ("put", "/v1/models/nobody/aliases/production", {"version": 1}, 404, "no model named 'nobody'"),
    ("delete", "/v1/models/{name}/aliases/staging", None, 404, "has no alias 'staging'"),
    ("get", "/v1/models/{name}/versions/5", None, 404, "has no version 5"),
    ("get", "/v1/models/{name}@canary", None, 404, "its aliases: none yet"),
])
def test_bad_registry_requests(client, run_job, name, method, path, body, status, fragment):
    train(client, run_job, name, epochs=1)
    kwargs = {"json": body} if body is not None else {}
    assert_error(getattr(client, method)(path.format(name=name), **kwargs), status, fragment)


@pytest.mark.slow
@pytest.mark.parametrize("migrated", ["sqlite"], indirect=True)  # training is the same on either database
def test_gated_promotion_moves_the_alias_only_for_a_better_model(client, run_job, name):
    gate = {"alias": "production", "metric": "test_accuracy", "min": 0.5}
    first = train(client, run_job, name, promote=gate)["result"]["promotion"]
    assert first["moved"] and "no version held the alias" in first["reason"]

    # weak but above chance (about 0.5): a chance-level one would not be registered at all
    worse = train(client, run_job, name, epochs=1, lr=0.01, promote={**gate, "min": 0.0})["result"]["promotion"]
    assert not worse["moved"] and "does not beat version 1" in worse["reason"]

    strict = train(client, run_job, name, promote={**gate, "min": 0.9999})["result"]["promotion"]
    assert not strict["moved"] and "below the bar of 0.9999" in strict["reason"]
    assert client.get(f"/v1/models/{name}@production").json()["version"] == 1

    better = train(client, run_job, name, epochs=20, promote={**gate, "min": 0.5})["result"]["promotion"]
    assert better["moved"] and better["previous_version"] == 1 and "beats version 1" in better["reason"]
    assert client.get(f"/v1/models/{name}@production").json()["version"] == 4


def test_a_bad_promotion_gate_is_refused_up_front(client):
    spec = {"dataset": "digits", "architecture": {"type": "logistic_regression"}, "optimizer": {"type": "sgd"}}
    assert_error(client.post("/v1/jobs", json={**spec, "promote": {"alias": "production", "metric": "loss"}}),
                 422, "'test_accuracy', 'test_macro_f1', 'test_rmse' or 'test_mae'")
    assert_error(client.post("/v1/jobs", json={**spec, "promote": {"alias": "production", "min": 2}}), 422, "min")


def test_a_gated_promotion_answers_its_verdict(client, run_job):
    def train(epochs: int) -> dict:
        spec = {**LOGREG_SPEC, "name": "gate-check",
                "training": {**LOGREG_SPEC["training"], "epochs": epochs, "learning_rate": 0.01}}  # 1 epoch: ~0.5
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        run_job(job_id)
        model_id = client.get(f"/v1/jobs/{job_id}").json()["model"]["id"]
        return client.get(f"/v1/models/{model_id}").json()

    weak, strong = train(1), train(15)
    assert strong["metrics"]["test_accuracy"] > weak["metrics"]["test_accuracy"]
    url = "/v1/models/gate-check/versions/{}/promote"
    moved = client.post(url.format(weak["version"]), json={"alias": "production"}).json()
    assert moved["moved"] and moved["previous_version"] is None and "no version held" in moved["reason"]
    better = client.post(url.format(strong["version"]), json={"alias": "production"}).json()
    assert better["moved"] and better["previous_version"] == weak["version"] and "beats" in better["reason"]
    worse = client.post(url.format(weak["version"]), json={"alias": "production"}).json()
    assert not worse["moved"] and "does not beat" in worse["reason"]
    assert client.get("/v1/models/gate-check@production").json()["version"] == strong["version"]
    high = client.post(url.format(strong["version"]), json={"alias": "best", "min": 0.999}).json()
    assert not high["moved"] and "below the bar" in high["reason"]
    assert client.post(url.format(99), json={"alias": "production"}).status_code == 404
    refused = client.post(url.format(strong["version"]), json={"alias": "Production!"})
    assert refused.status_code == 422
