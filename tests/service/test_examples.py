"""The job specs in examples/ (the course's labs among them) are specs the API takes as they are, and the
labs' digits reach the accuracy docs/labs.md quotes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_is_an_example_for_every_lab():
    assert {"lab1-logistic-regression.yaml", "lab2-mlp.yaml", "lab3-solar.yaml"} <= {p.name for p in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_a_spec_the_api_takes(client, path):
    spec = yaml.safe_load(path.read_text())
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    assert client.post(f"/v1/jobs/{response.json()['id']}/cancel").status_code == 202  # leave nothing queued


@pytest.mark.slow
@pytest.mark.parametrize("migrated", ["sqlite"], indirect=True)  # training is the same on either database
@pytest.mark.parametrize("name, accuracy", [("lab1-logistic-regression.yaml", 0.88), ("lab2-mlp.yaml", 0.91)])
def test_the_digit_labs_reach_their_accuracy_on_real_mnist(client, run_job, name, accuracy):
    spec = yaml.safe_load((EXAMPLES[0].parent / name).read_text())
    job = client.post("/v1/jobs", json=spec).json()
    run_job(job["id"])
    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["test_accuracy"] >= accuracy, done["result"]["test_accuracy"]
