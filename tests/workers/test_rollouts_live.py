"""Rollouts and prediction logs across real API replicas on PostgreSQL, Redis and Azure Blob storage
(Azurite): the canary's split over both replicas and over gRPC, a routing key that meets one version on every
replica, the replicas' counts summed in the database, a disagreeing candidate rolled back by whichever
replica judges first, and a good one promoted step by step through a replica's restart; both replicas'
prediction logs read back from the blob container with pandas. The CLI drives a rollout against the live
server."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families

from tests import datafiles
from tests.helpers import REDIS_URL, free_port, new_postgres_database, unique
from tests.stack import Stack

pytestmark = [pytest.mark.slow, pytest.mark.realstack]

NAME = "live-digits"
X, Y = datafiles.digits()
INSTANCES = X.reshape(len(X), -1).astype(float).tolist()


@pytest.fixture(scope="module")
def live(tmp_path_factory, azurite_connection_string):
    """Two API replicas (A with gRPC) and a worker on a PostgreSQL database of their own and Redis, with v1
    of a digit classifier at production, v2 trained longer on the same digits, v3 on labels shifted by one."""
    home = tmp_path_factory.mktemp("rollouts-live")
    grpc_port = free_port()
    with new_postgres_database() as database_url:
        env = {"TRAINSERVE_HOME": str(home), "TRAINSERVE_DATABASE_URL": database_url,
               "TRAINSERVE_BROKER_URL": REDIS_URL, "TRAINSERVE_QUEUE": unique("rollouts"),
               "TRAINSERVE_ROLLOUT_SECONDS": "0.5", "TRAINSERVE_REF_CACHE_SECONDS": "1",
               "TRAINSERVE_RECONCILE_SECONDS": "1",
               "TRAINSERVE_GRPC_PORT": str(grpc_port), "TRAINSERVE_ARTIFACTS_URL": f"azure://{unique('live')}",
               "TRAINSERVE_AZURE_STORAGE_CONNECTION_STRING": azurite_connection_string}
        with Stack.start(env) as stack:
            a = stack.http
            for name, labels in (("live-true", Y), ("live-shifted", (Y + 1) % 10)):
                a.post("/v1/datasets", data={"name": name},
                       files=[("file", ("d.npz", datafiles.npz(X, labels)))]).raise_for_status()
            for dataset, epochs in (("live-true", 6), ("live-true", 12), ("live-shifted", 12)):
                job = a.post("/v1/jobs", json={"dataset": dataset, "name": NAME, "architecture": {
                    "type": "logistic_regression"}, "optimizer": {"type": "sgd", "momentum": 0.9}, "training": {
                    "epochs": epochs, "learning_rate": 0.05, "seed": 0}}).json()
                assert stack.wait_for(job["id"])["status"] == "succeeded"
            a.put(f"/v1/models/{NAME}/aliases/production", json={"version": 1}).raise_for_status()
            b = stack.another_api(TRAINSERVE_GRPC_PORT=str(free_port()))
            stack.replicas = [a, b]
            stack.grpc = f"127.0.0.1:{grpc_port}"
            stack.store_env = env
            yield stack


def predict(client: httpx.Client, i: int, key: str | None = None, ref: str = f"{NAME}@production") -> int:
    r = client.post("/predict", json={"instances": [INSTANCES[i % len(INSTANCES)]], "model": ref},
                    headers={"X-Routing-Key": key} if key else {})
    assert r.status_code == 200, r.text
    return r.json()["model"]["version"]


def spread(stack: Stack, n: int, **kwargs) -> list[int]:
    """``n`` requests, half to each replica, four at a time."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda i: predict(stack.replicas[i % 2], i, **kwargs), range(n)))


def rollout(stack: Stack, rollout_id: str) -> dict:
    return stack.http.get(f"/v1/models/{NAME}/rollouts/{rollout_id}").json()


def routed_everywhere(stack: Stack, versions: set[int]) -> None:
    """Until both replicas' background passes have read the routes: each answers with ``versions``."""
    stack.wait_until(lambda: all(set(predict(r, i) for i in range(40)) == versions for r in stack.replicas) or None,
                     f"both replicas to serve versions {versions}", timeout=30)


