"""Submit-to-started latency of training jobs: how soon a job starts once a worker is free.

    python -m bench.dispatch          # needs PostgreSQL and Redis on 127.0.0.1 for the real-stack rows

Starts real `trainserve api` and `trainserve worker` processes, submits ten small digits jobs one after
another (each waited for, so a worker is idle when the next arrives) and reads each job's own `created_at`
and `started_at`. Each stack runs twice: one worker taking jobs and exports (so a finished job's export runs
before the next job), and a training worker beside an export worker (what `make run` and the compose file
start).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import psycopg

from bench.report import write_section

CLI = [sys.executable, "-m", "service.cli"]
JOBS = 10
SPEC = {"dataset": "digits", "architecture": {"type": "logistic_regression"},
        "optimizer": {"type": "sgd", "momentum": 0.9}, "training": {"epochs": 3, "learning_rate": 0.05}}
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_stack(env: dict[str, str], workers: list[str]) -> list[float]:
    home = Path(tempfile.mkdtemp(prefix="trainserve-dispatch-"))
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("TRAINSERVE_")}
    full.update(env, TRAINSERVE_HOME=str(home), TRAINSERVE_API_PORT=str(port), TRAINSERVE_ACCESS_LOG="false")
    subprocess.run([*CLI, "migrate"], env=full, check=True, capture_output=True)
    log = (home / "stack.log").open("wb")
    processes = [subprocess.Popen([*CLI, "api"], env=full, stdout=log, stderr=subprocess.STDOUT)]
    processes += [subprocess.Popen([*CLI, "worker", "--queues", q], env=full, stdout=log, stderr=subprocess.STDOUT)
                  for q in workers]
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        for _ in range(600):
            try:
                if http.get("/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        time.sleep(5)  # the workers have connected and are waiting
        delays = []
        for _ in range(JOBS):
            job = http.post("/v1/jobs", json=SPEC).json()
            while job["status"] not in ("succeeded", "failed", "cancelled"):
                time.sleep(0.05)
                job = http.get(f"/v1/jobs/{job['id']}").json()
            assert job["status"] == "succeeded", job["error"]
            delays.append((datetime.fromisoformat(job["started_at"]) -
                           datetime.fromisoformat(job["created_at"])).total_seconds() * 1000)
        return delays
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            p.wait(60)


def real_stack_env() -> dict[str, str]:
    name = f"trainserve_dispatch_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return {"TRAINSERVE_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
            "TRAINSERVE_BROKER_URL": "redis://127.0.0.1:6379/0", "TRAINSERVE_QUEUE": f"dispatch-{name[-8:]}"}


def main() -> None:
    rows = []
    for stack, env in (("embedded (SQLite, filesystem broker)", lambda: {}),
                       ("PostgreSQL + Redis", real_stack_env)):
        for label, workers in (("one worker: jobs and exports", ["jobs,exports"]),
                               ("a training worker and an export worker", ["jobs", "exports"])):
            delays = run_stack(env(), workers)
            print(stack, label, [round(d) for d in delays], flush=True)
            rows.append(f"| {stack} | {label} | {statistics.median(delays):.0f} ms | {max(delays):.0f} ms |")
    write_section("dispatch", "Dispatch: submit to started, an idle worker",
                  f"{JOBS} small digits jobs submitted one after another, each waited for; from the jobs' own "
                  "`created_at` and `started_at`.\n\n| stack | workers | median | max |\n|---|---|---|---|\n"
                  + "\n".join(rows))


if __name__ == "__main__":
    main()
