"""Each registered model gets TorchScript and ONNX exports after its job, checked against the eager model on
the job's own held-out data; all three formats download and run in their own runtimes. Runs the worker's own
code in this process; tests/workers/test_end_to_end.py does the same through real worker processes."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from models.dataformats import parse_idx
from models.datasets import split_dataset
from models.export import model_from_bytes, tensor_from_bytes
from service.registry.exports import run_export
from tests import datafiles
from tests.helpers import LOGREG_SPEC, assert_error, digits_test_split, unique


def trained(client, run_job, spec: dict) -> dict:
    job = client.post("/v1/jobs", json=spec)
    assert job.status_code == 202, job.text
    run_job(job.json()["id"])
    done = client.get(f"/v1/jobs/{job.json()['id']}").json()
    assert done["status"] == "succeeded", done["error"]
    return client.get(f"/v1/models/{done['model']['id']}").json()


def downloads(client, model: dict) -> dict[str, bytes]:
    files = {}
    for fmt in ("pt", "torchscript", "onnx"):
        r = client.get(f"/v1/models/{model['id']}/download", params={"format": fmt})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/octet-stream"
        assert f'{model["name"]}-v{model["version"]}.' in r.headers["content-disposition"]
        files[fmt] = r.content
    return files


def outputs_in_each_runtime(runtime, files: dict[str, bytes], x: torch.Tensor, names: tuple[str, str]) -> list[np.ndarray]:
    eager, _ = model_from_bytes(files["pt"])
    scripted = torch.jit.load(io.BytesIO(files["torchscript"]))
    session = onnxruntime.InferenceSession(files["onnx"])
    with torch.no_grad():
        return [eager(x).numpy(), scripted(x).numpy(), session.run([names[1]], {names[0]: x.numpy()})[0]]


@pytest.fixture
def model(trained_classifier) -> dict:
    return trained_classifier


def test_exports_are_made_recorded_and_downloadable(runtime, client, model):
    assert_error(client.get(f"/v1/models/{model['id']}/download", params={"format": "onnx"}), 409,
                 "not been made yet")
    run_export(runtime, uuid.UUID(model["id"]))
    exports = client.get(f"/v1/models/{model['id']}").json()["exports"]
    for fmt in ("torchscript", "onnx"):
        assert exports[fmt]["status"] == "ok" and exports[fmt]["max_abs_difference"] <= 1e-4, exports

    test = digits_test_split()
    x = test.x[:50]
    served = [p["label"] for p in client.post("/predict", json={"instances": x[:, 0].tolist(), "model": model["id"]})
              .json()["predictions"]]
    for logits in outputs_in_each_runtime(runtime, downloads(client, model), x, ("pixels", "logits")):
        assert logits.argmax(1).tolist() == served


def test_a_model_trained_on_an_uploaded_idx_dataset_is_exported(runtime, client, run_job):
    """The parity check runs on the upload's own held-out part: no built-in dataset holds these images."""
    x, y = datafiles.digits(1200)
    x28 = np.pad(x, ((0, 0), (10, 10), (10, 10)))  # 28x28, like MNIST: a shape no built-in classifier has here
    name = unique("idx-digits")
    r = client.post("/v1/datasets", data={"name": name},
                    files=[("file", ("train-images-idx3-ubyte", datafiles.idx(x28))),
                           ("file", ("train-labels-idx1-ubyte", datafiles.idx(y)))])
    assert r.status_code == 201, r.text
    model = trained(client, run_job, {**LOGREG_SPEC, "dataset": f"{name}@1", "name": name})
    assert model["input_shape"] == [1, 28, 28]
    # The inputs the exports are checked on: the upload's own test part, cut as the job cut it.
    uploaded = parse_idx([("images", datafiles.idx(x28)), ("labels", datafiles.idx(y))])
    test = split_dataset(uploaded, validation_split=0.1, test_split=0.2, seed=0).test
    saved = tensor_from_bytes(runtime.store.get(f"models/{model['id']}/held-out.pt"))
    assert len(saved) == min(256, len(test)) and torch.equal(saved, test.x[:256])
    run_export(runtime, uuid.UUID(model["id"]))
    exports = client.get(f"/v1/models/{model['id']}").json()["exports"]
    assert {f: e["status"] for f, e in exports.items()} == {"torchscript": "ok", "onnx": "ok"}, exports
    images = torch.from_numpy(x28[-40:].astype(np.float32)).unsqueeze(1)
    eager, scripted, onnx = outputs_in_each_runtime(runtime, downloads(client, model), images, ("pixels", "logits"))
    assert np.allclose(scripted, eager, atol=1e-4) and np.allclose(onnx, eager, atol=1e-4)
    assert (eager.argmax(1) == y[-40:]).mean() >= 0.8


