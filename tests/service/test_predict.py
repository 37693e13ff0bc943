"""/predict in this process, on a model trained by the worker's own code."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from tests.datafiles import digits, npz
from tests.helpers import LOGREG_SPEC, assert_error, digits_test_split


@pytest.fixture(scope="module")
def api(runtime, trained_classifier):
    with TestClient(create_app(runtime=runtime, reconcile=False, tune_process=False)) as c:
        c.model_id = trained_classifier["id"]
        yield c


@pytest.fixture(scope="module")
def test_digits():
    split = digits_test_split()
    return split.x.numpy()[:, 0], split.y.numpy()


def test_predicts_test_digits_given_as_rows_or_flat(api, test_digits):
    images, labels = test_digits
    for instances in (images.tolist(), images.reshape(len(images), -1).tolist()):
        r = api.post("/predict", json={"instances": instances, "model": api.model_id})
        assert r.status_code == 200, r.text
        body = r.json()
        predicted = np.array([p["label"] for p in body["predictions"]])
        assert (predicted == labels).mean() >= 0.9
        assert body["model"]["id"] == api.model_id and body["model"]["version"] >= 1
        probabilities = np.array([p["probabilities"] for p in body["predictions"]])
        assert probabilities.shape == (len(labels), 10) and np.allclose(probabilities.sum(1), 1, atol=1e-4)


@pytest.mark.slow
def test_the_default_model_moves_only_when_a_version_is_promoted(own_api, test_digits):
    """Without 'model', /predict answers from the one classifier at production; another job, even a newer
    one on other data, does not change that. None or several at production: a 422 that lists the choices."""
    api, digit = own_api, {"instances": [test_digits[0][0].tolist()]}

    def train(name: str, **spec) -> dict:
        job = api.post("/v1/jobs", json={**LOGREG_SPEC, "name": name, **spec}).json()
        api.run_job(job["id"])
        done = api.get(f"/v1/jobs/{job['id']}").json()
        assert done["status"] == "succeeded", done["error"]
        return done

    first = train("first", training={**LOGREG_SPEC["training"], "epochs": 3})
    assert_error(api.post("/predict", json=digit), 422, "no classifier is at production yet", "first@1",
                 "trainserve models promote")
    verdict = api.post("/v1/models/first/versions/1/promote", json={"alias": "production"}).json()
    assert verdict["moved"] and "clears chance (" in verdict["reason"], verdict
    served = api.post("/predict", json=digit)
    assert served.status_code == 200 and served.json()["model"]["id"] == first["model"]["id"], served.text

    # a newer classifier, on the same digits scaled to 0-255 (another upload), is not the default
    upload = api.post("/v1/datasets", data={"name": "digits-255"}, files={"file": ("d.npz", npz(*digits()))})
    assert upload.status_code in (200, 201), upload.text
    second = train("second", dataset="digits-255", training={**LOGREG_SPEC["training"], "epochs": 3,
                                                              "learning_rate": 0.001})
    served = api.post("/predict", json=digit)
    assert served.status_code == 200 and served.json()["model"]["id"] == first["model"]["id"], served.text
    assert api.post("/predict", json={**digit, "model": "second"}).json()["model"]["id"] == second["model"]["id"]

    assert api.put("/v1/models/second/aliases/production", json={"version": 1}).status_code == 200
    assert_error(api.post("/predict", json=digit), 422, "several classifiers are at production",
                 "first@production, second@production", "TRAINSERVE_DEFAULT_CLASSIFIER")


@pytest.mark.parametrize("body,status,fragment", [
    ({"instances": [[1.0] * 63]}, 422, "expects 64 pixels per instance, flat or as 8x8 rows; got instances of shape 63"),
    ({"instances": [[[1.0] * 4] * 16]}, 422, "expects 64 pixels"),
    ({"instances": [[1.0] * 64, [1.0] * 10]}, 422, "same shape"),
    ({"instances": [["a"] * 64]}, 422, "list of numbers"),
    ({"instances": [[17.0] * 64]}, 422, "must lie in [0, 16]"),
    ({"instances": [[-1.0] * 64]}, 422, "must lie in [0, 16]"),
    ({"instances": []}, 422, "non-empty list"),
    ({"instances": [1, 2]}, 422, "expects 64 pixels"),
    ({"pixels": [[1.0] * 64]}, 422, '"instances"'),
    ({"instances": [[1.0] * 64], "top": 3}, 422, "unknown field(s) top"),
    ({"instances": [[1.0] * 64], "model": 7}, 422, "must be a model id, name, name@version or name@alias"),
    ({"instances": [[1.0] * 64], "model": "abc"}, 404, "no model named 'abc'"),
    ({"instances": [[1.0] * 64], "model": "digits-logistic_regression@99"}, 404, "has no version 99"),
    ({"instances": [[1.0] * 64], "model": "digits-logistic_regression@staging"}, 404, "has no alias 'staging'"),
    ({"instances": [[1.0] * 64], "model": "3f2b6c1e-0000-4000-8000-000000000000"}, 404, "no model with id"),
    ({"instances": [[1.0] * 64] * 1025}, 413, "at most 1024"),
])
def test_bad_predict_requests_say_what_to_change(api, body, status, fragment):
    assert_error(api.post("/predict", json={"model": api.model_id, **body}), status, fragment)


def test_non_finite_and_non_json_bodies(api):
    # JSON has no NaN or infinity: such a body is not JSON, and says so
    assert_error(api.post("/predict", content=b'{"instances": [[NaN' + b", 1" * 63 + b"]]}"), 422, "not valid JSON")
    assert_error(api.post("/predict", content=b'{"instances": [[1e400' + b", 1" * 63 + b"]]}"), 422, "not valid JSON")
    assert_error(api.post("/predict", content=b"\xff\xfe"), 422, "not valid JSON")


def test_large_and_small_bodies_get_the_same_answers(api, test_digits):
    """Bodies above SMALL_BODY are parsed and run off the event loop; the answers must not differ."""
    from service.serving.routing import SMALL_BODY

    images = test_digits[0]
    small = api.post("/predict", json={"instances": images[:10].tolist(), "model": api.model_id}).json()
    many = np.concatenate([images] * 2)  # 718 digits
    body = {"instances": many.tolist(), "model": api.model_id}
    assert len(json.dumps(body)) > SMALL_BODY
    large = api.post("/predict", json=body).json()["predictions"][:10]
    # Padded matrix products of different sizes may differ in the last bit: labels exactly, the rest closely.
    assert [p["label"] for p in large] == [p["label"] for p in small["predictions"]]
    assert np.allclose([p["probabilities"] for p in large], [p["probabilities"] for p in small["predictions"]],
                       atol=2e-6)


def test_concurrent_requests_share_forward_passes_and_each_gets_its_own_answer(api, test_digits):
    """Requests that are ready together are batched (service/serving/batching.py); a bad one among them
    fails alone."""
    import asyncio

    import httpx

    images = test_digits[0][:15]
    bodies = [{"instances": [image.tolist()], "model": api.model_id, "top_k": 1 + i % 4} for i, image in
              enumerate(images)]
    bodies.insert(7, {"instances": [[99.0] * 64], "model": api.model_id})
    alone = [api.post("/predict", json=body) for body in bodies]
    batcher = api.app.state.batcher
    requests, passes = batcher.requests, batcher.passes

    async def together() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://t") as client:
            return await asyncio.gather(*(client.post("/predict", json=body) for body in bodies))

    responses = asyncio.run(together())
    assert batcher.requests - requests == 15 and batcher.passes - passes < 15
    for one, batched in zip(alone, responses):
        if one.status_code != 200:
            assert assert_error(batched, 422, "must lie in [0, 16]") == assert_error(one, 422)
            continue
        assert batched.status_code == 200, batched.text
        a, b = one.json(), batched.json()
        assert a["model"] == b["model"] and len(a["predictions"]) == len(b["predictions"]) == 1
        pa, pb = a["predictions"][0], b["predictions"][0]
        assert pa["label"] == pb["label"] and [t["label"] for t in pa["top_k"]] == [t["label"] for t in pb["top_k"]]
        assert np.abs(np.array(pa["probabilities"]) - np.array(pb["probabilities"])).max() <= 2e-6
