"""The jobs API in this process, on the embedded database; jobs run through the worker's own code."""

from __future__ import annotations

import copy
import json
import uuid

import pytest

from tests.helpers import LOGREG_SPEC, assert_error


def spec(**changes) -> dict:
    s = copy.deepcopy(LOGREG_SPEC)
    for path, value in changes.items():
        target = s
        *parents, leaf = path.split("__")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return s


def test_submit_answers_202_with_location_and_a_queued_job(client):
    r = client.post("/v1/jobs", json=LOGREG_SPEC)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["progress"] == {"epoch": 0, "epochs": 15}
    assert job["spec"]["optimizer"] == {"type": "sgd", "momentum": 0.9, "nesterov": False, "weight_decay": 0.0}
    assert client.get(r.headers["location"]).json()["id"] == job["id"]


@pytest.mark.parametrize("optimizer,learning_rate,batch_size", [("adam", 0.001, 64), ("newton", 1.0, None)])
def test_the_stored_spec_says_which_defaults_applied(client, optimizer, learning_rate, batch_size):
    job = client.post("/v1/jobs", json={"dataset": "digits", "architecture": {"type": "logistic_regression"},
                                        "optimizer": {"type": optimizer}}).json()
    assert job["spec"]["training"]["learning_rate"] == learning_rate
    assert job["spec"]["training"]["batch_size"] == batch_size


