"""Two real workers on two queues: a CPU worker (`--queues jobs`) and a GPU worker (`--queues gpu
--max-tasks-per-child 1`, as deploy/k8s runs it). A job for a GPU is never taken by the CPU worker; auto jobs
go to the GPU worker where GPU workers exist. This machine has no GPU, so the GPU worker's auto jobs train on
its CPU and a cuda job fails there with the reason: what matters here is who takes what."""

from __future__ import annotations

import contextlib
import signal

import pytest
import torch

from tests.helpers import LOGREG_SPEC, REDIS_URL, new_postgres_database, unique
from tests.stack import Stack

pytestmark = pytest.mark.slow


def on(device: str, epochs: int = 15, **training) -> dict:
    return {**LOGREG_SPEC, "training": {**LOGREG_SPEC["training"], "epochs": epochs, "device": device, **training}}


@contextlib.contextmanager
def gpu_stack(tmp_path, backend):
    env = {"TRAINSERVE_HOME": str(tmp_path), "TRAINSERVE_GPU_WORKERS": "true"}
    with contextlib.ExitStack() as resources:
        if backend == "realstack":
            env.update(TRAINSERVE_DATABASE_URL=resources.enter_context(new_postgres_database()),
                       TRAINSERVE_BROKER_URL=REDIS_URL, TRAINSERVE_QUEUE=unique("trainserve-route"))
        yield resources.enter_context(Stack.start(env, workers=0))


@pytest.mark.parametrize("backend", ["embedded", pytest.param("realstack", marks=pytest.mark.realstack)])
def test_gpu_jobs_wait_for_a_gpu_worker_and_never_reach_a_cpu_worker(tmp_path, backend):
    with gpu_stack(tmp_path, backend) as stack:
        queue = stack.env.get("TRAINSERVE_QUEUE", "trainserve")
        cpu_worker = stack.spawn("worker", "--queues", "jobs")
        cpu_log = stack.logs[-1]
        cuda_job = stack.http.post("/v1/jobs", json=on("cuda")).json()
        auto_job = stack.http.post("/v1/jobs", json=on("auto")).json()
        cpu_job = stack.http.post("/v1/jobs", json=on("cpu")).json()
        assert (cuda_job["queue"], auto_job["queue"], cpu_job["queue"]) == (f"{queue}-gpu", f"{queue}-gpu", queue)

        done = stack.wait_for(cpu_job["id"])
        assert done["status"] == "succeeded" and done["result"]["test_accuracy"] >= 0.9, stack.tail_logs()
        # The CPU worker is idle now, with the two GPU jobs sent before the one it trained: it took neither.
        for job in (cuda_job, auto_job):
            waiting = stack.http.get(f"/v1/jobs/{job['id']}").json()
            assert waiting["status"] == "queued" and waiting["attempts"] == 0, waiting
        assert cpu_job["id"] in cpu_log.read_text()
        assert cuda_job["id"] not in cpu_log.read_text() and auto_job["id"] not in cpu_log.read_text()

        stack.spawn("worker", "--queues", "gpu", "--max-tasks-per-child", "1")
        gpu_log = stack.logs[-1]
        auto_done = stack.wait_for(auto_job["id"])
        assert auto_done["status"] == "succeeded" and auto_done["result"]["test_accuracy"] >= 0.9, stack.tail_logs()
        cuda_done = stack.wait_for(cuda_job["id"])
        if torch.cuda.is_available():
            assert cuda_done["status"] == "succeeded", cuda_done
        else:
            assert cuda_done["status"] == "failed" and "no usable GPU" in cuda_done["error"], cuda_done
        assert cuda_done["attempts"] == 1 and auto_done["attempts"] == 1
        log = gpu_log.read_text()
        assert auto_job["id"] in log and cuda_job["id"] in log
        assert "sees no CUDA device" in log or torch.cuda.is_available()
        assert cpu_worker.poll() is None


def test_a_stopped_gpu_worker_puts_the_job_in_its_child_back_in_the_gpu_queue(tmp_path):
    """One job per child process: SIGTERM reaches the worker's main process only, as Kubernetes sends it; the
    job in the child still stops at its next batch and goes back to the GPU queue."""
    with gpu_stack(tmp_path, "embedded") as stack:
        worker = stack.spawn("worker", "--queues", "gpu", "--max-tasks-per-child", "1")
        spec = {**on("auto", epochs=300, batch_size=8, learning_rate=0.0005),
                "architecture": {"type": "mlp", "hidden_sizes": [400, 200]}, "optimizer": {"type": "adam"}}
        job_id = stack.http.post("/v1/jobs", json=spec).json()["id"]
        stack.wait_for(job_id, {"running"}, predicate=lambda j: j["progress"]["epoch"] >= 1)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, stack.tail_logs()
        requeued = stack.http.get(f"/v1/jobs/{job_id}").json()
        assert requeued["status"] == "queued" and requeued["attempts"] == 1, requeued
        assert requeued["queue"] == "trainserve-gpu"
        assert stack.http.post(f"/v1/jobs/{job_id}/cancel").status_code == 202


def test_a_running_worker_keeps_its_liveness_file_fresh(tmp_path):
    """deploy/k8s's worker liveness probe: the age of TRAINSERVE_HOME/worker.alive, touched every 10 s."""
    with gpu_stack(tmp_path, "embedded") as stack:
        stack.spawn("worker", "--queues", "jobs")
        alive = tmp_path / "worker.alive"
        first = stack.wait_until(lambda: alive.stat().st_mtime if alive.exists() else None, what="worker.alive")
        stack.wait_until(lambda: True if alive.stat().st_mtime > first else None, what="a second beat", timeout=30)
