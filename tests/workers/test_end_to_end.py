"""End to end over HTTP: real API and worker processes train a model and serve it.

The same flow runs on the embedded defaults (SQLite, kombu's filesystem transport) and on the real stack
(PostgreSQL and Redis at 127.0.0.1, artifacts in Azure Blob storage on Azurite)."""

from __future__ import annotations

import contextlib
import io
import signal

import numpy as np
import onnxruntime
import pytest
import torch

from models.export import model_from_bytes
from service.platform.artifacts import open_store
from tests import datafiles
from tests.helpers import LOGREG_SPEC, REDIS_URL, digits_test_split, new_postgres_database, unique
from tests.stack import Stack

pytestmark = pytest.mark.slow

LONG_SPEC = {
    "dataset": "digits",
    "architecture": {"type": "mlp", "hidden_sizes": [400, 200]},
    "optimizer": {"type": "adam"},
    "training": {"epochs": 500, "batch_size": 8, "learning_rate": 0.0005},
}


def train_and_predict(stack) -> None:
    r = stack.http.post("/v1/jobs", json=LOGREG_SPEC)
    assert r.status_code == 202, r.text
    job = stack.wait_for(r.json()["id"])
    assert job["status"] == "succeeded", f"{job['error']}\n{stack.tail_logs()}"
    assert job["result"]["test_accuracy"] >= 0.90
    assert job["progress"] == {"epoch": 15, "epochs": 15}
    assert len(stack.http.get(f"/v1/jobs/{job['id']}/metrics").json()["items"]) == 15

    test = digits_test_split()
    r = stack.http.post("/predict", json={"instances": test.x[:, 0].tolist(), "model": job["model"]["id"]})
    assert r.status_code == 200, r.text
    predicted = np.array([p["label"] for p in r.json()["predictions"]])
    assert (predicted == test.y.numpy()).mean() >= 0.90
    assert r.json()["model"]["id"] == job["model"]["id"]


def train_on_an_upload(stack) -> None:
    """The dataset, the checkpoints and the model all pass through the stack's artifact store, and only it."""
    x, y = datafiles.digits()
    r = stack.http.post("/v1/datasets", data={"name": "scanned-digits"},
                        files=[("file", ("digits.npz", datafiles.npz(x[:1500], y[:1500])))])
    assert r.status_code == 201, r.text
    dataset = r.json()
    spec = {**LOGREG_SPEC, "dataset": "scanned-digits@1", "name": "scanned-digits-logreg"}
    job = stack.wait_for(stack.http.post("/v1/jobs", json=spec).json()["id"])
    assert job["status"] == "succeeded", f"{job['error']}\n{stack.tail_logs()}"
    assert job["dataset"]["id"] == dataset["id"] and job["result"]["test_accuracy"] >= 0.90
    r = stack.http.post("/predict", json={"instances": x[1500:].tolist(), "model": "scanned-digits-logreg"})
    assert r.status_code == 200, r.text
    predicted = np.array([p["label"] for p in r.json()["predictions"]])
    assert (predicted == y[1500:]).mean() >= 0.85
    url = stack.env.get("TRAINSERVE_ARTIFACTS_URL", f"file://{(stack.home / 'artifacts').resolve()}")
    store = open_store(url, stack.env.get("TRAINSERVE_AZURE_STORAGE_CONNECTION_STRING"))
    model = stack.http.get(f"/v1/models/{job['model']['id']}").json()
    assert store.get(f"models/{model['id']}/model.pt", model["sha256"])
    assert store.exists(f"datasets/{dataset['sha256']}/data.npz")
    if url.startswith("azure://"):
        assert not (stack.home / "artifacts").exists(), "an artifact went to local disk, not to Blob storage"


def exported(stack, model_id: str) -> dict[str, bytes]:
    """The model's three files, once the export worker has made the TorchScript and ONNX ones."""
    def both_recorded() -> dict | None:
        model = stack.http.get(f"/v1/models/{model_id}").json()
        return model if len(model["exports"]) == 2 else None

    model = stack.wait_until(both_recorded, what=f"the exports of model {model_id}")
    assert {f: e["status"] for f, e in model["exports"].items()} == {"torchscript": "ok", "onnx": "ok"}, \
        f"{model['exports']}\n{stack.tail_logs()}"
    files = {}
    for fmt in ("pt", "torchscript", "onnx"):
        r = stack.http.get(f"/v1/models/{model_id}/download", params={"format": fmt})
        assert r.status_code == 200, r.text
        files[fmt] = r.content
    return files