def rollout_requests(client: httpx.Client, version: str) -> float:
    """The routed requests one replica served with a version (its /metrics)."""
    return sum(sample.value for family in text_string_to_metric_families(client.get("/metrics").text)
               for sample in family.samples if sample.name == "trainserve_rollout_requests_total"
               and sample.labels["model"] == NAME and sample.labels["version"] == version)


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", *args, "--url", stack.base_url], env=stack.env,
                          capture_output=True, text=True, timeout=120)


def test_a_ten_percent_canary_splits_over_both_replicas_and_grpc(live):
    started = cli(live, "rollout", "start", NAME, "2", "--steps", "10,100", "--step-seconds", "3600",
                  "--gate", "min_requests=1000000", "--json")
    assert started.returncode == 0, started.stderr
    rollout_id = json.loads(started.stdout)["id"]
    routed_everywhere(live, {1, 2})

    served = spread(live, 4000)
    share = served.count(2) / len(served)
    assert abs(served.count(2) - 400) <= 5 * math.sqrt(4000 * 0.1 * 0.9), f"the candidate served {share:.3f}"
    for key in ("alice", "bob", "carol", "dave"):  # one version for a key, on either replica
        assert len(set(spread(live, 20, key=key))) == 1, f"{key} met two versions"
    assert set(spread(live, 40, ref=f"{NAME}@1")) == {1}

    grpc = grpcclient.InferenceServerClient(live.grpc)
    pixels = grpcclient.InferInput("pixels", [1, 64], "FP32")
    pixels.set_data_from_numpy(np.asarray(INSTANCES[:1], dtype=np.float32))
    over_grpc = [grpc.infer(f"{NAME}@production", [pixels]).get_response().model_version for _ in range(300)]
    assert abs(over_grpc.count("2") - 30) <= 5 * math.sqrt(300 * 0.1 * 0.9), over_grpc.count("2")
    keyed = {grpc.infer(f"{NAME}@production", [pixels], headers={"x-routing-key": "alice"})
             .get_response().model_version for _ in range(10)}
    assert keyed == {str(spread(live, 1, key="alice")[0])}, "a key meets the same version over gRPC"

    # Both replicas' counts reach the database: what each replica counted (its /metrics), once.
    def all_counted():
        now = rollout(live, rollout_id)["live"]
        in_database = (now["stable"]["requests"], now["candidate"]["requests"])
        in_replicas = (sum(rollout_requests(r, "1") for r in live.replicas),
                       sum(rollout_requests(r, "2") for r in live.replicas))
        return in_database if in_database == in_replicas else None

    stable, candidate = live.wait_until(all_counted, "the replicas' counts in the database", timeout=30)
    assert stable + candidate >= 4000 + 80 + 300 + 10 + 1, "every request above was routed and counted"
    assert rollout_requests(live.replicas[0], "2") > 0 and rollout_requests(live.replicas[1], "2") > 0

    status = cli(live, "rollout", "status", NAME)
    assert status.returncode == 0 and "step 1 of 2 at 10 %" in status.stdout, status.stdout + status.stderr
    aborted = cli(live, "rollout", "abort", NAME)
    assert aborted.returncode == 1 and "aborted by" in aborted.stdout, aborted.stdout + aborted.stderr
    routed_everywhere(live, {1})


def test_a_disagreeing_candidate_is_rolled_back_while_predict_answers_throughout(live):
    body = {"candidate": 3, "compare_share": 50, "steps": [{"weight": 20, "min_seconds": 0, "min_requests": 10},
                                                           {"weight": 100, "min_seconds": 0}],
            "gates": {"min_requests": 20, "min_compared": 40, "latency_slack_ms": 60_000}}
    rollout_id = live.http.post(f"/v1/models/{NAME}/rollouts", json=body).json()["id"]

    def ended():
        spread(live, 40)  # every answer a 200 (predict asserts it), whichever version served it
        state = rollout(live, rollout_id)
        return state if state["status"] != "running" else None

    state = live.wait_until(ended, "the gates' verdict", timeout=90)
    assert state["status"] == "rolled_back" and state["step"] == 0, state
    assert "agreement" in state["reason"] and "below the bar 0.9" in state["reason"]
    assert live.http.get(f"/v1/models/{NAME}@production").json()["version"] == 1
    routed_everywhere(live, {1})
    events = live.http.get(f"/v1/models/{NAME}/rollouts/{rollout_id}/events").text
    verdicts = [json.loads(line[5:]) for line in events.splitlines() if line.startswith("data:")
                and '"verdict"' in line]
    assert [v["verdict"] for v in verdicts] == ["fail"], "one replica decided, once"
    agreement = next(g for g in verdicts[0]["gates"] if g["gate"] == "agreement")
    assert agreement["value"] < 0.9 and agreement["bound"] == 0.9
    audit = live.http.get("/v1/audit", params={"action": "rollout.rollback"}).json()["items"]
    assert any(a["after"]["rollout_id"] == rollout_id and "agreement" in a["after"]["reason"] for a in audit)


