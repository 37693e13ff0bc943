"""Outages, with real processes: a Redis that restarts empty, and a PostgreSQL that stops and starts. Both
servers are private to the test (a redis-server and a PostgreSQL cluster of its own on free ports), so the
machine's own servers never stop. Every accepted job succeeds, and the time to recover is bounded."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.helpers import LOGREG_SPEC, REDIS_URL, free_port, new_postgres_database, unique, wait_until
from tests.stack import Stack

pytestmark = [pytest.mark.slow, pytest.mark.realstack]

RUNNING_SPEC = {"dataset": "digits", "architecture": {"type": "mlp", "hidden_sizes": [400, 200]},
                "optimizer": {"type": "adam"}, "training": {"epochs": 25, "batch_size": 16, "learning_rate": 0.0005}}


@contextlib.contextmanager
def redis_server(port: int) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode == 0
             or None, "redis-server", 30)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def started(job: dict) -> datetime | None:
    return datetime.fromisoformat(job["started_at"]) if job["started_at"] else None


def test_jobs_queued_when_redis_restarts_empty_all_succeed(tmp_path):
    """2 jobs queued, 1 running and 1 submitted while Redis is down: once Redis is back, empty, the API sees
    a new Redis and sends every queued job again at once."""
    port = free_port()
    with contextlib.ExitStack() as resources:
        redis = resources.enter_context(redis_server(port))
        env = {"TRAINSERVE_HOME": str(tmp_path), "TRAINSERVE_DATABASE_URL": resources.enter_context(new_postgres_database()),
               "TRAINSERVE_BROKER_URL": f"redis://127.0.0.1:{port}/0", "TRAINSERVE_QUEUE": unique("trainserve-redis"),
               "TRAINSERVE_RECONCILE_SECONDS": "1"}
        stack = resources.enter_context(Stack.start(env))
        running = stack.http.post("/v1/jobs", json=RUNNING_SPEC).json()["id"]
        stack.wait_for(running, {"running"})
        queued = [stack.http.post("/v1/jobs", json=LOGREG_SPEC).json()["id"] for _ in range(2)]
        redis.kill()
        redis.wait()
        during = stack.http.post("/v1/jobs", json=LOGREG_SPEC)
        assert during.status_code == 202, "the database is the truth: the job is accepted and kept"
        r = stack.http.post("/predict", json={"instances": [[0.0] * 64]})
        assert r.status_code in (200, 404), "predictions do not need Redis"  # 404: no model yet, not 5xx
        assert stack.http.get("/readyz").status_code == 200, "a Redis outage keeps the API in service"
        back = datetime.now(timezone.utc)
        restarted = resources.enter_context(redis_server(port))  # the same address, empty
        jobs = [stack.wait_for(job_id, timeout=180) for job_id in (running, *queued, during.json()["id"])]
        assert [j["status"] for j in jobs] == ["succeeded"] * 4, f"{jobs}\n{stack.tail_logs()}"
        # The one worker was busy with the running job until it finished; from then (or from Redis's return,
        # whichever was later) the next job must start at once: sent again when the API saw the new Redis,
        # not after TRAINSERVE_RESEND_AFTER_SECONDS (60 s). What the jobs' training takes does not count.
        free = max(back, datetime.fromisoformat(jobs[0]["finished_at"]))
        waited = (min(started(j) for j in jobs[1:]) - free).total_seconds()
        assert waited < 30, f"the first queued job started {waited:.0f} s after the worker was free"
        log = "\n".join(p.read_text() for p in stack.logs if p.name.startswith("api"))
        assert "sent 3 queued job(s) again (the broker" in log, stack.tail_logs()
        restarted.kill()  # and down again: the trained models keep answering
        restarted.wait()
        r = stack.http.post("/predict", json={"instances": [[0.0] * 64], "model": "digits-logistic_regression"})
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] in range(10), r.text


@contextlib.contextmanager
def postgres_cluster() -> Iterator[tuple[str, callable, callable]]:
    """A PostgreSQL cluster of the test's own (the Debian server's binaries, run as the postgres user)."""
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    if not binaries or shutil.which("runuser") is None:
        pytest.fail("PostgreSQL's server binaries (Debian's postgresql package) and runuser are needed here")
    bin_dir, folder, port = binaries[-1], Path(tempfile.mkdtemp(prefix="trainserve-pg-")), free_port()
    os.chmod(folder, 0o755)
    shutil.chown(folder, "postgres", "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)

    def start() -> None:
        subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(folder / "log"),
                        "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True)

    def stop() -> None:
        subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-m", "fast", "stop"],
                       check=True, capture_output=True)

    start()
    try:
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "CREATE DATABASE trainserve"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/trainserve?connect_timeout=3", start, stop
    finally:
        subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_the_api_and_the_workers_ride_out_a_postgresql_restart(tmp_path):
    """While PostgreSQL is down the API answers 503 with Retry-After (and stays alive); once it is back, the
    API answers again without a restart, and the job that was training succeeds."""
    with postgres_cluster() as (url, start, stop):
        env = {"TRAINSERVE_HOME": str(tmp_path), "TRAINSERVE_DATABASE_URL": url, "TRAINSERVE_BROKER_URL": REDIS_URL,
               "TRAINSERVE_QUEUE": unique("trainserve-pg"), "TRAINSERVE_RECONCILE_SECONDS": "1",
               "TRAINSERVE_STALE_AFTER_SECONDS": "10"}
        with Stack.start(env) as stack:
            running = stack.http.post("/v1/jobs", json=RUNNING_SPEC).json()["id"]
            stack.wait_for(running, {"running"}, predicate=lambda j: j["progress"]["epoch"] >= 1)
            stop()
            down = wait_until(lambda: (r := stack.http.get("/v1/jobs")).status_code == 503 and r or None, "a 503", 30)
            assert down.headers["retry-after"] == "5" and "database" in down.json()["error"]["message"]
            assert stack.http.post("/v1/jobs", json=LOGREG_SPEC).status_code == 503, "nothing half-accepted"
            assert stack.http.get("/healthz").status_code == 200, "alive: no crash loop"
            assert stack.http.get("/readyz").status_code == 503, "out of the Service while its database is down"
            start()
            up = time.monotonic()
            wait_until(lambda: stack.http.get("/v1/jobs").status_code == 200 or None, "the API to answer again", 30)
            assert time.monotonic() - up < 15
            assert all(p.poll() is None for p in stack.processes), "no process died\n" + stack.tail_logs()
            after = stack.http.post("/v1/jobs", json=LOGREG_SPEC).json()["id"]
            jobs = [stack.wait_for(job_id, timeout=240) for job_id in (running, after)]
            assert [j["status"] for j in jobs] == ["succeeded", "succeeded"], f"{jobs}\n{stack.tail_logs()}"