def same_in_every_runtime(files: dict[str, bytes], x: torch.Tensor, names: tuple[str, str]) -> np.ndarray:
    eager, _ = model_from_bytes(files["pt"])
    with torch.no_grad():
        expected = eager(x).numpy()
        scripted = torch.jit.load(io.BytesIO(files["torchscript"]))(x).numpy()
    onnx = onnxruntime.InferenceSession(files["onnx"]).run([names[1]], {names[0]: x.numpy()})[0]
    assert np.allclose(scripted, expected, atol=1e-4) and np.allclose(onnx, expected, atol=1e-4)
    return expected


def export_models_trained_on_uploads(stack) -> None:
    """An IDX upload's classifier and a CSV upload's forecaster: both exports made by a real worker, checked
    on the job's own held-out data, downloaded with 200 and equal to the eager model in their runtimes."""
    x, y = datafiles.digits()
    r = stack.http.post("/v1/datasets", data={"name": "idx-digits"},
                        files=[("file", ("train-images-idx3-ubyte.gz", datafiles.idx(x, gz=True))),
                               ("file", ("train-labels-idx1-ubyte.gz", datafiles.idx(y, gz=True)))])
    assert r.status_code == 201, r.text
    r = stack.http.post("/v1/datasets", data={"name": "sensor"},
                        files=[("file", ("sensor.csv", datafiles.timeseries_csv(600)))])
    assert r.status_code == 201, r.text
    classifier = stack.http.post("/v1/jobs", json={**LOGREG_SPEC, "dataset": "idx-digits", "name": "idx-digits"})
    forecaster = stack.http.post("/v1/jobs", json={
        "task": "forecast", "dataset": "sensor", "name": "sensor-lstm",
        "forecast": {"target": "power", "inputs": ["temperature"], "lookback": 12, "horizon": 3},
        "architecture": {"type": "lstm", "hidden_size": 8},
        "training": {"epochs": 2, "batch_size": 32, "learning_rate": 0.01}})
    jobs = [stack.wait_for(r.json()["id"]) for r in (classifier, forecaster)]
    for job in jobs:
        assert job["status"] == "succeeded", f"{job['error']}\n{stack.tail_logs()}"

    logits = same_in_every_runtime(exported(stack, jobs[0]["model"]["id"]),
                                   torch.from_numpy(x[-100:].astype(np.float32)).unsqueeze(1), ("pixels", "logits"))
    assert (logits.argmax(1) == y[-100:]).mean() >= 0.85
    shape = stack.http.get(f"/v1/models/{jobs[1]['model']['id']}").json()["input_shape"]
    forecasts = same_in_every_runtime(exported(stack, jobs[1]["model"]["id"]), torch.rand(16, *shape),
                                      ("window", "forecast"))
    assert forecasts.shape == (16, 3)


def cancel_running_job(stack) -> None:
    job_id = stack.http.post("/v1/jobs", json=LONG_SPEC).json()["id"]
    running = stack.wait_for(job_id, {"running"}, predicate=lambda j: j["progress"]["epoch"] >= 1)
    assert running["started_at"]
    r = stack.http.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"]
    cancelled = stack.wait_for(job_id, timeout=30)
    assert cancelled["status"] == "cancelled" and cancelled["model"] is None
    kept = stack.http.get(f"/v1/jobs/{job_id}/metrics").json()["items"]
    assert 1 <= len(kept) < 500 and cancelled["progress"]["epoch"] == len(kept)


