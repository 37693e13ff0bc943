"""`trainserve up`, what `make run` runs: migrations, the API, a training worker and an export worker; a job
trains and its exports are made; Ctrl-C stops all three."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import LOGREG_SPEC, free_port, listening_socket
from tests.stack import Stack

pytestmark = pytest.mark.slow


def processes_of(home: Path) -> list[int]:
    """The processes started with this home in their environment."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if f"TRAINSERVE_HOME={home}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_up_trains_exports_and_stops_everything_on_ctrl_c(tmp_path):
    sock = listening_socket()
    port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINSERVE_")}
    grpc_port = free_port()
    env.update(TRAINSERVE_HOME=str(tmp_path), TRAINSERVE_ENV_FILE="", PYTHONUNBUFFERED="1",
               TRAINSERVE_GRPC_PORT=str(grpc_port))
    log = (tmp_path / "up.log").open("wb")
    with sock:
        up = subprocess.Popen([sys.executable, "-m", "service.cli", "up", "--fd", str(sock.fileno())], env=env,
                              stdout=log, stderr=subprocess.STDOUT, pass_fds=(sock.fileno(),))
    stack = Stack(f"http://127.0.0.1:{port}", httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30),
                  env=env, home=tmp_path, processes=[up], logs=[tmp_path / "up.log"])
    try:
        stack.wait_ready()
        assert len(processes_of(tmp_path)) == 3, "up, a training worker and an export worker"
        import tritonclient.grpc as grpcclient

        assert grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}").is_server_live(), "gRPC beside HTTP"
        job = stack.wait_for(stack.http.post("/v1/jobs", json=LOGREG_SPEC).json()["id"])
        assert job["status"] == "succeeded", f"{job['error']}\n{stack.tail_logs()}"
        model = stack.wait_until(
            lambda: m if len((m := stack.http.get(f"/v1/models/{job['model']['id']}").json())["exports"]) == 2
            else None, what="the exports")
        assert {e["status"] for e in model["exports"].values()} == {"ok"}, model["exports"]
        # Ctrl-C with a job running: it goes back to the queue, with one line per process and no traceback
        long = {**LOGREG_SPEC, "training": {**LOGREG_SPEC["training"], "epochs": 1000, "batch_size": 8}}
        running = stack.wait_for(stack.http.post("/v1/jobs", json=long).json()["id"], {"running"})
    finally:
        up.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            code = up.wait(timeout=90)
        finally:
            for pid in processes_of(tmp_path):
                os.kill(pid, signal.SIGKILL)
        stack.http.close()
    assert code == 0, stack.tail_logs()
    assert processes_of(tmp_path) == [], "a worker outlived `trainserve up`"
    out = (tmp_path / "up.log").read_text()
    stopped = [line for line in out.splitlines() if line.startswith("trainserve: the ")]
    assert stopped[-3:] == ["trainserve: the API stopped",
                            "trainserve: the training worker stopped",
                            "trainserve: the export worker stopped"], stopped
    assert "Traceback" not in out, out[-4000:]
    assert f"job {running['id']}: back in the queue" in out
