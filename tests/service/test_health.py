"""/healthz and /readyz of a real API process whose database or broker cannot be reached."""

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

from tests.helpers import listening_socket

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


def test_readyz_names_an_unreachable_broker(tmp_path):
    with refused_port() as port, api(tmp_path, TRAINSERVE_BROKER_URL=f"redis://127.0.0.1:{port}/0") as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and "not ready: broker unreachable" in r.json()["error"]["message"]
        assert checks(r) == {"database": "ok", "broker": "unreachable"}


@pytest.mark.realstack
def test_readyz_names_an_unreachable_database(tmp_path):
    with refused_port() as port, api(tmp_path, TRAINSERVE_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:"
                                                                       f"{port}/test",
                                     TRAINSERVE_BROKER_URL="redis://127.0.0.1:6379/0") as client:
        assert client.get("/healthz").json() == {"status": "ok"}, "alive, though not ready"
        r = client.get("/readyz")
        assert r.status_code == 503 and "database unreachable" in r.json()["error"]["message"]
        assert checks(r) == {"database": "unreachable", "broker": "ok"}
