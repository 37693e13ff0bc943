"""Prediction logs, feedback and live quality in one API process on real MNIST digits (the built-in
mnist-5k): the Parquet files read back with pandas to the requests sent, feedback with the true labels of its
1,000 test digits gives the live accuracy the job measured offline on them, refusals per item, the
per-model log share, and retention. The background pass that writes the log is run by hand."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.monitoring import service as monitoring
from service.platform.tables import Prediction, utcnow
from service.rollouts import background
from tests.conftest import own_runtime
from tests.helpers import assert_error

pytestmark = pytest.mark.slow  # trains a classifier on 5,000 MNIST digits (seconds)

NAME = "watched-mnist"


@pytest.fixture(scope="module")
def api(databases, tmp_path_factory):
    runtime = own_runtime(databases, tmp_path_factory.mktemp("monitoring"), rollout_seconds=3600,
                          prediction_log_share=1.0)
    with TestClient(create_app(runtime=runtime, reconcile=False, tune_process=False)) as client:
        from tests.conftest import run_in_worker

        job = client.post("/v1/jobs", json={"dataset": "mnist-5k", "name": NAME, "architecture": {
            "type": "logistic_regression"}, "optimizer": {"type": "adam"}, "training": {
            "epochs": 3, "batch_size": 128, "learning_rate": 0.003, "seed": 0}}).json()
        run_in_worker(runtime, job["id"])
        done = client.get(f"/v1/jobs/{job['id']}").json()
        assert done["status"] == "succeeded", done["error"]
        client.runtime, client.job = runtime, done
        client.once = lambda: background.once(client.app.state.rollouts, runtime, predictions=client.app.state.prediction_log)
        yield client
    runtime.close()


@pytest.fixture(scope="module")
def test_digits():
    """mnist-5k's test part as the job cut it (validation 0.1, test 0.2, seed 0): 1,000 real digits."""
    from models.datasets import load_builtin, split_dataset

    test = split_dataset(load_builtin("mnist-5k"), validation_split=0.1, test_split=0.2, seed=0).test
    return test.x.numpy().reshape(len(test.x), -1), test.y.numpy()


@pytest.fixture(scope="module")
def sent(api, test_digits):
    """The 1,000 test digits through /predict, ten a request: each request's id, inputs and labels."""
    x, y = test_digits
    requests = []
    for start in range(0, len(x), 10):
        r = api.post("/predict", json={"instances": x[start:start + 10].tolist(), "model": f"{NAME}@1"})
        assert r.status_code == 200, r.text
        requests.append((r.headers["x-request-id"], x[start:start + 10], y[start:start + 10],
                         [p["label"] for p in r.json()["predictions"]]))
    api.once()
    return requests


def test_feedback_on_1000_real_digits_gives_the_offline_accuracy(api, sent, test_digits):
    assert len(test_digits[0]) == 1000
    for start in range(0, len(sent), 50):
        r = api.post("/v1/feedback", json={"items": [{"request_id": rid, "labels": labels.tolist()}
                                                     for rid, _, labels, _ in sent[start:start + 50]]})
        assert r.status_code == 200 and r.json()["refused"] == 0, r.text
    live = api.get(f"/v1/models/{NAME}/versions/1/monitoring", params={"window": "1h"}).json()
    predicted = np.concatenate([p for *_, p in sent])
    offline = float((predicted == test_digits[1]).mean())
    assert live["labels"] == 1000 and live["labelled_requests"] == 100
    assert live["accuracy"] == offline == api.job["result"]["test_accuracy"]
    low, high = live["accuracy_ci95"]
    assert low < live["accuracy"] < high and high - low < 0.06
    matrix = np.array(live["confusion_matrix"])
    assert matrix.sum() == 1000 and np.trace(matrix) == round(offline * 1000)
    assert live["per_class_recall"]["0"] == pytest.approx(matrix[0, 0] / matrix[0].sum())
    api.app.state.reconciler.count_live_quality()  # what the reconciler's pass gauges for Prometheus
    metrics = {line.split(" ")[0]: float(line.split(" ")[1]) for line in api.get("/metrics").text.splitlines()
               if line.startswith("trainserve_live_")}
    assert metrics[f'trainserve_live_labels{{model="{NAME}",version="1"}}'] == 1000
    assert metrics[f'trainserve_live_accuracy{{model="{NAME}",version="1"}}'] == pytest.approx(offline)