@pytest.mark.parametrize("changes,field,fragments", [
    ({"dataset": "imagenet"}, "dataset", ["unknown dataset 'imagenet'", "built-in: digits, fashion-mnist, mnist-5k, solar", "GET /v1/datasets"]),
    ({"dataset": "digits@x"}, "dataset", ["must be a version number"]),
    ({"architecture": {"type": "transformer"}}, "architecture", ["unknown type 'transformer'; one of: logistic_regression, mlp, cnn, lstm, gru"]),
    ({"architecture": {"type": "mpl"}}, "architecture", ["unknown type 'mpl'; did you mean mlp?"]),
    ({"optimizer": {"type": "adma"}}, "optimizer", ["did you mean adam or adamw?"]),
    ({"optimizer": {"type": "adadelta"}}, "optimizer",
     ["one of: sgd, adagrad, rmsprop, adam, adamw, lbfgs, bfgs, newton, conjugate_gradient"]),
    ({"training__epochs": 0}, "training.epochs", ["greater than or equal to 1"]),
    ({"training__learning_rate": -1}, "training.learning_rate", ["greater than 0"]),
    ({"training__validation_split": 0.9}, "training.validation_split", ["less than or equal to 0.5"]),
    ({"training__device": "tpu"}, "training.device", ["'auto', 'cpu' or 'cuda'"]),
    ({"architecture": {"type": "mlp", "activation": "gelu"}}, "architecture.mlp.activation", ["'relu', 'tanh'"]),
    ({"architecture": {"type": "mlp", "hidden_sizes": []}}, "architecture.mlp.hidden_sizes", ["at least 1"]),
    ({"optimizer": {"type": "sgd", "momentum": 0, "nesterov": True}}, "optimizer.sgd", ["nesterov needs momentum"]),
    ({"optimizer": {"type": "sgd", "lr": 0.1}}, "optimizer.sgd.lr", ["Extra inputs are not permitted"]),
    ({"optimizer": {"type": "adam", "momentum": 0.9}}, "optimizer.adam.momentum", ["Extra inputs"]),
    ({"architecture": {"type": "mlp", "hidden_sizes": [8, 8], "dropout": [0.1]}}, "architecture.mlp",
     ["dropout lists 1 rates for 2 hidden layers"]),
    ({"architecture": {"type": "cnn", "kernel_size": 4}}, "architecture.cnn.kernel_size", ["1, 3, 5 or 7"]),
    ({"training__schedule": {"type": "exponential"}}, "training.schedule", ["one of: step, cosine, one_cycle"]),
    # settings that cannot work together
    ({"optimizer": {"type": "newton"}, "architecture": {"type": "mlp", "dropout": 0.2}, "training__batch_size": None},
     "body",
     ["newton takes full-batch steps with a line search, which needs a deterministic loss", "dropout to 0"]),
    ({"optimizer": {"type": "lbfgs"}, "training__batch_size": 32}, "body", ["whole training set or large batches"]),
    ({"optimizer": {"type": "conjugate_gradient"}, "training__augmentation": {}, "training__batch_size": 512}, "body", ["remove training.augmentation"]),
    ({"optimizer": {"type": "newton"}, "training__schedule": {"type": "cosine"}, "training__batch_size": None}, "body", ["schedule does not apply"]),
    ({"optimizer": {"type": "lbfgs"}, "training__grad_clip_norm": 1.0, "training__batch_size": None}, "body", ["grad_clip_norm does not apply"]),
    ({"training__validation_split": 0, "training__early_stopping": {"monitor": "val_accuracy"}}, "body",
     ["needs a validation set"]),
    ({"training__precision": "bf16", "training__device": "cpu"}, "body", ["bf16 is autocast on a GPU"]),
    ({"optimizer": {"type": "bfgs"}, "architecture": {"type": "mlp"}, "training__batch_size": None}, "optimizer.type",
     ["bfgs keeps a dense 108,210 x 108,210 matrix", "more than bfgs's 8,192; use lbfgs"]),
    ({"optimizer": {"type": "bfgs"}, "dataset": "mnist-5k", "architecture": {"type": "cnn"}, "training__batch_size": None},
     "optimizer.type",
     ["use lbfgs"]),
    ({"training__loss": "mae"}, "body", ["classification takes cross_entropy or mse"]),
    # counted before it is queued: a billion parameters would need about 12 GB to train with sgd
    ({"architecture": {"type": "mlp", "hidden_sizes": [8192] * 16}}, "architecture",
     ["this mlp has 1,007,370,250 parameters (about 12.1 GB to train with sgd", "TRAINSERVE_MAX_MODEL_PARAMETERS"]),
    ({"architecture": {"type": "lstm", "hidden_size": 2048, "num_layers": 8}}, "architecture",
     ["parameters", "more than the 50,000,000 a worker takes"]),
    # Python's JSON reader takes Infinity and NaN; a spec does not
    ({"training__grad_clip_norm": float("inf")}, "training.grad_clip_norm", ["finite number"]),
    ({"training__early_stopping": {"min_delta": float("inf")}}, "training.early_stopping.min_delta", ["finite number"]),
    ({"training__learning_rate": float("nan")}, "training.learning_rate", ["finite number"]),
    ({"training__compile": "fast"}, "training.compile", ["'auto', 'graph' or 'none'"]),
    ({"training__compile": "graph", "training__device": "cpu"}, "body", ["CUDA graphs on a GPU", "compile auto"]),
    ({"training__compile": "graph", "optimizer": {"type": "lbfgs"}, "training__batch_size": None}, "body",
     ["compile graph cannot be used: lbfgs is a full-batch optimizer"]),
    ({"training__compile": "graph", "optimizer": {"type": "adagrad"}}, "body",
     ["PyTorch has no capturable adagrad step", "use compile auto or none"]),
    ({"training__compile": "graph", "training__schedule": {"type": "cosine"}}, "body", ["learning-rate schedule"]),
    ({"training__compile": "graph", "training__augmentation": {}}, "body", ["augmentation draws new transforms"]),
])
def test_bad_specs_answer_422_naming_the_field(client, changes, field, fragments):
    body = json.dumps(spec(**changes))  # as Python writes JSON: Infinity and NaN included
    error = assert_error(client.post("/v1/jobs", content=body, headers={"content-type": "application/json"}), 422,
                         *fragments)
    assert field in [d["field"] for d in error["details"]]
    assert "Value error," not in error["message"]


def test_bodies_that_are_not_a_spec(client):
    assert_error(client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}),
                 422, "JSON")
    assert_error(client.post("/v1/jobs", json=[1, 2]), 422)
    assert_error(client.post("/v1/jobs", json={}), 422, "dataset: Field required")


@pytest.mark.parametrize("path", ["/v1/jobs/{id}", "/v1/jobs/{id}/metrics", "/v1/models/{id}"])
@pytest.mark.parametrize("bad_id", ["3f2b6c1e-0000-4000-8000-000000000000", "not-an-id"])
def test_unknown_ids_answer_404(client, path, bad_id):
    assert_error(client.get(path.format(id=bad_id)), 404, "no ")


def test_unknown_route_has_the_same_error_shape(client):
    assert_error(client.get("/v1/nothing"), 404)
    assert_error(client.delete("/v1/jobs"), 405)


def test_cancel_a_queued_job_means_it_never_starts(client, run_job):
    job = client.post("/v1/jobs", json=LOGREG_SPEC).json()
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled" and r.json()["finished_at"]
    run_job(job["id"])  # the message arrives after all: the worker must leave the job alone
    after = client.get(f"/v1/jobs/{job['id']}").json()
    assert after["status"] == "cancelled" and after["started_at"] is None and after["attempts"] == 0
    assert_error(client.post(f"/v1/jobs/{job['id']}/cancel"), 409, "already cancelled")
    assert_error(client.post("/v1/jobs/3f2b6c1e-0000-4000-8000-000000000000/cancel"), 404)


