"""Every request has a ceiling: bodies, inflated bodies, images per call and their decoded pixels.

An app of this module's own runs with small limits, so that each ceiling is reached with a small request.
"""

from __future__ import annotations

import gzip
import io

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.main import create_app
from tests.helpers import assert_error, settings_with

LIMIT = 200_000


@pytest.fixture(scope="module")
def api(runtime, trained_classifier):
    settings = settings_with(runtime, max_request_bytes=LIMIT, max_batch=3, max_request_pixels=2_000_000)
    with TestClient(create_app(settings, reconcile=False, tune_process=False)) as c:
        c.model_id = trained_classifier["id"]
        yield c


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("L", (width, height))
    image.paste(255, (width // 3, height // 3, width // 2, height // 2))  # some ink
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def chunks(body: bytes, size: int = 16_384):
    for i in range(0, len(body), size):
        yield body[i:i + size]


def too_big_json(model: str) -> bytes:
    return orjson.dumps({"instances": [[1.0] * 64] * 2000, "model": model})


@pytest.mark.parametrize("path", ["/predict", "/forecast", "/v1/jobs"])
def test_a_body_past_the_ceiling_is_refused_with_the_setting_to_change(api, path):
    body = too_big_json(api.model_id)
    assert len(body) > LIMIT
    error = assert_error(api.post(path, content=body, headers={"content-type": "application/json"}), 413,
                         f"{LIMIT:,}-byte limit (TRAINSERVE_MAX_REQUEST_BYTES)")
    assert error["code"] == "payload_too_large"
    # without a Content-Length, counted as it arrives
    response = api.post(path, content=chunks(body), headers={"content-type": "application/json"})
    assert_error(response, 413, "TRAINSERVE_MAX_REQUEST_BYTES")


def test_v2_refuses_a_body_past_the_ceiling_and_a_compressed_one_that_inflates_past_it(api):
    body = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [1.0] * 64}],
                         "id": "x" * (LIMIT + 10)})
    response = api.post(f"/v2/models/{api.model_id}/infer", content=body)
    assert response.status_code == 413 and "TRAINSERVE_MAX_REQUEST_BYTES" in response.json()["error"]
    bomb = gzip.compress(b" " * 5_000_000 + body[:LIMIT // 2])
    assert len(bomb) < LIMIT
    response = api.post(f"/v2/models/{api.model_id}/infer", content=bomb, headers={"content-encoding": "gzip"})
    assert response.status_code == 413 and "expands past the 200,000-byte limit" in response.json()["error"]


def test_more_images_than_a_batch_is_a_413_like_more_instances(api):
    files = [("images", (f"{i}.png", png(28, 28), "image/png")) for i in range(4)]
    assert_error(api.post("/predict", files=files, data={"model": api.model_id}), 413,
                 "more than 3 images in one request", "TRAINSERVE_MAX_BATCH")
    assert_error(api.post("/predict", json={"instances": [[1.0] * 64] * 4, "model": api.model_id}), 413,
                 "at most 3 per call")


def test_images_are_refused_by_their_decoded_pixels_before_decoding(api):
    one = png(1200, 1200)  # 1.44 million pixels in a few kilobytes
    assert len(one) < 20_000
    ok = api.post("/predict", files=[("images", ("a.png", one, "image/png"))], data={"model": api.model_id})
    assert ok.status_code == 200, ok.text
    two = [("images", (name, one, "image/png")) for name in ("a.png", "b.png")]
    assert_error(api.post("/predict", files=two, data={"model": api.model_id}), 413,
                 "b.png: the images up to this one decode to 2,880,000 pixels", "2,000,000-pixel limit",
                 "TRAINSERVE_MAX_REQUEST_PIXELS")


def test_booleans_are_not_pixels(api):
    assert_error(api.post("/predict", json={"instances": [[True] * 64], "model": api.model_id}), 422,
                 "true or false")
    assert_error(api.post("/predict", json={"instances": [[1.0] * 63 + [False]], "model": api.model_id}), 422,
                 "true or false")
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [True] * 64}]}
    response = api.post(f"/v2/models/{api.model_id}/infer", json=body)
    assert response.status_code == 400 and "true or false" in response.json()["error"]
    # the word alone is no reason to refuse
    digits = np.zeros((1, 64)).tolist()
    response = api.post("/predict", json={"instances": digits, "model": api.model_id, "top_k": 2})
    assert response.status_code == 200
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": digits[0]}],
            "id": "true-or-false"}
    assert api.post(f"/v2/models/{api.model_id}/infer", json=body).status_code == 200