def stopped_worker_hands_its_job_on(stack) -> None:
    """SIGTERM, as Kubernetes and Ctrl-C send: the job goes back to the queue at its next batch, is sent again
    at once, and the next worker resumes after the last finished epoch."""
    spec = {**LONG_SPEC, "training": {"epochs": 5, "batch_size": 8, "learning_rate": 0.0005}}
    job_id = stack.http.post("/v1/jobs", json=spec).json()["id"]
    stack.wait_for(job_id, {"running"}, predicate=lambda j: j["progress"]["epoch"] >= 2)
    worker = stack.worker()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, stack.tail_logs()
    requeued = stack.http.get(f"/v1/jobs/{job_id}").json()
    assert requeued["status"] == "queued" and requeued["attempts"] == 1, requeued
    stack.spawn("worker")
    done = stack.wait_for(job_id, timeout=180)
    assert done["status"] == "succeeded" and done["attempts"] == 2, f"{done}\n{stack.tail_logs()}"
    epochs = [m["epoch"] for m in stack.http.get(f"/v1/jobs/{job_id}/metrics").json()["items"]]
    assert epochs == list(range(1, 6)), "no epoch lost or done twice"
    assert "resuming after epoch" in stack.logs[-1].read_text(), stack.tail_logs()


def test_embedded_predict_before_any_model_says_to_train_one(embedded_stack):
    r = embedded_stack.http.post("/predict", json={"instances": [[0.0] * 64]})
    assert r.status_code == 404 and "submit a job" in r.json()["error"]["message"]


def test_embedded_train_then_predict(embedded_stack):
    train_and_predict(embedded_stack)


def test_embedded_train_on_an_uploaded_dataset(embedded_stack):
    train_on_an_upload(embedded_stack)


def test_embedded_exports_of_models_trained_on_uploads(embedded_stack):
    export_models_trained_on_uploads(embedded_stack)


def test_embedded_cancel_running_job(embedded_stack):
    cancel_running_job(embedded_stack)


def test_embedded_a_stopped_worker_hands_its_job_on(embedded_stack):
    stopped_worker_hands_its_job_on(embedded_stack)


@pytest.mark.realstack
def test_real_stack_a_stopped_worker_hands_its_job_on(real_stack):
    stopped_worker_hands_its_job_on(real_stack)


@pytest.mark.realstack
def test_real_stack_train_then_predict(real_stack):
    train_and_predict(real_stack)


@pytest.mark.realstack
def test_real_stack_train_on_an_uploaded_dataset(real_stack):
    train_on_an_upload(real_stack)


@pytest.mark.realstack
def test_real_stack_exports_of_models_trained_on_uploads(real_stack):
    export_models_trained_on_uploads(real_stack)


@pytest.mark.realstack
def test_real_stack_cancel_running_job(real_stack):
    cancel_running_job(real_stack)


@pytest.mark.parametrize("backend", ["embedded", pytest.param("realstack", marks=pytest.mark.realstack)])
def test_a_killed_worker_is_replaced_and_the_job_resumes_from_its_checkpoint(tmp_path, backend, request):
    """SIGKILL, as an out-of-memory kill would: no shutdown handler runs. The reconciler notices the
    silent heartbeat, queues the job again, and a new worker continues after the last finished epoch. A stack
    of its own (its own database and queue), so no other API's reconciler takes part."""
    env = {"TRAINSERVE_HOME": str(tmp_path), "TRAINSERVE_STALE_AFTER_SECONDS": "10",
           "TRAINSERVE_RECONCILE_SECONDS": "1"}
    spec = {**LONG_SPEC, "training": {"epochs": 6, "batch_size": 8, "learning_rate": 0.0005}}
    with contextlib.ExitStack() as resources:
        if backend == "realstack":
            env.update(TRAINSERVE_DATABASE_URL=resources.enter_context(new_postgres_database()),
                       TRAINSERVE_BROKER_URL=REDIS_URL, TRAINSERVE_QUEUE=unique("trainserve-kill"))
        stack = resources.enter_context(Stack.start(env))
        job_id = stack.http.post("/v1/jobs", json=spec).json()["id"]
        stack.wait_for(job_id, {"running"}, predicate=lambda j: j["progress"]["epoch"] >= 2)
        worker = stack.worker()
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        stack.spawn("worker")
        done = stack.wait_for(job_id, timeout=150)
        assert done["status"] == "succeeded", f"{done['error']}\n{stack.tail_logs()}"
        assert done["attempts"] == 2
        metrics = stack.http.get(f"/v1/jobs/{job_id}/metrics").json()["items"]
        assert [m["epoch"] for m in metrics] == list(range(1, 7)), "no epoch lost or done twice"
        assert "resuming after epoch" in stack.logs[-1].read_text(), stack.tail_logs()