def test_list_is_newest_first_paginated_and_filtered(client):
    ids = [client.post("/v1/jobs", json=LOGREG_SPEC).json()["id"] for _ in range(3)]
    client.post(f"/v1/jobs/{ids[0]}/cancel")
    page = client.get("/v1/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["items"]] == ids[::-1][:2] and page["limit"] == 2 and page["total"] >= 3
    second = client.get("/v1/jobs", params={"limit": 2, "offset": 1}).json()
    assert second["items"][0]["id"] == ids[1]
    cancelled = client.get("/v1/jobs", params={"status": "cancelled"}).json()["items"]
    assert ids[0] in [j["id"] for j in cancelled] and all(j["status"] == "cancelled" for j in cancelled)
    assert_error(client.get("/v1/jobs", params={"status": "done"}), 422, "status")
    assert_error(client.get("/v1/jobs", params={"limit": 0}), 422, "limit")


def test_a_job_run_by_the_worker_records_metrics_and_registers_its_model(client, run_job):
    job = client.post("/v1/jobs", json=spec(training__epochs=5, name="digits-test")).json()
    run_job(job["id"])
    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"] == {"epoch": 5, "epochs": 5} and done["attempts"] == 1
    assert all(done[k].endswith("Z") for k in ("created_at", "started_at", "finished_at")), "UTC, with the zone"
    assert done["result"]["test_accuracy"] >= 0.85 and done["result"]["test_samples"] == 359
    metrics = client.get(f"/v1/jobs/{job['id']}/metrics").json()["items"]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4, 5]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] and metrics[-1] == done["latest_metrics"]
    model = client.get(f"/v1/models/{done['model']['id']}").json()
    assert model["name"] == "digits-test" and model["input_shape"] == [1, 8, 8] and model["value_range"] == [0, 16]
    assert model["job_id"] == job["id"] and model["metrics"] == done["result"]

    again = client.post("/v1/jobs", json=spec(training__epochs=1, name="digits-test")).json()
    run_job(again["id"])
    listed = client.get("/v1/models", params={"name": "digits-test"}).json()["items"]
    assert [m["version"] for m in listed] == [2, 1]
    run_job(job["id"])  # a duplicate delivery of a finished job changes nothing
    assert client.get(f"/v1/jobs/{job['id']}").json()["attempts"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("migrated", ["sqlite"], indirect=True)  # training is the same on either database
@pytest.mark.parametrize("changes", [
    {"architecture": {"type": "cnn", "channels": [8, 16], "hidden_size": 32, "dropout": 0.1},
     "optimizer": {"type": "adamw"}, "training": {
         "epochs": 6, "learning_rate": 0.01, "loss": "mse", "l1": 1e-5, "l2": 1e-4, "grad_clip_norm": 5.0,
         "schedule": {"type": "one_cycle"}, "augmentation": {"shift": 0.1, "rotation": 5, "scale": 0.05},
         "early_stopping": {"monitor": "val_accuracy", "patience": 3}}},
    {"architecture": {"type": "logistic_regression"}, "optimizer": {"type": "newton"},
     "training": {"epochs": 2, "l2": 1e-3}},
    {"architecture": {"type": "logistic_regression"}, "optimizer": {"type": "bfgs", "max_iter": 30},
     "training": {"epochs": 3, "l2": 1e-3}},
    {"architecture": {"type": "gru", "hidden_size": 32}, "optimizer": {"type": "rmsprop", "centered": True},
     "training": {"epochs": 6, "learning_rate": 0.01, "schedule": {"type": "step", "step_size": 3, "gamma": 0.5}}},
])
def test_every_setting_reaches_the_training_loop(client, run_job, changes):
    job = client.post("/v1/jobs", json={"dataset": "digits", **changes}).json()
    run_job(job["id"])
    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done["error"]
    result = done["result"]
    assert result["test_accuracy"] >= 0.8
    assert len(result["confusion_matrix"]) == 10 and len(result["per_class"]) == 10
    if "early_stopping" in changes["training"]:
        assert result["best_epoch"] is not None
    if "schedule" in changes["training"]:
        rates = [m["learning_rate"] for m in client.get(f"/v1/jobs/{job['id']}/metrics").json()["items"]]
        assert len(set(rates)) > 1, "the schedule changed the learning rate"


def test_a_job_that_diverges_fails_with_an_actionable_message(client, run_job):
    bad = spec(architecture={"type": "mlp", "hidden_sizes": [400, 200]}, training__learning_rate=10.0,
               training__batch_size=16, optimizer={"type": "sgd", "momentum": 0.99})
    job = client.post("/v1/jobs", json=bad).json()
    run_job(job["id"])
    failed = client.get(f"/v1/jobs/{job['id']}").json()
    assert failed["status"] == "failed" and failed["model"] is None and failed["finished_at"]
    assert "loss became nan at epoch 1" in failed["error"] and "lower the learning rate" in failed["error"]


def test_openapi_documents_the_api(client):
    schema = client.get("/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/metrics",
            "/v1/models", "/v1/models/{ref}", "/v1/models/{name}/aliases/{alias}", "/predict", "/healthz", "/readyz"} <= set(schema["paths"])
    assert "instances" in str(schema["paths"]["/predict"]["post"]["requestBody"])
    assert client.get("/docs").status_code == 200


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "checks": {"database": "ok", "artifacts": "ok"},
                                            "jobs": {"broker": "ok"}}
    assert client.get("/readyz/jobs").json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


