"""Which queue a job goes to: device cuda to the GPU queue (and only where GPU workers exist), auto there too
where they do, cpu to the CPU queue; the answer says which, and the reconciler resends to the same queue."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from service.jobs.service import jobs_to_resend
from service.main import create_app
from service.platform.tables import utcnow
from tests.helpers import LOGREG_SPEC, assert_error, settings_with


def on(device: str) -> dict:
    return {**LOGREG_SPEC, "training": {**LOGREG_SPEC["training"], "device": device}}


@pytest.fixture
def gpu_client(runtime, migrated):
    with TestClient(create_app(settings_with(runtime, gpu_workers=True), reconcile=False, tune_process=False)) as c:
        yield c


@pytest.fixture
def cpu_only_client(runtime, migrated):
    with TestClient(create_app(settings_with(runtime, gpu_workers=False), reconcile=False, tune_process=False)) as c:
        yield c


@pytest.mark.parametrize(("device", "queue"), [("cuda", "trainserve-gpu"), ("auto", "trainserve-gpu"),
                                               ("cpu", "trainserve")])
def test_where_gpu_workers_exist_cuda_and_auto_jobs_go_to_the_gpu_queue(gpu_client, device, queue):
    r = gpu_client.post("/v1/jobs", json=on(device))
    assert r.status_code == 202, r.text
    assert r.json()["queue"] == queue
    assert gpu_client.get(r.headers["Location"]).json()["queue"] == queue


@pytest.mark.parametrize("device", ["auto", "cpu"])
def test_without_gpu_workers_jobs_go_to_the_cpu_queue(cpu_only_client, device):
    r = cpu_only_client.post("/v1/jobs", json=on(device))
    assert r.status_code == 202, r.text
    assert r.json()["queue"] == "trainserve"


def test_a_cuda_job_where_no_gpu_worker_exists_is_refused_not_left_queued(cpu_only_client):
    before = cpu_only_client.get("/v1/jobs").json()["total"]
    r = assert_error(cpu_only_client.post("/v1/jobs", json=on("cuda")), 422, "no GPU worker",
                     "use device auto", "TRAINSERVE_GPU_WORKERS=true")
    assert r["details"][0]["field"] == "training.device"
    assert cpu_only_client.get("/v1/jobs").json()["total"] == before, "no job row was written"


def test_the_reconciler_sends_a_lost_job_to_the_queue_it_was_given(runtime, gpu_client):
    job = gpu_client.post("/v1/jobs", json=on("cuda")).json()
    with runtime.session() as session:
        resent = dict(jobs_to_resend(session, utcnow() + timedelta(hours=1), timedelta(minutes=10), 3))
    assert resent[uuid.UUID(job["id"])] == "trainserve-gpu"
