"""Several jobs at once: two worker processes, and one worker process with two child processes
(`--concurrency 2`). Each job runs once, and cancelling both stops both."""

from __future__ import annotations

import pytest

from tests.stack import Stack

pytestmark = pytest.mark.slow

SPEC = {"dataset": "digits", "architecture": {"type": "mlp", "hidden_sizes": [64]}, "optimizer": {"type": "adam"},
        "training": {"epochs": 300, "batch_size": 8, "learning_rate": 0.0005}}


def two_jobs_run_at_once(stack: Stack) -> None:
    ids = [stack.http.post("/v1/jobs", json=SPEC).json()["id"] for _ in range(2)]

    def both_running() -> list[dict] | None:
        jobs = [stack.http.get(f"/v1/jobs/{i}").json() for i in ids]
        return jobs if all(j["status"] == "running" and j["progress"]["epoch"] >= 1 for j in jobs) else None

    running = stack.wait_until(both_running, what="both jobs running at the same time", timeout=120)
    assert [j["attempts"] for j in running] == [1, 1]
    for i in ids:
        assert stack.http.post(f"/v1/jobs/{i}/cancel").status_code == 202
    for i in ids:
        done = stack.wait_for(i, timeout=60)
        assert done["status"] == "cancelled" and done["attempts"] == 1, done


def test_two_workers_run_two_jobs_at_once(tmp_path):
    with Stack.start({"TRAINSERVE_HOME": str(tmp_path)}, workers=2) as stack:
        two_jobs_run_at_once(stack)


def test_one_worker_with_two_child_processes_runs_two_jobs_at_once(tmp_path):
    with Stack.start({"TRAINSERVE_HOME": str(tmp_path)}, workers=0) as stack:
        stack.spawn("worker", "--concurrency", "2")
        two_jobs_run_at_once(stack)