def test_a_forecaster_trained_on_an_uploaded_csv_is_exported(runtime, client, run_job):
    name = unique("sensor")
    r = client.post("/v1/datasets", data={"name": name},
                    files=[("file", ("sensor.csv", datafiles.timeseries_csv(600)))])
    assert r.status_code == 201, r.text
    spec = {"task": "forecast", "dataset": name, "name": name,
            "forecast": {"target": "power", "inputs": ["temperature"], "lookback": 12, "horizon": 3},
            "architecture": {"type": "lstm", "hidden_size": 8}, "optimizer": {"type": "adam"},
            "training": {"epochs": 2, "batch_size": 32, "learning_rate": 0.01}}
    model = trained(client, run_job, spec)
    run_export(runtime, uuid.UUID(model["id"]))
    exports = client.get(f"/v1/models/{model['id']}").json()["exports"]
    assert {f: e["status"] for f, e in exports.items()} == {"torchscript": "ok", "onnx": "ok"}, exports
    windows = torch.rand(20, *model["input_shape"])
    eager, scripted, onnx = outputs_in_each_runtime(runtime, downloads(client, model), windows, ("window", "forecast"))
    assert eager.shape == (20, 3)
    assert np.allclose(scripted, eager, atol=1e-5) and np.allclose(onnx, eager, atol=1e-5)


def test_a_failed_export_is_recorded_with_its_reason_and_the_model_still_serves(runtime, client, run_job):
    """The held-out inputs saved with the model are damaged in the store: the export fails, says why, and can
    be asked for again."""
    x, y = datafiles.digits(600)
    name = unique("damaged")
    client.post("/v1/datasets", data={"name": name}, files=[("file", ("digits.npz", datafiles.npz(x, y)))])
    model = trained(client, run_job, {**LOGREG_SPEC, "dataset": name, "name": name})
    data_file = Path(runtime.store.root) / f"models/{model['id']}/held-out.pt"
    original = data_file.read_bytes()
    data_file.write_bytes(b"not the bytes that were stored")
    try:
        run_export(runtime, uuid.UUID(model["id"]))
    finally:
        data_file.write_bytes(original)
    record = client.get(f"/v1/models/{model['id']}").json()
    for fmt in ("torchscript", "onnx"):
        assert record["exports"][fmt]["status"] == "failed", record["exports"]
        assert "held-out inputs" in record["exports"][fmt]["error"]
    r = client.get(f"/v1/models/{model['id']}/download", params={"format": "onnx"})
    assert_error(r, 409, "export of", "failed", "held-out inputs")
    assert client.get(f"/v1/jobs/{record['job_id']}").json()["status"] == "succeeded"
    assert client.post("/predict", json={"instances": x[:2].tolist(), "model": model["id"]}).status_code == 200

    assert client.post(f"/v1/models/{model['id']}/exports").status_code == 202  # ask again
    run_export(runtime, uuid.UUID(model["id"]))  # what the export worker does with that message
    assert client.get(f"/v1/models/{model['id']}").json()["exports"]["onnx"]["status"] == "ok"


def test_download_needs_a_known_format(client, model):
    assert_error(client.get(f"/v1/models/{model['id']}/download", params={"format": "tflite"}), 422, "format")
