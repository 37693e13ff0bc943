"""/healthz, /readyz (serving predictions) and /readyz/jobs (taking jobs) of a real API process whose database,
broker or artifact store cannot be reached."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import listening_socket, wait_until

pytestmark = pytest.mark.slow  # real API processes


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A port that is ours and refuses connections: bound, never listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@contextlib.contextmanager
def api(home, **env: str) -> Iterator[httpx.Client]:
    sock = listening_socket()
    port = sock.getsockname()[1]
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRAINSERVE_")}
    base.update(TRAINSERVE_HOME=str(home), TRAINSERVE_ENV_FILE="", **env)
    with sock:
        process = subprocess.Popen([sys.executable, "-m", "service.cli", "api", "--fd", str(sock.fileno())],
                                   env=base, pass_fds=(sock.fileno(),), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "the API exited"
            with contextlib.suppress(httpx.HTTPError):
                if client.get("/healthz").status_code == 200:
                    break
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.1)
        yield client
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        client.close()


def checks(response: httpx.Response) -> dict[str, str]:
    return {d["field"]: d["message"] for d in response.json()["error"]["details"]}


def test_a_broker_outage_keeps_inference_ready_and_stops_job_readiness(tmp_path):
    """Readiness probes take pods out of a Service: a Redis outage must not take /predict with it."""
    with refused_port() as port, api(tmp_path, TRAINSERVE_BROKER_URL=f"redis://127.0.0.1:{port}/0") as client:
        r = client.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ready", "checks": {"database": "ok", "artifacts": "ok"},
                            "jobs": {"broker": "unreachable"}}
        r = client.get("/readyz/jobs")
        assert r.status_code == 503 and "not ready: broker unreachable" in r.json()["error"]["message"]
        assert checks(r) == {"database": "ok", "broker": "unreachable"}


@pytest.mark.realstack
def test_an_unreachable_database_takes_both_out(tmp_path):
    with refused_port() as port, api(tmp_path, TRAINSERVE_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:"
                                                                       f"{port}/test",
                                     TRAINSERVE_BROKER_URL="redis://127.0.0.1:6379/0") as client:
        assert client.get("/healthz").json() == {"status": "ok"}, "alive, though not ready"
        for path, expected in (("/readyz", {"database": "unreachable", "artifacts": "ok"}),
                               ("/readyz/jobs", {"database": "unreachable", "broker": "ok"})):
            r = client.get(path)
            assert r.status_code == 503 and "database unreachable" in r.json()["error"]["message"]
            assert checks(r) == expected


def test_an_unreachable_artifact_store_takes_inference_out(tmp_path):
    from tests.azurite import connection_string

    with refused_port() as port, api(tmp_path, TRAINSERVE_ARTIFACTS_URL="azure://artifacts",
                                     TRAINSERVE_AZURE_STORAGE_CONNECTION_STRING=connection_string(port)) as client:
        def database_answered() -> httpx.Response | None:
            """The answer once the database check has come back in time: a process's first connection may
            take longer than the check's 3 s on a loaded machine (the artifact store never answers)."""
            r = client.get("/readyz")
            assert r.status_code == 503 and "artifacts unreachable" in r.json()["error"]["message"], r.text
            return r if checks(r)["database"] == "ok" else None

        r = wait_until(database_answered, "the database check", timeout=60)
        assert checks(r) == {"database": "ok", "artifacts": "unreachable"}