def test_the_parquet_log_reads_back_with_pandas_to_the_requests_sent(api, sent, test_digits):
    root = api.runtime.store.root / "prediction-logs"
    frame = pd.read_parquet(root)
    mine = frame[frame["model"] == NAME]
    assert len(mine) == 1000 and set(mine["request_id"]) == {rid for rid, *_ in sent}
    assert set(mine["version"]) == {1} and set(mine["role"]) == {"stable"}
    by_request = {rid: (inputs, labels) for rid, inputs, _, labels in sent}
    for _, row in mine.sample(50, random_state=0).iterrows():
        inputs, labels = by_request[row["request_id"]]
        np.testing.assert_allclose(row["inputs"], inputs[row["instance"]], rtol=1e-6)
        assert row["label"] == labels[row["instance"]] and len(row["probabilities"]) == 10
    assert {"date", "hour"} <= set(frame.columns), "Hive partitions: model, date and hour columns"


def test_feedback_is_refused_per_item_with_the_reason(api, sent):
    rid, _, labels, _ = sent[0]
    with api.runtime.session() as session:  # one request made long ago, past the retention
        old = session.get(Prediction, sent[1][0])
        old.created_at = utcnow() - timedelta(days=400)
    r = api.post("/v1/feedback", json={"items": [
        {"request_id": "no-such-request", "labels": [1]},
        {"request_id": rid, "labels": [12] + labels.tolist()[1:]},
        {"request_id": rid, "labels": [1, 2]},
        {"request_id": rid, "actual": [[1.0]]},
        {"request_id": sent[1][0], "labels": sent[1][2].tolist()},
        {"request_id": rid, "labels": labels.tolist()}]})
    assert r.status_code == 200, r.text
    reasons = [item["reason"] for item in r.json()["items"]]
    assert "unknown request id" in reasons[0]
    assert "label 12 is outside the model's classes 0-9" == reasons[1]
    assert "2 labels for a request of 10 instance(s)" == reasons[2]
    assert "a classifier's feedback is label" in reasons[3]
    assert "older than its model's retention of 30 days" in reasons[4]
    assert reasons[5] is None and r.json()["accepted"] == 1 and r.json()["refused"] == 5
    assert_error(api.post("/v1/feedback", json={"items": []}), 422, "items")
    assert_error(api.get(f"/v1/models/{NAME}/versions/1/monitoring", params={"window": "forever"}), 422, "e.g. 1h")


def test_a_model_s_log_share_and_retention(api, test_digits):
    assert api.get(f"/v1/models/{NAME}/monitoring").json()["log_share"] == 1.0
    assert_error(api.put(f"/v1/models/{NAME}/monitoring", json={"log_share": 1.5}), 422, "log_share")
    assert_error(api.put(f"/v1/models/{NAME}/monitoring", json={"drift_threshold": 0}), 422, "drift_threshold")
    own = api.put(f"/v1/models/{NAME}/monitoring", json={"log_share": 1.0, "drift_threshold": 0.5}).json()
    assert own["drift_threshold"] == 0.5 and own["own"]["drift_threshold"] == 0.5
    assert api.get(f"/v1/models/{NAME}/versions/1/drift").json()["threshold"] == 0.5
    assert_error(api.get(f"/v1/models/{NAME}/versions/1/drift", params={"points": 0}), 422, "points")
    assert_error(api.put("/v1/models/no-such-model/monitoring", json={"log_share": 0.5}), 404, "no model named")
    off = api.put(f"/v1/models/{NAME}/monitoring", json={"log_share": 0, "retention_days": 1}).json()
    assert off["log_share"] == 0 and off["retention_days"] == 1
    api.once()  # the process reads the share
    ids = [api.post("/predict", json={"instances": [test_digits[0][0].tolist()], "model": NAME}).headers["x-request-id"]
           for _ in range(5)]
    api.once()
    with api.runtime.session() as session:
        assert all(session.get(Prediction, rid) is None for rid in ids), "share 0: nothing of it is logged"
        deleted = monitoring.prune(session, api.runtime.store, api.runtime.settings, utcnow() + timedelta(days=2))
        assert session.query(Prediction).filter(Prediction.name == NAME).count() == 0
    assert deleted >= 1 and not list((api.runtime.store.root / "prediction-logs").rglob("*.parquet"))
    api.put(f"/v1/models/{NAME}/monitoring", json={"log_share": None, "retention_days": None})