def test_a_good_candidate_is_promoted_step_by_step_through_a_replica_restart(live):
    body = {"candidate": 2, "compare_share": 50,
            "steps": [{"weight": w, "min_seconds": 1, "min_requests": 30} for w in (25, 50, 100)],
            "gates": {"min_requests": 20, "min_compared": 20, "latency_slack_ms": 1000}}
    rollout_id = live.http.post(f"/v1/models/{NAME}/rollouts", json=body).json()["id"]
    live.wait_until(lambda: spread(live, 40) and rollout(live, rollout_id)["step"] >= 1 or None, "step 2",
                    timeout=90)
    step = rollout(live, rollout_id)["step"]
    replica = next(p for p, c in zip(reversed(live.processes), reversed(live.commands)) if c == "api")
    replica.terminate()
    replica.wait(timeout=30)
    live.replicas[1] = live.another_api(TRAINSERVE_GRPC_PORT=str(free_port()))
    assert rollout(live, rollout_id)["step"] >= step, "a restart never sends the rollout back a step"

    def ended():
        spread(live, 40)
        state = rollout(live, rollout_id)
        return state if state["status"] != "running" else None

    state = live.wait_until(ended, "the last step's verdict", timeout=120)
    assert state["status"] == "succeeded", state
    assert live.http.get(f"/v1/models/{NAME}@production").json()["version"] == 2
    events = live.http.get(f"/v1/models/{NAME}/rollouts/{rollout_id}/events").text
    steps = [json.loads(line[5:])["step"] for line in events.splitlines() if line.startswith("data:")
             and '"kind":"step"' in line]
    assert steps == [0, 1, 2], "each step begun once, in order"
    routed_everywhere(live, {2})


def test_both_replicas_prediction_logs_read_back_from_blob_storage(live):
    """Every request of a model logged (its share set to 1), half to each replica: the Parquet files in the
    blob container hold each request once, from two writers, with the inputs that were sent."""
    import io

    import pandas as pd

    from service.platform.artifacts import open_store

    live.http.put(f"/v1/models/{NAME}/monitoring", json={"log_share": 1.0}).raise_for_status()
    store = open_store(live.store_env["TRAINSERVE_ARTIFACTS_URL"],
                       live.store_env["TRAINSERVE_AZURE_STORAGE_CONNECTION_STRING"])
    before = set(store.keys("prediction-logs"))

    probes: list[tuple[int, str]] = []  # (replica, request id) sent while waiting for both to log

    def logging_everywhere():  # both replicas have read the share: a request of each was logged and written
        for k, replica in enumerate(live.replicas):
            r = replica.post("/predict", json={"instances": [INSTANCES[0]], "model": f"{NAME}@1"})
            probes.append((k, r.headers["x-request-id"]))
        answer = live.http.post("/v1/feedback", json={"items": [{"request_id": i, "label": 0} for _, i in probes]})
        logged = {k for (k, _), item in zip(probes, answer.json()["items"]) if item["accepted"]}
        return logged if logged == {0, 1} else None

    live.wait_until(logging_everywhere, "both replicas to log every request", timeout=30)
    sent = {}
    for i in range(200):
        r = live.replicas[i % 2].post("/predict", json={"instances": [INSTANCES[i]], "model": f"{NAME}@1"})
        sent[r.headers["x-request-id"]] = INSTANCES[i]

    def written():
        keys = sorted(set(store.keys("prediction-logs")) - before)
        frame = pd.concat([pd.read_parquet(io.BytesIO(store.get(k))) for k in keys]) if keys else None
        return (keys, frame) if frame is not None and set(sent) <= set(frame["request_id"]) else None

    keys, frame = live.wait_until(written, "both replicas' prediction logs in the container", timeout=30)
    mine = frame[frame["request_id"].isin(sent)]
    assert len(mine) == 200 and mine["request_id"].is_unique, "each request once"
    assert len({k.rsplit("/", 1)[1].rsplit("-", 2)[0] for k in keys}) == 2, "two writers, files of their own"
    assert all(k.startswith(f"prediction-logs/model={NAME}/date=") for k in keys)
    for _, row in mine.sample(20, random_state=0).iterrows():
        np.testing.assert_allclose(row["inputs"], sent[row["request_id"]], rtol=1e-6)
    live.http.put(f"/v1/models/{NAME}/monitoring", json={"log_share": None}).raise_for_status()


