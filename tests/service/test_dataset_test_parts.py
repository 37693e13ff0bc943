"""Datasets that bring their own test set, in every format: statistics per part, jobs tested on that set
with validation cut from the training part alone, `test_split: 0` only where there is one, and every way a
test part can fail to fit refused with what to change."""

from __future__ import annotations

import io
import uuid
import zipfile

import numpy as np
import pytest

from models.datasets import FASHION_MNIST_DIR
from service.datasets.service import load_dataset
from service.platform.tables import Dataset
from tests import datafiles
from tests.helpers import artifact_files, unique

X, Y = datafiles.digits()
TRAIN_X, TRAIN_Y, TEST_X, TEST_Y = X[:1400], Y[:1400], X[1400:], Y[1400:]  # 1,400 and 397


def upload(client, name: str, *files: tuple[str, bytes], **fields):
    return client.post("/v1/datasets", data={"name": name, **fields}, files=[("file", f) for f in files])


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def split_zip(parts: dict[str, tuple[np.ndarray, np.ndarray]], top: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for part, (x, y) in parts.items():
            for i, (image, label) in enumerate(zip(x, y)):
                z.writestr(f"{top}{part}/{label}/{i:05d}.png", datafiles.png(image))
    return buffer.getvalue()


WITH_TEST_PARTS = {
    "idx, MNIST's names": ([("train-images-idx3-ubyte.gz", datafiles.idx(TRAIN_X, gz=True)),
                            ("t10k-labels-idx1-ubyte.gz", datafiles.idx(TEST_Y, gz=True)),
                            ("train-labels-idx1-ubyte.gz", datafiles.idx(TRAIN_Y, gz=True)),
                            ("t10k-images-idx3-ubyte.gz", datafiles.idx(TEST_X, gz=True))], {}),
    "idx, test_files": ([("a.idx", datafiles.idx(TRAIN_X)), ("b.idx", datafiles.idx(TRAIN_Y)),
                         ("c.idx", datafiles.idx(TEST_X)), ("d.idx", datafiles.idx(TEST_Y))],
                        {"test_files": "c.idx, d.idx"}),
    "npz": ([("digits.npz", npz(x=TRAIN_X, y=TRAIN_Y, x_test=TEST_X, y_test=TEST_Y))], {}),
    "npz, Keras' names": ([("mnist.npz", npz(x_train=TRAIN_X, y_train=TRAIN_Y, x_test=TEST_X, y_test=TEST_Y))], {}),
    "image_csv": ([("digits_train.csv", datafiles.image_csv(TRAIN_X, TRAIN_Y)),
                   ("digits_test.csv", datafiles.image_csv(TEST_X, TEST_Y))], {}),
    "image_zip": ([("digits.zip", split_zip({"train": (TRAIN_X, TRAIN_Y), "test": (TEST_X, TEST_Y)}, "digits/"))],
                  {}),
}


@pytest.mark.parametrize("kind", WITH_TEST_PARTS)
def test_a_dataset_with_its_own_test_set_is_tested_on_it(runtime, client, run_job, kind):
    files, fields = WITH_TEST_PARTS[kind]
    name = unique("with-test")
    response = upload(client, name, *files, **fields)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["has_test_set"] is True
    stats = body["stats"]
    assert stats["samples"] == 1400 and stats["class_histogram"] == np.bincount(TRAIN_Y, minlength=10).tolist()
    assert stats["test"]["samples"] == 397
    assert stats["test"]["class_histogram"] == np.bincount(TEST_Y, minlength=10).tolist()
    assert stats["test"]["pixel_mean"] == pytest.approx(TEST_X.mean())

    with runtime.session() as session:  # what a worker loads: both parts exactly as sent
        data = load_dataset(session.get(Dataset, uuid.UUID(body["id"])), runtime.store)
    order = np.argsort(data.y.numpy(), kind="stable") if kind == "image_zip" else slice(None)  # a ZIP is by class
    expected = np.argsort(TRAIN_Y, kind="stable") if kind == "image_zip" else slice(None)
    assert np.array_equal(data.x[:, 0].numpy()[order], TRAIN_X[expected])
    assert np.array_equal(np.sort(data.test.y.numpy()), np.sort(TEST_Y))

    spec = {"dataset": name, "architecture": {"type": "logistic_regression"}, "optimizer": {"type": "adam"},
            "training": {"epochs": 8, "learning_rate": 0.01, "test_split": 0, "validation_split": 0.25}}
    job = client.post("/v1/jobs", json=spec)
    assert job.status_code == 202, job.text
    run_job(job.json()["id"])
    done = client.get(f"/v1/jobs/{job.json()['id']}").json()
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["test_set"] == "dataset" and done["result"]["test_samples"] == 397
    assert sum(sum(row) for row in done["result"]["confusion_matrix"]) == 397
    assert done["result"]["test_accuracy"] > 0.85


def test_validation_is_cut_from_the_training_part_alone(client, run_job):
    name = unique("with-test")
    upload(client, name, ("d.npz", npz(x=TRAIN_X, y=TRAIN_Y, x_test=TEST_X, y_test=TEST_Y)))
    spec = {"dataset": name, "architecture": {"type": "logistic_regression"}, "optimizer": {"type": "adam"},
            "training": {"epochs": 1, "validation_split": 0.25}}  # the default test_split is unused here
    job = client.post("/v1/jobs", json=spec).json()
    run_job(job["id"])
    done = client.get(f"/v1/jobs/{job['id']}").json()
    result = done["result"]
    assert result["test_set"] == "dataset" and result["test_samples"] == 397  # untouched by the splits
    assert (result["train_samples"], result["validation_samples"]) == (1050, 350)  # a quarter of the 1,400

    plain = client.post("/v1/jobs", json={**spec, "dataset": "digits"}).json()
    run_job(plain["id"])
    result = client.get(f"/v1/jobs/{plain['id']}").json()["result"]
    assert result["test_set"] == "split" and result["test_samples"] == round(1797 * 0.2)
    assert result["train_samples"] + result["validation_samples"] + result["test_samples"] == 1797


def idx_pair(x, y, prefix: str = "t10k") -> list[tuple[str, bytes]]:
    return [(f"{prefix}-images-idx3-ubyte", datafiles.idx(x)), (f"{prefix}-labels-idx1-ubyte", datafiles.idx(y))]


LOW = TRAIN_Y < 5  # a training part with classes 0-4 only
REFUSED = {
    "idx test images of another size": (idx_pair(TRAIN_X, TRAIN_Y, "train") + idx_pair(TEST_X[:, :4, :4], TEST_Y), {},
                                        "the test part's images are 4x4 but the training part's are 8x8"),
    "idx test classes the training part lacks": (
        idx_pair(TRAIN_X[LOW], TRAIN_Y[LOW], "train") + idx_pair(TEST_X, TEST_Y), {},
        "the test part has label(s) 5, 6, 7, 8, 9 that the training part lacks"),
    "idx only a test part": (idx_pair(TEST_X, TEST_Y), {}, "only a test part was sent"),
    "idx three files": (idx_pair(TRAIN_X, TRAIN_Y, "train") + idx_pair(TEST_X, TEST_Y)[:1], {},
                        "idx takes two files (images and labels), and as many again for a test part; got 2 "
                        "training and 1 test file(s)"),
    "test_files names a file not sent": (idx_pair(TRAIN_X, TRAIN_Y, "train"), {"test_files": "other.idx"},
                                         "test_files names other.idx, which is not among the uploaded files"),
    "csv of another shape": ([("train.csv", datafiles.image_csv(TRAIN_X, TRAIN_Y)),
                              ("test.csv", datafiles.image_csv(TEST_X[:, :4, :4], TEST_Y))], {},
                             "the test part's images are 4x4"),
    "two csv files, neither a test": ([("a.csv", datafiles.image_csv(TRAIN_X, TRAIN_Y)),
                                       ("b.csv", datafiles.image_csv(TEST_X, TEST_Y))], {},
                                      "image_csv takes one file, and as many again for a test part; got 2 training"),
    "npz only a test part": ([("d.npz", npz(x_test=TEST_X, y_test=TEST_Y))], {}, "only a test part (x_test, y_test)"),
    "npz x_test without y_test": ([("d.npz", npz(x=TRAIN_X, y=TRAIN_Y, x_test=TEST_X))], {},
                                  "x_test without y_test"),
    "npz test of another shape": ([("d.npz", npz(x=TRAIN_X, y=TRAIN_Y, x_test=TEST_X[:, :4], y_test=TEST_Y))], {},
                                  "the test part's images are 4x8"),
    "npz as two files": ([("d.npz", npz(x=TRAIN_X, y=TRAIN_Y)), ("d_test.npz", npz(x=TEST_X, y=TEST_Y))],
                         {"format": "npz"}, "npz takes one file; its test set goes inside it: arrays x_test and "
                                            "y_test"),
    "zip only a test folder": ([("d.zip", split_zip({"test": (TEST_X[:50], TEST_Y[:50])}))], {},
                               "only a test/ folder"),
    "zip test class the training part lacks": (
        [("d.zip", split_zip({"train": (TRAIN_X[LOW][:100], TRAIN_Y[LOW][:100]), "test": (TEST_X[:50], TEST_Y[:50])}))],
        {}, "the test part has class(es) 5, 6, 7, 8, 9 that the training part lacks"),
    "time series with a test file": ([("power.csv", datafiles.timeseries_csv(48)),
                                      ("power_test.csv", datafiles.timeseries_csv(48))], {"format": "timeseries_csv"},
                                     "a time series is tested on its last part, in time order"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_test_part_that_does_not_fit_is_refused(runtime, client, case):
    files, fields, message = REFUSED[case]
    name = unique("bad-test")
    before = artifact_files(runtime)
    response = upload(client, name, *files, **fields)
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]["message"]
    assert client.get(f"/v1/datasets/{name}").status_code == 404
    assert artifact_files(runtime) == before


def job(dataset: str, **training) -> dict:
    return {"dataset": dataset, "architecture": {"type": "logistic_regression"}, "training": training}


def test_test_split_0_needs_a_dataset_with_its_own_test_set(client):
    response = client.post("/v1/jobs", json=job("digits", test_split=0))
    assert response.status_code == 422
    error = response.json()["error"]
    assert "training.test_split 0: dataset digits@1 has no test set of its own" in error["message"]
    assert error["details"] == [{"field": "training.test_split", "message": "the dataset has no test set"}]
    assert client.get("/v1/datasets/digits").json()["has_test_set"] is False

    response = client.post("/v1/jobs", json=job("digits", test_split=0.01))
    assert response.status_code == 422 and "0.05 to 0.5, or 0 with a dataset" in response.text
    forecast = {"task": "forecast", "dataset": "solar", "forecast": {"target": "solar.current"},
                "architecture": {"type": "persistence"}, "training": {"test_split": 0}}
    response = client.post("/v1/jobs", json=forecast)
    assert response.status_code == 422 and "tested on the series' last part" in response.text


@pytest.mark.skipif(not (FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_takes_test_split_0_and_reports_its_parts(client):
    body = client.get("/v1/datasets/fashion-mnist").json()
    assert body["has_test_set"] is True
    assert body["stats"]["samples"] == 60000 and body["stats"]["test"]["samples"] == 10000
    assert body["stats"]["test"]["class_histogram"] == [1000] * 10
    assert client.post("/v1/jobs", json=job("fashion-mnist", test_split=0)).status_code == 202


def test_the_same_files_with_another_test_part_are_another_version(client):
    name = unique("parts")
    files = [("a.idx", datafiles.idx(TRAIN_X)), ("b.idx", datafiles.idx(TRAIN_Y)),
             ("c.idx", datafiles.idx(TEST_X)), ("d.idx", datafiles.idx(TEST_Y))]
    first = upload(client, name, *files, test_files="c.idx,d.idx")
    again = upload(client, name, *reversed(files), test_files="d.idx,c.idx")  # the same parts: the same dataset
    assert (first.status_code, again.status_code) == (201, 200) and again.json()["id"] == first.json()["id"]
    swapped = upload(client, name, *files, test_files="a.idx,b.idx")  # the same bytes, the other part tested on
    assert swapped.status_code == 201 and swapped.json()["version"] == 2
    assert swapped.json()["stats"]["samples"] == 397 and swapped.json()["stats"]["test"]["samples"] == 1400
    plain = upload(client, unique("plain"), *files[:2])  # without a test part, the hash is as it always was
    from service.datasets.service import Upload

    assert plain.json()["sha256"] == Upload(files[:2]).sha256