def test_a_rollout_is_rolled_back_on_live_accuracy_from_feedback(api, test_digits):
    """The rollout gate on labelled live traffic: a candidate trained on the same digits with every label
    shifted by one (right on its own test part, wrong on every real label) is rolled back once both versions
    have enough labels, with both accuracies in the reason."""
    from models.datasets import load_builtin
    from tests import datafiles
    from tests.conftest import run_in_worker

    digits = load_builtin("mnist-5k")
    shifted = datafiles.npz(digits.x.numpy().astype(np.uint8)[:, 0], ((digits.y.numpy() + 1) % 10).astype(np.uint8))
    assert api.post("/v1/datasets", data={"name": "mnist-shifted"}, files=[("file", ("d.npz", shifted))]).status_code == 201
    job = api.post("/v1/jobs", json={"dataset": "mnist-shifted", "name": NAME, "architecture": {
        "type": "logistic_regression"}, "optimizer": {"type": "adam"}, "training": {
        "epochs": 3, "batch_size": 128, "learning_rate": 0.003, "seed": 0}}).json()
    run_in_worker(api.runtime, job["id"])
    done = api.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done["error"]
    candidate = done["model"]["version"]
    api.put(f"/v1/models/{NAME}/aliases/production", json={"version": 1}).raise_for_status()
    rollout = api.post(f"/v1/models/{NAME}/rollouts", json={
        "candidate": candidate, "compare_share": 0, "steps": [{"weight": 50, "min_seconds": 0}, {"weight": 100}],
        "gates": {"min_requests": 10, "min_agreement": None, "max_accuracy_drop": 0.05, "min_labels": 100,
                  "latency_slack_ms": 60_000}}).json()  # judged on accuracy alone: a busy CI box's p99 is no verdict
    api.once()
    x, y = test_digits
    sent = []
    for i in range(0, 600, 3):
        r = api.post("/predict", json={"instances": x[i:i + 3].tolist(), "model": f"{NAME}@production"})
        sent.append({"request_id": r.headers["x-request-id"], "labels": y[i:i + 3].tolist()})
    api.once()  # the log written: feedback can name the requests
    waiting = api.get(f"/v1/models/{NAME}/rollouts/{rollout['id']}").json()
    gate = next(c for c in waiting["checks"] if c["gate"] == "live_accuracy")
    assert gate["passed"] is None and "labelled instances" in gate["reason"], "no labels yet: no verdict"
    assert api.post("/v1/feedback", json={"items": sent}).json()["refused"] == 0
    api.once()
    ended = api.get(f"/v1/models/{NAME}/rollouts/{rollout['id']}").json()
    assert ended["status"] == "rolled_back", ended
    assert "live_accuracy" in ended["reason"] and "less 0.05" in ended["reason"], ended["reason"]
    assert api.get(f"/v1/models/{NAME}@production").json()["version"] == 1


def aged(api, hours: float) -> None:
    """The drift counts written so far, moved ``hours`` into the past: the next requests make a window of
    their own, as if that much time had gone by."""
    from sqlalchemy import select

    from service.platform.tables import DriftCount

    with api.runtime.session() as session:
        for row in session.scalars(select(DriftCount)):
            row.created_at -= timedelta(hours=hours)


def drift_after(api, images: np.ndarray) -> dict:
    for start in range(0, len(images), 20):
        r = api.post("/predict", json={"instances": images[start:start + 20].tolist(), "model": f"{NAME}@1"})
        assert r.status_code == 200, r.text
    api.once()
    return api.get(f"/v1/models/{NAME}/versions/1/drift", params={"window": "1h"}).json()