def test_the_closed_loop_retrains_once_across_replicas_and_rolls_the_better_version_out(live):
    """A version trained on 200 digits answers both replicas; feedback with the true labels puts its live
    accuracy under the policy's bound; both replicas' reconcilers see it, one retraining job starts, on the
    newest version of the dataset (every digit); the worker trains it, it passes the gate, and its canary
    rollout over both replicas moves the alias."""
    name, http = "live-retrained", live.http
    order = np.random.default_rng(0).permutation(len(Y))  # the digits in a mixed order of labels

    def upload(part) -> None:
        http.post("/v1/datasets", data={"name": "live-stream"},
                  files=[("file", ("d.npz", datafiles.npz(X[part], Y[part])))]).raise_for_status()

    upload(order[:200])  # the first data
    job = http.post("/v1/jobs", json={"dataset": "live-stream", "name": name, "architecture": {
        "type": "logistic_regression"}, "optimizer": {"type": "sgd", "momentum": 0.9}, "training": {
        "epochs": 3, "learning_rate": 0.05, "seed": 0}}).json()  # the same spec learns more from more data
    first = live.wait_for(job["id"])
    assert first["status"] == "succeeded", first["error"]
    http.put(f"/v1/models/{name}/aliases/production", json={"version": 1}).raise_for_status()
    http.put(f"/v1/models/{name}/monitoring", json={"log_share": 1.0}).raise_for_status()
    http.put(f"/v1/models/{name}/retraining", json={
        "triggers": {"min_live_accuracy": 0.99, "min_labels": 200}, "cooldown_hours": 1, "rollout": {
            "steps": [{"weight": 50, "min_seconds": 0, "min_requests": 20},
                      {"weight": 100, "min_seconds": 0, "min_requests": 20}],
            "gates": {"min_requests": 20, "min_agreement": None, "latency_slack_ms": 60_000}}}).raise_for_status()
    upload(order[:1400])  # more data arrives: version 2 of the dataset
    held_out = order[1400:]
    labelled: dict[str, list[int]] = {}

    def accuracy_fell():
        for k, i in enumerate(held_out[:100]):
            r = live.replicas[k % 2].post("/predict", json={"instances": [INSTANCES[i]], "model": f"{name}@production"})
            labelled[r.raise_for_status().headers["x-request-id"]] = [int(Y[i])]
        http.post("/v1/feedback", json={"items": [{"request_id": rid, "labels": y} for rid, y in labelled.items()]})
        return http.get(f"/v1/models/{name}/retraining").json()["job_id"]

    job_id = live.wait_until(accuracy_fell, "a retraining job", timeout=90)
    retrained = live.wait_for(job_id)
    assert retrained["status"] == "succeeded", retrained["error"]
    state = live.wait_until(lambda: (s := http.get(f"/v1/models/{name}/retraining").json())["rollout_id"] and s,
                            "the new version's rollout", timeout=60)
    assert retrained["result"]["test_accuracy"] > first["result"]["test_accuracy"] + 0.3, "more data, a better model"
    assert "below 0.99" in [e for e in state["history"] if e["kind"] == "job"][0]["trigger"]

    def promoted():
        for k in range(40):
            live.replicas[k % 2].post("/predict", json={"instances": [INSTANCES[k]], "model": f"{name}@production"}
                                      ).raise_for_status()
        status = http.get(f"/v1/models/{name}/rollouts/{state['rollout_id']}").json()["status"]
        return status if status != "running" else None

    assert live.wait_until(promoted, "the rollout's end", timeout=90) == "succeeded"
    assert http.get(f"/v1/models/{name}@production").json()["version"] == 2
    kinds = [e["kind"] for e in http.get(f"/v1/models/{name}/retraining").json()["history"]]
    assert kinds == ["policy", "job", "gate", "rollout"], f"one job, one rollout, whichever replica: {kinds}"
    jobs = [j for j in http.get("/v1/jobs", params={"limit": 200}).json()["items"] if j["spec"]["name"] == name]
    assert len(jobs) == 2, "the first version's job and one retraining"
