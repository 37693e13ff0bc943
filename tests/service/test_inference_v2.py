"""The Open Inference Protocol (KServe v2) endpoints, exercised with request bodies written from the
protocol's specification (inference_rest.md of kserve/open-inference-protocol)."""

from __future__ import annotations

import threading
import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.jobs.runner import run_job
from service.main import create_app
from tests.helpers import LOGREG_SPEC, digits_test_split

NAME = f"oip-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def api(runtime, migrated):
    with TestClient(create_app(runtime=runtime, reconcile=False, tune_process=False)) as c:
        for _ in range(2):
            job = c.post("/v1/jobs", json={**LOGREG_SPEC, "name": NAME}).json()
            run_job(runtime, uuid.UUID(job["id"]), threading.Event())
        yield c


@pytest.fixture(scope="module")
def digits():
    test = digits_test_split()
    return test.x.numpy(), test.y.numpy()


def test_health_and_server_metadata(api):
    assert api.get("/v2/health/live").json() == {"live": True}
    assert api.get("/v2/health/ready").json() == {"ready": True}
    assert api.get("/v2").json()["name"] == "trainserve"


def test_model_metadata_and_readiness(api):
    meta = api.get(f"/v2/models/{NAME}").json()
    assert meta["name"] == NAME and meta["versions"] == ["2", "1"] and meta["platform"] == "pytorch"
    assert meta["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert {o["name"] for o in meta["outputs"]} == {"probabilities", "label"}
    assert api.get(f"/v2/models/{NAME}/versions/1").json()["name"] == NAME
    assert api.get(f"/v2/models/{NAME}/ready").json() == {"name": NAME, "ready": True}
    assert api.get(f"/v2/models/{NAME}/versions/2/ready").json()["ready"] is True


def test_infer_with_flat_data_agrees_with_the_labels(api, digits):
    x, y = digits
    request = {
        "id": "42",
        "inputs": [{"name": "pixels", "shape": [len(x), 1, 8, 8], "datatype": "FP32",
                    "data": x.reshape(-1).tolist()}],
    }
    r = api.post(f"/v2/models/{NAME}/infer", json=request)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == NAME and body["model_version"] == "2" and body["id"] == "42"
    outputs = {o["name"]: o for o in body["outputs"]}
    label = outputs["label"]
    assert {k: label[k] for k in ("name", "datatype", "shape")} == {"name": "label", "datatype": "INT64",
                                                                   "shape": [len(x)]}
    assert len(label["data"]) == len(x) and all(isinstance(v, int) for v in label["data"])
    assert (np.array(label["data"]) == y).mean() >= 0.9
    assert outputs["probabilities"]["datatype"] == "FP32" and outputs["probabilities"]["shape"] == [len(x), 10]
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    assert np.allclose(probabilities.sum(1), 1, atol=1e-4)
    assert (probabilities.argmax(1) == np.array(label["data"])).all()


def test_infer_a_version_with_nested_data_and_one_requested_output(api, digits):
    """Nested data gives the same labels as flat data, and as /predict with the same version."""
    x, _ = digits
    n = 40
    request = {"inputs": [{"name": "pixels", "shape": [n, 64], "datatype": "FP32",
                           "data": x[:n].reshape(n, 64).tolist()}], "outputs": [{"name": "label"}]}
    body = api.post(f"/v2/models/{NAME}/versions/1/infer", json=request).json()
    assert body["model_version"] == "1" and [o["name"] for o in body["outputs"]] == ["label"]
    assert "id" not in body
    flat = api.post(f"/v2/models/{NAME}/versions/1/infer", json={
        "inputs": [{"name": "pixels", "shape": [n, 64], "datatype": "FP32", "data": x[:n].reshape(-1).tolist()}],
        "outputs": [{"name": "label"}]}).json()
    served = api.post("/predict", json={"instances": x[:n, 0].tolist(), "model": f"{NAME}@1"}).json()
    assert body["outputs"][0]["data"] == flat["outputs"][0]["data"] == [p["label"] for p in served["predictions"]]


@pytest.mark.parametrize("path,request_body,status,fragment", [
    ("/v2/models/nobody/infer", {"inputs": []}, 404, "no model named 'nobody'"),
    ("/v2/models/{name}/versions/9/infer", {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32",
                                                       "data": [0] * 64}]}, 404, "has no version 9"),
    ("/v2/models/{name}/infer", {"inputs": []}, 400, 'the request needs "inputs": a list of tensors'),
    ("/v2/models/{name}/infer", {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32",
                                             "data": [0] * 63}]}, 400, "has 63 values but shape [1, 64] needs 64"),
    ("/v2/models/{name}/infer", {"inputs": [{"name": "pixels", "shape": [1, 10], "datatype": "FP32",
                                             "data": [0] * 10}]}, 400, "expects 64 pixels"),
    ("/v2/models/{name}/infer", {"inputs": [{"name": "pixels", "shape": [1, 1], "datatype": "BYTES",
                                             "data": ["x"]}]}, 400, "datatype BYTES is not supported"),
    ("/v2/models/{name}/infer", {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32",
                                             "data": [0] * 64}], "outputs": [{"name": "logits"}]}, 400,
     "unknown output(s) ['logits']"),
    ("/v2/models/{name}/infer", {"inputs": [{"name": "pixels", "shape": [0, 64], "datatype": "FP32", "data": []}]},
     400, "shape must be a list of positive integers"),
    ("/v2/models/{name}/infer", {"inputs": [{"name": "pixels", "shape": [0, 2**63 - 1], "datatype": "FP32",
                                             "data": []}]}, 400, "shape must be a list of positive integers"),
    ("/v2/models/{name}/infer", {"inputs": [{"name": "pixels", "shape": [2**31, 2**31], "datatype": "FP32",
                                             "data": [0]}]}, 400, "more than any request holds"),
])
def test_bad_inference_requests_use_the_protocols_error_shape(api, path, request_body, status, fragment):
    r = api.post(path.format(name=NAME), json=request_body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and fragment in r.json()["error"]


def test_unknown_model_metadata_is_404_in_the_protocols_shape(api):
    r = api.get("/v2/models/nobody")
    assert r.status_code == 404 and set(r.json()) == {"error"}


def test_a_header_length_that_is_a_digit_but_not_ascii_is_refused(api):
    body = b'{"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0]}]}'
    r = api.post(f"/v2/models/{NAME}/infer", content=body,
                 headers={"Content-Type": "application/octet-stream",
                          "Inference-Header-Content-Length": "\u00b2".encode("latin-1")})
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"], r.text