def test_each_epoch_records_what_it_cost_the_machine(client, run_job):
    job = client.post("/v1/jobs", json={**LOGREG_SPEC, "training": {**LOGREG_SPEC["training"], "epochs": 3,
                                                                    "device": "cpu"}}).json()
    run_job(job["id"])
    items = client.get(f"/v1/jobs/{job['id']}/metrics").json()["items"]
    assert len(items) == 3
    for epoch in items:
        assert 0 < epoch["cpu_seconds"] < 60, epoch
        assert epoch["peak_rss_bytes"] > 50 * 2**20, "PyTorch alone holds more than 50 MB"
        assert epoch["gpu_name"] is None and epoch["gpu_peak_memory_bytes"] is None and epoch["gpu_utilization"] is None
    assert items[-1]["peak_rss_bytes"] >= items[0]["peak_rss_bytes"], "a peak so far never falls"


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PATCH", "/v1/jobs", "GET, POST"), ("PUT", "/v1/datasets/digits", "DELETE, GET"), ("POST", "/healthz", "GET"),
    ("PUT", "/v1/datasets/import", "POST")])
def test_a_method_the_path_does_not_take_is_refused_with_every_method_it_does(client, method, path, allowed):
    r = client.request(method, path)
    assert r.status_code == 405 and r.headers["allow"] == allowed
    assert f"this path takes {allowed}" in r.json()["error"]["message"]


def test_a_job_says_which_training_path_ran_and_why(client, run_job):
    job = client.post("/v1/jobs", json={**LOGREG_SPEC, "training": {"epochs": 1, "device": "cpu"}}).json()
    assert job["spec"]["training"]["compile"] == "auto"
    run_job(job["id"])
    result = client.get(f"/v1/jobs/{job['id']}").json()["result"]
    assert result["training_path"] == {"path": "eager",
                                       "reason": "CUDA graphs need a GPU, and this job trains on the CPU"}


def test_a_dataset_this_server_lacks_is_refused_at_submission(client, monkeypatch, tmp_path):
    import models.datasets

    monkeypatch.setattr(models.datasets, "FASHION_MNIST_DIR", tmp_path)  # as on a server without the package
    error = assert_error(client.post("/v1/jobs", json={**LOGREG_SPEC, "dataset": "fashion-mnist"}), 422,
                         "dataset fashion-mnist is not installed on this server",
                         "apt-get install dataset-fashion-mnist", "digits or mnist-5k")
    assert error["details"] == [{"field": "dataset", "message": "not installed"}]


def test_a_classifier_no_better_than_chance_fails_and_is_never_registered(client, run_job):
    """The first hour's trap: a learning rate of 10 'succeeded' at 0.106 and became the default model."""
    name = f"chance-{uuid.uuid4().hex[:8]}"
    diverging = spec(architecture={"type": "mlp", "hidden_sizes": [64]}, optimizer={"type": "sgd"},
                     training__learning_rate=10.0, training__epochs=2, name=name)
    job = client.post("/v1/jobs", json=diverging).json()
    run_job(job["id"])
    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "failed" and done["model"] is None, done
    assert "the model learned nothing: test accuracy" in done["error"], done["error"]
    assert client.get("/v1/models", params={"name": name}).json()["items"] == []