def has_fashion_mnist() -> bool:
    from models.datasets import FASHION_MNIST_DIR  # noqa: F401 - where Debian's package puts it

    return (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file()


def test_drift_stays_low_on_real_digits_and_passes_its_threshold_on_clothing_and_inverted_digits(api, sent,
                                                                                                   test_digits):
    """The version's reference profile is its test part; live digits like them keep every PSI low, while
    Fashion-MNIST's clothing and digits drawn black on white pass the threshold within their window, in the
    API, in Prometheus (the gauges), in the alert rule (promtool, on the gauges as scraped) and in the
    window's series."""
    from models.datasets import load_builtin, split_dataset

    if not has_fashion_mnist():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    aged(api, 6)  # the test digits sent so far (the profile's own inputs) out of the window
    unseen = split_dataset(load_builtin("mnist-5k"), validation_split=0.1, test_split=0.2, seed=0).train.x[:1000]
    digits = drift_after(api, unseen.numpy().reshape(1000, -1))  # real digits the profile never saw
    assert digits["profile"]["instances"] == 1000 and digits["instances"] == 1000, digits
    assert digits["drifting"] is False and digits["max_psi"] < 0.1, digits["scores"]
    assert digits["scores"]["predictions"]["chi2_p"] > 0.01
    quiet = drift_gauges(api)
    assert any(k.startswith("trainserve_drift_threshold{") for k in quiet), quiet
    assert_alerts(quiet, "TrainserveModelDrift", [])  # quiet on real digits

    aged(api, 2)
    clothing = load_builtin("fashion-mnist").x[:1000].numpy().reshape(1000, -1)
    worn = drift_after(api, clothing)
    assert worn["instances"] == 1000 and worn["drifting"] is True, worn
    assert worn["scores"]["ink"]["psi"] > worn["threshold"] and worn["scores"]["mean"]["psi"] > worn["threshold"]

    aged(api, 2)
    inverted = drift_after(api, 255.0 - test_digits[0][:500])
    assert inverted["drifting"] is True and inverted["scores"]["mean"]["psi"] > 1, inverted["scores"]
    assert inverted["scores"]["mean"]["ks"] > 0.9, "every inverted digit is brighter than every real one"

    day = api.get(f"/v1/models/{NAME}/versions/1/drift", params={"window": "24h", "points": 24}).json()
    series = [(p["instances"], p["drifting"]) for p in day["series"] if p["instances"]]
    assert series[-3:] == [(1000, False), (1000, True), (500, True)], day["series"]

    gauges = drift_gauges(api)
    labels = f'model="{NAME}",version="1"'
    assert gauges[f"trainserve_drift_threshold{{{labels}}}"] == 0.25
    assert gauges[f'trainserve_drift_psi{{model="{NAME}",summary="mean",version="1"}}'] > 0.25
    worst = max(v for k, v in gauges.items() if k.startswith("trainserve_drift_psi{"))
    assert_alerts(gauges, "TrainserveModelDrift", [{"exp_labels": {"severity": "warning", "model": NAME, "version": "1"},
                                                    "exp_annotations": {
        "summary": f"{NAME} v1: live inputs have drifted from its test data",
        "description": f"A summary of the inputs or answers that {NAME} v1 gets live has a population stability "
                       f"index of {worst:.2f} against its test part, past the name's threshold, for 10 minutes. "
                       f"GET /v1/models/{NAME}/versions/1/drift says which summary moved and when; "
                       f"docs/monitoring.md says how to read it."}}])


def drift_gauges(api) -> dict[str, float]:
    """The drift gauges as /metrics gives them after a reconciler pass."""
    api.app.state.reconciler.count_live_quality(every=timedelta(0))
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in api.get("/metrics").text.splitlines()
            if line.startswith("trainserve_drift_")}


def assert_alerts(gauges: dict[str, float], alert: str, expected: list[dict]) -> None:
    """The alert rules evaluated by promtool on ``gauges`` as scraped, held for 15 minutes: ``alert`` fires
    as ``expected`` (promtool's exp_alerts: labels and annotations; [] for none)."""
    import subprocess

    import yaml

    from tests.test_deploy_monitoring import MONITORING, promtool

    series = [{"series": name, "values": f"{value}x20"} for name, value in gauges.items()]
    test = {"rule_files": [str(MONITORING / "alerts.yaml")], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": [
                {"eval_time": "15m", "alertname": alert, "exp_alerts": expected}]}]}
    from tempfile import NamedTemporaryFile

    with NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(test, f)
        f.flush()
        out = subprocess.run([promtool(), "test", "rules", f.name], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
