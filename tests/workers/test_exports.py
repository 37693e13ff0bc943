"""Each registered model gets TorchScript and ONNX exports after its job, checked against the eager model;
all three formats download and run. Runs the worker's own code in this process."""

from __future__ import annotations

import io
import uuid

import onnxruntime
import pytest
import torch

from models.datasets import load_builtin, split_dataset
from models.export import model_from_bytes
from service.settings import get_settings
from tests.conftest import LOGREG_SPEC
from tests.service.test_jobs_api import assert_error
from workers.exports import run_export


@pytest.fixture
def model(client, run_job) -> dict:
    job = client.post("/v1/jobs", json={**LOGREG_SPEC, "name": f"exp-{uuid.uuid4().hex[:8]}"}).json()
    run_job(job["id"])
    return client.get(f"/v1/jobs/{job['id']}").json()["model"]


def test_exports_are_made_recorded_and_downloadable(client, model):
    ref = f"{model['name']}@{model['version']}"
    assert_error(client.get(f"/v1/models/{ref}/download", params={"format": "onnx"}), 409, "not been made yet")
    run_export(uuid.UUID(model["id"]))
    exports = client.get(f"/v1/models/{ref}").json()["exports"]
    for fmt in ("torchscript", "onnx"):
        assert exports[fmt]["status"] == "ok" and exports[fmt]["max_abs_difference"] <= 1e-4, exports

    test = split_dataset(load_builtin("digits"), validation_split=0.1, test_split=0.2, seed=0).test
    x = test.x[:50]
    served = [p["label"] for p in client.post("/predict", json={"instances": x[:, 0].tolist(), "model": ref})
              .json()["predictions"]]
    files = {fmt: client.get(f"/v1/models/{ref}/download", params={"format": fmt}) for fmt in ("pt", "torchscript", "onnx")}
    for fmt, r in files.items():
        assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
        assert f'{model["name"]}-v{model["version"]}.' in r.headers["content-disposition"]
    eager, _ = model_from_bytes(files["pt"].content)
    scripted = torch.jit.load(io.BytesIO(files["torchscript"].content))
    onnx = onnxruntime.InferenceSession(files["onnx"].content)
    for logits in (eager(x), scripted(x), torch.from_numpy(onnx.run(["logits"], {"pixels": x.numpy()})[0])):
        assert logits.argmax(1).tolist() == served


def test_a_failed_export_is_recorded_and_the_model_still_serves(client, model, monkeypatch):
    monkeypatch.setattr(get_settings(), "export_tolerance", 0.0)  # nothing can be that exact
    run_export(uuid.UUID(model["id"]))
    record = client.get(f"/v1/models/{model['id']}").json()
    assert record["exports"]["onnx"]["status"] == "failed" and "tolerance" in record["exports"]["onnx"]["error"]
    assert client.get(f"/v1/jobs/{record['job_id']}").json()["status"] == "succeeded"
    assert_error(client.get(f"/v1/models/{model['id']}/download", params={"format": "onnx"}), 409,
                 "export of", "failed")
    assert client.post("/predict", json={"instances": [[0.0] * 64], "model": model["id"]}).status_code == 200

    monkeypatch.setattr(get_settings(), "export_tolerance", 1e-4)
    assert client.post(f"/v1/models/{model['id']}/exports").status_code == 202  # ask again
    run_export(uuid.UUID(model["id"]))  # what the worker does with that message
    assert client.get(f"/v1/models/{model['id']}").json()["exports"]["onnx"]["status"] == "ok"


def test_download_needs_a_known_format(client, model):
    assert_error(client.get(f"/v1/models/{model['id']}/download", params={"format": "tflite"}), 422, "format")
